package kernelsim

import (
	"math/rand"
	"testing"
)

// refIDR is the obvious model: a set of used ids, lowest free id from 1.
type refIDR map[uint32]bool

func (m refIDR) lowestFree() uint32 {
	for id := uint32(1); ; id++ {
		if !m[id] {
			return id
		}
	}
}

// TestIDRMatchesModel: any mix of alloc, allocAt and remove gives the ids
// the simple model gives, and the free ranges stay sorted, disjoint and
// apart.
func TestIDRMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		r, m := newIDR[int](), refIDR{}
		for op := 0; op < 300; op++ {
			switch k := rng.Intn(3); {
			case k == 0:
				id, err := r.alloc(op)
				if want := m.lowestFree(); err != nil || id != want {
					t.Fatalf("round %d op %d: alloc gave %d, %v; want %d", round, op, id, err, want)
				}
				m[id] = true
			case k == 1:
				id := uint32(1 + rng.Intn(120))
				err := r.allocAt(id, op)
				if (err == nil) == m[id] {
					t.Fatalf("round %d op %d: allocAt(%d) = %v with id used %v", round, op, id, err, m[id])
				}
				m[id] = true
			default:
				id := uint32(1 + rng.Intn(120))
				if _, ok := r.remove(id); ok != m[id] {
					t.Fatalf("round %d op %d: remove(%d) = %v, used %v", round, op, id, ok, m[id])
				}
				delete(m, id)
			}
			if r.len() != len(m) {
				t.Fatalf("round %d op %d: %d ids, want %d", round, op, r.len(), len(m))
			}
			for i, f := range r.free {
				if f.lo > f.hi || f.hi >= r.high || (i > 0 && r.free[i-1].hi+1 >= f.lo) {
					t.Fatalf("round %d op %d: bad free ranges %v (high %d)", round, op, r.free, r.high)
				}
				for id := f.lo; id <= f.hi; id++ {
					if m[id] {
						t.Fatalf("round %d op %d: used id %d in free range %v", round, op, id, f)
					}
				}
			}
		}
	}
}

// TestIDRHugeID: taking the largest id costs no memory for the ids below
// it (an image may carry any handle), and ids beyond INT_MAX are refused.
func TestIDRHugeID(t *testing.T) {
	r := newIDR[int]()
	if err := r.allocAt(maxID, 1); err != nil {
		t.Fatal(err)
	}
	if len(r.free) != 1 || r.free[0] != (idRange{1, maxID - 1}) {
		t.Fatalf("free ranges %v", r.free)
	}
	if id, err := r.alloc(2); err != nil || id != 1 {
		t.Fatalf("alloc after a huge id: %d, %v", id, err)
	}
	for _, id := range []uint32{0, maxID + 1, 1<<32 - 1} {
		if err := r.allocAt(id, 3); err == nil {
			t.Errorf("allocAt(%d) succeeded", id)
		}
	}
	r.remove(maxID)
	r.remove(1)
	if r.high != 0 || len(r.free) != 0 {
		t.Errorf("empty idr: high %d, free %v", r.high, r.free)
	}
}

func BenchmarkIDRAllocAtSparse(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r := newIDR[int]()
		for id := uint32(1); id < 1<<30; id += 1 << 20 {
			r.allocAt(id, 0)
		}
	}
}
