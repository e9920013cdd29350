package ktime

import (
	"container/heap"
	"sync"
	"time"
)

// Manual is a clock that only advances when Advance is called. Timers fire
// in deadline order (ties in creation order) and Now reads each timer's
// deadline while it fires, so a sequence of timers due within one Advance
// observes the same times it would with many small steps.
type Manual struct {
	mu      sync.Mutex
	now     time.Duration
	seq     uint64
	timers  timerHeap
	changed chan struct{} // closed and replaced whenever a timer is added
}

// NewManual returns a manual clock at time zero.
func NewManual() *Manual {
	return &Manual{changed: make(chan struct{})}
}

type manualTimer struct {
	when  time.Duration
	seq   uint64
	ch    chan struct{}
	index int // position in the heap, -1 once removed
}

// Now returns the clock's current time.
func (m *Manual) Now() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// After registers a timer that fires once the clock has advanced by d. A
// non-positive d fires immediately.
func (m *Manual) After(d time.Duration) (<-chan struct{}, func() bool) {
	ch := make(chan struct{})
	if d <= 0 {
		close(ch)
		return ch, func() bool { return false }
	}
	m.mu.Lock()
	t := &manualTimer{when: m.now + d, seq: m.seq, ch: ch}
	m.seq++
	heap.Push(&m.timers, t)
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	stop := func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		if t.index < 0 {
			return false
		}
		heap.Remove(&m.timers, t.index)
		return true
	}
	return ch, stop
}

// Advance moves the clock forward by d, firing every timer that falls due,
// in order. Timers created by the woken goroutines after Advance returns
// are relative to the new time.
func (m *Manual) Advance(d time.Duration) {
	if d < 0 {
		d = 0
	}
	m.mu.Lock()
	target := m.now + d
	for len(m.timers) > 0 && m.timers[0].when <= target {
		t := heap.Pop(&m.timers).(*manualTimer)
		m.now = t.when
		close(t.ch)
	}
	m.now = target
	m.mu.Unlock()
}

// Pending reports how many timers are waiting to fire.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.timers)
}

// WaitPending blocks (in real time) until at least n timers are pending or
// timeout passes; it reports whether the count was reached. Tests use it to
// know that the goroutines they drive are parked on the clock.
func (m *Manual) WaitPending(n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		ok := len(m.timers) >= n
		ch := m.changed
		m.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return m.Pending() >= n
		}
	}
}

type timerHeap []*manualTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].when != h[j].when {
		return h[i].when < h[j].when
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*manualTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
