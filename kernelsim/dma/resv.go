package dma

import (
	"context"
	"fmt"
	"sync"
)

// Usage says how a fence in a Resv uses the buffer; lower values are
// stricter, and a query for usage u returns every fence with usage <= u
// (enum dma_resv_usage).
type Usage int

const (
	UsageKernel   Usage = iota // kernel memory management (moves, clears)
	UsageWrite                 // implicit-sync writers
	UsageRead                  // implicit-sync readers
	UsageBookkeep              // tracked, never waited on implicitly
)

func (u Usage) String() string {
	switch u {
	case UsageKernel:
		return "kernel"
	case UsageWrite:
		return "write"
	case UsageRead:
		return "read"
	case UsageBookkeep:
		return "bookkeep"
	}
	return fmt.Sprintf("usage(%d)", int(u))
}

// MarshalText names the usage in debug views.
func (u Usage) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText reads a name MarshalText wrote.
func (u *Usage) UnmarshalText(b []byte) error {
	for v := UsageKernel; v <= UsageBookkeep; v++ {
		if v.String() == string(b) {
			*u = v
			return nil
		}
	}
	return fmt.Errorf("unknown dma_resv usage %q", b)
}

func (u Usage) valid() bool { return u >= UsageKernel && u <= UsageBookkeep }

// UsageRW is the usage a new access must wait for (dma_resv_usage_rw): a
// writer waits for all readers and writers, a reader only for writers.
func UsageRW(write bool) Usage {
	if write {
		return UsageRead
	}
	return UsageWrite
}

// Resv is a dma_resv: the set of fences guarding one buffer.
type Resv struct {
	mu       sync.Mutex
	entries  []resvEntry
	released bool
}

type resvEntry struct {
	f     *Fence
	usage Usage
}

// ResvEntry is one fence of a Resv in a debug snapshot.
type ResvEntry struct {
	Usage Usage     `json:"usage"`
	Fence FenceInfo `json:"fence"`
}

// NewResv returns an empty reservation object.
func NewResv() *Resv { return &Resv{} }

// Add records f with usage u, taking its own reference. As in
// dma_resv_add_fence, f takes the slot of an older-or-same fence of its
// context whose usage is not stricter than u (old usage >= u), or else the
// slot of any already signalled fence; otherwise it is appended. A fence
// from the same context with a stricter usage is kept, so a later reader
// never hides an earlier write.
func (r *Resv) Add(f *Fence, u Usage) error {
	if f == nil {
		return fmt.Errorf("resv add: nil fence: %w", ErrInvalid)
	}
	if !u.valid() {
		return fmt.Errorf("resv add %v: bad usage %d: %w", f, int(u), ErrInvalid)
	}
	r.mu.Lock()
	if r.released {
		r.mu.Unlock()
		return fmt.Errorf("resv add %v: reservation object already released: %w", f, ErrInvalid)
	}
	f.Get()
	var old *Fence
	replaced := false
	for i := range r.entries {
		e := &r.entries[i]
		sameCtx := e.f.context == f.context && e.usage >= u && f.seqno >= e.f.seqno
		if sameCtx || e.f.Signaled() {
			old = e.f
			e.f, e.usage = f, u
			replaced = true
			break
		}
	}
	if !replaced {
		r.entries = append(r.entries, resvEntry{f, u})
	}
	r.mu.Unlock()
	old.Put()
	return nil
}

// Fences returns referenced fences with usage <= u; the caller Puts each.
func (r *Resv) Fences(u Usage) []*Fence {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Fence
	for _, e := range r.entries {
		if e.usage <= u {
			out = append(out, e.f.Get())
		}
	}
	return out
}

// TestSignaled reports whether every fence with usage <= u has signalled.
func (r *Resv) TestSignaled(u Usage) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		if e.usage <= u && !e.f.Signaled() {
			return false
		}
	}
	return true
}

// Wait blocks until every fence with usage <= u present at the call has
// signalled, or ctx is done (its error is returned, wrapped with the fence
// still pending).
func (r *Resv) Wait(ctx context.Context, u Usage) error {
	fences := r.Fences(u)
	defer func() {
		for _, f := range fences {
			f.Put()
		}
	}()
	for _, f := range fences {
		if err := f.Wait(ctx); err != nil {
			return fmt.Errorf("resv wait (%v): %v still pending: %w", u, f, err)
		}
	}
	return nil
}

// Prune drops the signalled fences.
func (r *Resv) Prune() {
	r.mu.Lock()
	var dropped []*Fence
	kept := r.entries[:0]
	for _, e := range r.entries {
		if e.f.Signaled() {
			dropped = append(dropped, e.f)
		} else {
			kept = append(kept, e)
		}
	}
	clear(r.entries[len(kept):])
	r.entries = kept
	r.mu.Unlock()
	for _, f := range dropped {
		f.Put()
	}
}

// Release drops every reference; called when the buffer dies. Later Adds
// fail. Calling it twice is harmless.
func (r *Resv) Release() {
	r.mu.Lock()
	entries := r.entries
	r.entries = nil
	r.released = true
	r.mu.Unlock()
	for _, e := range entries {
		e.f.Put()
	}
}

// Len is the number of fences held.
func (r *Resv) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// Snapshot describes every fence held, for debug views.
func (r *Resv) Snapshot() []ResvEntry {
	r.mu.Lock()
	entries := append([]resvEntry(nil), r.entries...)
	r.mu.Unlock()
	out := make([]ResvEntry, len(entries))
	for i, e := range entries {
		out[i] = ResvEntry{Usage: e.usage, Fence: e.f.Info()}
	}
	return out
}
