package kernelsim

import (
	"fmt"
	"slices"
	"sort"

	"drmcr/kernelsim/uapi"
)

// maxID is the largest id an idr hands out or takes: the kernel's
// idr_alloc(idr, ptr, 1, 0, ...) allocates in [1, INT_MAX], and GEM
// handles, syncobj handles and context ids are positive ints to user space.
const maxID = uapi.MaxID

// idr hands out the lowest free id starting at 1, like the kernel's
// idr_alloc(idr, ptr, 1, 0, ...) for GEM handles, and can also take a given
// id, as restoring a checkpoint needs. Its memory grows with the ids in use
// and the gaps between them, not with the size of the ids: taking id
// 2^31-1 in an empty idr costs as little as taking id 1.
type idr[T any] struct {
	m    map[uint32]T
	free []idRange // free ids below high, sorted, disjoint, not adjacent
	high uint32    // every id above high is free
}

// idRange is the free ids lo..hi, inclusive.
type idRange struct{ lo, hi uint32 }

func newIDR[T any]() *idr[T] { return &idr[T]{m: make(map[uint32]T)} }

// alloc stores v under the lowest free id.
func (r *idr[T]) alloc(v T) (uint32, error) {
	if len(r.free) > 0 {
		f := &r.free[0]
		id := f.lo
		if f.lo == f.hi {
			r.free = r.free[1:]
		} else {
			f.lo++
		}
		r.m[id] = v
		return id, nil
	}
	if r.high >= maxID {
		return 0, fmt.Errorf("id space exhausted")
	}
	r.high++
	r.m[r.high] = v
	return r.high, nil
}

// allocAt stores v under id, which must be free and in [1, maxID].
func (r *idr[T]) allocAt(id uint32, v T) error {
	if id == 0 || id > maxID {
		return fmt.Errorf("id %d is out of range [1, %d]", id, maxID)
	}
	if _, used := r.m[id]; used {
		return fmt.Errorf("id %d is in use", id)
	}
	if id > r.high {
		if id > r.high+1 {
			r.free = append(r.free, idRange{r.high + 1, id - 1})
		}
		r.high = id
		r.m[id] = v
		return nil
	}
	i := r.rangeOf(id)
	if i < 0 {
		return fmt.Errorf("idr: free id %d not found in the free ranges", id) // cannot happen
	}
	f := r.free[i]
	switch {
	case f.lo == f.hi:
		r.free = slices.Delete(r.free, i, i+1)
	case id == f.lo:
		r.free[i].lo++
	case id == f.hi:
		r.free[i].hi--
	default:
		r.free[i].hi = id - 1
		r.free = slices.Insert(r.free, i+1, idRange{id + 1, f.hi})
	}
	r.m[id] = v
	return nil
}

// rangeOf returns the index of the free range holding id, or -1.
func (r *idr[T]) rangeOf(id uint32) int {
	i := sort.Search(len(r.free), func(i int) bool { return r.free[i].hi >= id })
	if i < len(r.free) && r.free[i].lo <= id {
		return i
	}
	return -1
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
	if id == r.high {
		// The top shrinks, swallowing a free range that now reaches it.
		r.high--
		if n := len(r.free); n > 0 && r.free[n-1].hi == r.high {
			r.high = r.free[n-1].lo - 1
			r.free = r.free[:n-1]
		}
		return v, true
	}
	i := sort.Search(len(r.free), func(i int) bool { return r.free[i].lo > id })
	joinPrev := i > 0 && r.free[i-1].hi+1 == id
	joinNext := i < len(r.free) && r.free[i].lo == id+1
	switch {
	case joinPrev && joinNext:
		r.free[i-1].hi = r.free[i].hi
		r.free = slices.Delete(r.free, i, i+1)
	case joinPrev:
		r.free[i-1].hi = id
	case joinNext:
		r.free[i].lo = id
	default:
		r.free = slices.Insert(r.free, i, idRange{id, id})
	}
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
