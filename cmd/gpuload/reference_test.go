package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"testing"

	"drmcr/kernelsim/gpu"
)

// refExec is an independent implementation of package gpu's command ABI,
// written from its documentation (kernelsim/gpu/doc.go and compute.go),
// so that a bug shared by the simulated GPU and -expect (both run package
// gpu's engine) cannot hide.
type refExec struct{ bufs map[bufID][]byte }

func newRefExec() *refExec { return &refExec{bufs: map[bufID][]byte{}} }

func (e *refExec) alloc(id bufID, size uint64) { e.bufs[id] = make([]byte, size) }

func (e *refExec) write(id bufID, off uint64, data []byte) error {
	copy(e.bufs[id][off:off+uint64(len(data))], data)
	return nil
}

func (e *refExec) bytes(id bufID) []byte { return append([]byte(nil), e.bufs[id]...) }

func (e *refExec) run(j *job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("job %s: %v", j.name, r)
		}
	}()
	buf := func(i int) []byte { return e.bufs[j.bufs[i].id] }
	for _, c := range j.cmds {
		switch c.Op {
		case gpu.OpFill:
			d := buf(c.Dst)[c.DstOff : c.DstOff+c.Len]
			for k := range d {
				d[k] = byte(uint32(c.Value) >> (8 * (k % 4)))
			}
		case gpu.OpRandFill:
			d := buf(c.Dst)[c.DstOff : c.DstOff+c.Len]
			s := c.Value
			if s == 0 {
				s = 0x9E3779B97F4A7C15
			}
			var w uint64
			for k := range d {
				if k%8 == 0 {
					s ^= s >> 12
					s ^= s << 25
					s ^= s >> 27
					w = s * 0x2545F4914F6CDD1D
				}
				d[k] = byte(w >> (8 * (k % 8)))
			}
		case gpu.OpCopy:
			tmp := append([]byte(nil), buf(c.Src)[c.SrcOff:c.SrcOff+c.Len]...)
			copy(buf(c.Dst)[c.DstOff:c.DstOff+c.Len], tmp)
		case gpu.OpAddCounter:
			if c.DstOff%8 != 0 {
				return fmt.Errorf("job %s: addcounter offset %d", j.name, c.DstOff)
			}
			d := buf(c.Dst)[c.DstOff : c.DstOff+8]
			binary.LittleEndian.PutUint64(d, binary.LittleEndian.Uint64(d)+c.Value)
		case gpu.OpChecksum:
			h := uint64(0xcbf29ce484222325)
			for _, b := range buf(c.Src)[c.SrcOff : c.SrcOff+c.Len] {
				h ^= uint64(b)
				h *= 0x100000001b3
			}
			if c.DstOff%8 != 0 {
				return fmt.Errorf("job %s: checksum offset %d", j.name, c.DstOff)
			}
			binary.LittleEndian.PutUint64(buf(c.Dst)[c.DstOff:c.DstOff+8], h)
		case gpu.OpCompute:
			src := append([]byte(nil), buf(c.Src)[c.SrcOff:c.SrcOff+c.Len]...)
			binary.LittleEndian.PutUint64(buf(c.Dst)[c.DstOff:c.DstOff+8], refCompute(src, c.Iterations))
		default:
			return fmt.Errorf("job %s: op %v not modelled", j.name, c.Op)
		}
	}
	return nil
}

// refCompute: acc = 0xcbf29ce484222325; acc = Mix(acc, i, w_i) with w_i
// the LE u64 of src[(8i+j) mod len], j = 0..7; Mix: acc ^= w +
// i*0x9E3779B97F4A7C15; acc *= 0x100000001b3; acc = rotl64(acc, 29).
func refCompute(src []byte, iters uint64) uint64 {
	acc := uint64(0xcbf29ce484222325)
	l := uint64(len(src))
	for i := uint64(0); i < iters; i++ {
		var w uint64
		for j := uint64(0); j < 8; j++ {
			w |= uint64(src[(8*i+j)%l]) << (8 * j)
		}
		acc ^= w + i*0x9E3779B97F4A7C15
		acc *= 0x100000001b3
		acc = acc<<29 | acc>>35
	}
	return acc
}

func testParams(sc string, steps int, size uint64, seed uint64) *params {
	return &params{scenario: sc, steps: steps, size: size, seed: seed, iterations: 777,
		bos: 40, procs: 3, boSizes: []uint64{4096, size}, shareEvery: 4}
}

// TestExpectMatchesReference runs every scenario's plan through package
// gpu's engine (what -expect uses) and through refExec.
func TestExpectMatchesReference(t *testing.T) {
	for _, name := range scenarioNames() {
		for _, p := range []*params{
			testParams(name, 1, 16<<10, 1),
			testParams(name, 7, 16<<10, 42),
			testParams(name, 20, 64<<10, 0),
		} {
			sc := scenarios[name]
			a, err := sc.expect(p, newCPUExec())
			if err != nil {
				t.Fatalf("%s %+v: gpu engine: %v", name, *p, err)
			}
			b, err := sc.expect(p, newRefExec())
			if err != nil {
				t.Fatalf("%s %+v: reference: %v", name, *p, err)
			}
			if sha256.Sum256(a) != sha256.Sum256(b) {
				t.Errorf("%s steps=%d size=%d seed=%d: gpu engine and reference disagree", name, p.steps, p.size, p.seed)
			}
		}
	}
}

// TestExpectLongrunFromScratch recomputes the longrun scenario without the
// plan code at all and compares with the binary's -expect line.
func TestExpectLongrunFromScratch(t *testing.T) {
	const steps, size, seed, iters = 3, 16 << 10, 5, 1234
	src := make([]byte, size)
	s := stepSeed(seed, 0, 8)
	for k := 0; k < size; k += 8 {
		s ^= s >> 12
		s ^= s << 25
		s ^= s >> 27
		binary.LittleEndian.PutUint64(src[k:], s*0x2545F4914F6CDD1D)
	}
	out := make([]byte, 4096)
	for i := 0; i < steps; i++ {
		acc := refCompute(src, iters)
		binary.LittleEndian.PutUint64(out[8*i:], acc)
		binary.LittleEndian.PutUint64(src[8*i:], acc)
	}
	sum := sha256.Sum256(append(out, src...))
	want := "result longrun " + hex.EncodeToString(sum[:])
	got := expectLine(t, "longrun", "-steps", "3", "-size", "16K", "-seed", "5", "-iterations", "1234")
	if got != want {
		t.Errorf("-expect: %s\nfrom scratch: %s", got, want)
	}
}

// TestPlansDeclareAccess checks the plans' buffer declarations: a job's
// writes must be declared (implicit sync depends on it) and no job may use
// a buffer outside its list.
func TestPlansDeclareAccess(t *testing.T) {
	for _, name := range scenarioNames() {
		ex := &recordExec{refExec: newRefExec(), t: t, name: name}
		if _, err := scenarios[name].expect(testParams(name, 9, 16<<10, 3), ex); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ex.jobs == 0 {
			t.Errorf("%s: no jobs", name)
		}
	}
}

type recordExec struct {
	*refExec
	t    *testing.T
	name string
	jobs int
}

func (e *recordExec) run(j *job) error {
	e.jobs++
	written := map[int]bool{}
	for _, c := range j.cmds {
		if c.Dst >= 0 {
			written[c.Dst] = true
		}
	}
	for i, b := range j.bufs {
		if b.write != written[i] {
			e.t.Errorf("%s: job %s: buffer %d declared write=%v, written=%v", e.name, j.name, b.id, b.write, written[i])
		}
	}
	sizes := make([]uint64, len(j.bufs))
	for i, b := range j.bufs {
		sizes[i] = uint64(len(e.bufs[b.id]))
	}
	if err := gpu.Validate(j.cmds, len(j.bufs), sizes); err != nil {
		e.t.Errorf("%s: job %s: %v", e.name, j.name, err)
	}
	return e.refExec.run(j)
}
