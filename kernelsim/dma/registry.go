package dma

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// FenceInfo is a snapshot of one fence for debug views.
type FenceInfo struct {
	ID         uint64        `json:"id"`
	Context    uint64        `json:"context"`
	Seqno      uint64        `json:"seqno"`
	Timeline   string        `json:"timeline"`
	Signaled   bool          `json:"signaled"`
	Error      string        `json:"error"` // "" when none
	Errno      int32         `json:"errno"`
	SignaledAt time.Duration `json:"signaled_at_ns"`
	Refcount   int64         `json:"refcount"`
}

type fenceRegistry struct {
	mu     sync.Mutex
	fences map[uint64]*Fence
}

var (
	registry  = &fenceRegistry{fences: make(map[uint64]*Fence)}
	refErrors atomic.Int64
	contexts  atomic.Uint64
)

func (r *fenceRegistry) add(f *Fence) {
	r.mu.Lock()
	r.fences[f.id] = f
	r.mu.Unlock()
}

func (r *fenceRegistry) remove(f *Fence) {
	r.mu.Lock()
	delete(r.fences, f.id)
	r.mu.Unlock()
}

// LiveFences counts fences whose reference count is above zero.
func LiveFences() int {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return len(registry.fences)
}

// Fences snapshots every live fence, ordered by ID.
func Fences() []FenceInfo {
	registry.mu.Lock()
	live := make([]*Fence, 0, len(registry.fences))
	for _, f := range registry.fences {
		live = append(live, f)
	}
	registry.mu.Unlock()
	sort.Slice(live, func(i, j int) bool { return live[i].id < live[j].id })
	out := make([]FenceInfo, len(live))
	for i, f := range live {
		out[i] = f.Info()
	}
	return out
}

// Info snapshots f.
func (f *Fence) Info() FenceInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi := FenceInfo{
		ID:         f.id,
		Context:    f.context,
		Seqno:      f.seqno,
		Timeline:   f.timeline,
		Signaled:   f.signaled,
		SignaledAt: f.signaledAt,
		Refcount:   f.refs.Load(),
	}
	if f.err != nil {
		fi.Error = f.err.Error()
		fi.Errno = Errno(f.err)
	}
	return fi
}

// RefErrors counts reference-count misuse (Put below zero, Get after the
// last Put). It should stay zero.
func RefErrors() int64 { return refErrors.Load() }

// NewContext allocates n consecutive fence contexts and returns the first,
// like dma_fence_context_alloc. Context 0 is never returned.
func NewContext(n int) uint64 {
	if n < 1 {
		n = 1
	}
	return contexts.Add(uint64(n)) - uint64(n) + 1
}
