package kernelsim

import (
	"container/heap"
	"fmt"
	"math"
	"slices"
)

// idr hands out the lowest free id starting at 1, like the kernel's
// idr_alloc(idr, ptr, 1, 0, ...) for GEM handles, and can also take a given
// id, as restoring a checkpoint needs.
type idr[T any] struct {
	m    map[uint32]T
	free freeIDs // ids below high that are free
	high uint32  // every id above high is free
}

func newIDR[T any]() *idr[T] { return &idr[T]{m: make(map[uint32]T)} }

// alloc stores v under the lowest free id.
func (r *idr[T]) alloc(v T) (uint32, error) {
	if r.free.Len() > 0 {
		id := heap.Pop(&r.free).(uint32)
		r.m[id] = v
		return id, nil
	}
	if r.high == math.MaxUint32 {
		return 0, fmt.Errorf("id space exhausted")
	}
	r.high++
	r.m[r.high] = v
	return r.high, nil
}

// allocAt stores v under id, which must be free.
func (r *idr[T]) allocAt(id uint32, v T) error {
	if id == 0 {
		return fmt.Errorf("id 0 is reserved")
	}
	if _, used := r.m[id]; used {
		return fmt.Errorf("id %d is in use", id)
	}
	if id > r.high {
		for i := r.high + 1; i < id; i++ {
			heap.Push(&r.free, i)
		}
		r.high = id
	} else {
		for i, f := range r.free {
			if f == id {
				heap.Remove(&r.free, i)
				break
			}
		}
	}
	r.m[id] = v
	return nil
}

func (r *idr[T]) get(id uint32) (T, bool) {
	v, ok := r.m[id]
	return v, ok
}

// remove frees id; it reports whether id was in use.
func (r *idr[T]) remove(id uint32) (T, bool) {
	v, ok := r.m[id]
	if !ok {
		return v, false
	}
	delete(r.m, id)
	heap.Push(&r.free, id)
	return v, true
}

func (r *idr[T]) len() int { return len(r.m) }

// ids returns the ids in use, ascending.
func (r *idr[T]) ids() []uint32 {
	out := make([]uint32, 0, len(r.m))
	for id := range r.m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

type freeIDs []uint32

func (h freeIDs) Len() int           { return len(h) }
func (h freeIDs) Less(i, j int) bool { return h[i] < h[j] }
func (h freeIDs) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *freeIDs) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *freeIDs) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
