package dma

import (
	"sort"
	"sync"
)

// SwSyncTimeline is the sw_sync test timeline: a counter that userspace
// increments, with fences that signal when the counter reaches their point.
// It is how a test or client makes a fence that only signals when it says
// so.
type SwSyncTimeline struct {
	name    string
	context uint64

	mu       sync.Mutex
	value    uint64
	pending  []*Fence // unsignalled points, sorted by seqno
	released bool
}

// NewSwSyncTimeline creates a timeline at value 0 on a new fence context.
func NewSwSyncTimeline(name string) *SwSyncTimeline {
	return &SwSyncTimeline{name: name, context: NewContext(1)}
}

// Name is the timeline's name.
func (t *SwSyncTimeline) Name() string { return t.name }

// Context is the fence context of the timeline's points.
func (t *SwSyncTimeline) Context() uint64 { return t.context }

// CreateFence returns a referenced fence that signals once the timeline
// value reaches point. As in sw_sync, a point already reached gives a
// signalled fence, and an unsignalled point that already has a fence returns
// that same fence with a new reference. After Release the fence is born
// signalled with ErrNoEnt.
func (t *SwSyncTimeline) CreateFence(point uint64) *Fence {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := sort.Search(len(t.pending), func(i int) bool { return t.pending[i].seqno >= point })
	if i < len(t.pending) && t.pending[i].seqno == point && t.pending[i].tryGet() {
		return t.pending[i]
	}
	f := NewFence(t.context, point, "sw_sync:"+t.name)
	switch {
	case t.released:
		f.Signal(ErrNoEnt)
	case point <= t.value:
		f.Signal(nil)
	default:
		if i < len(t.pending) && t.pending[i].seqno == point {
			// Dying fence at this point (its release hook waits for
			// our lock): take its place.
			t.pending = append(t.pending[:i], t.pending[i+1:]...)
		}
		// Like timeline_fence_release: a point whose last reference goes
		// away leaves the timeline.
		f.onRelease = t.forget
		t.pending = append(t.pending, nil)
		copy(t.pending[i+1:], t.pending[i:])
		t.pending[i] = f
	}
	return f
}

func (t *SwSyncTimeline) forget(f *Fence) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, p := range t.pending {
		if p == f {
			t.pending = append(t.pending[:i], t.pending[i+1:]...)
			return
		}
	}
}

// Inc advances the timeline by n and signals, in seqno order, every point
// reached.
func (t *SwSyncTimeline) Inc(n uint64) {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return
	}
	t.value += n
	if t.value < n { // saturate rather than wrap
		t.value = ^uint64(0)
	}
	k := sort.Search(len(t.pending), func(i int) bool { return t.pending[i].seqno > t.value })
	due := append([]*Fence(nil), t.pending[:k]...)
	t.pending = append(t.pending[:0], t.pending[k:]...)
	t.mu.Unlock()
	for _, f := range due {
		f.Signal(nil)
	}
}

// Value is the timeline's current value.
func (t *SwSyncTimeline) Value() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value
}

// Pending is the number of unsignalled points.
func (t *SwSyncTimeline) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// Release closes the timeline, as closing the sw_sync file does: every
// pending point signals with ErrNoEnt (-ENOENT, sw_sync_debugfs_release).
func (t *SwSyncTimeline) Release() {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return
	}
	t.released = true
	due := t.pending
	t.pending = nil
	t.mu.Unlock()
	for _, f := range due {
		f.Signal(ErrNoEnt)
	}
}
