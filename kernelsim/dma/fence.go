package dma

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"drmcr/kernelsim/ktime"
)

// Fence is a dma_fence: a one-shot completion event on a (context, seqno)
// timeline, optionally carrying an error.
type Fence struct {
	id       uint64
	context  uint64
	seqno    uint64
	timeline string
	clk      ktime.Clock

	refs atomic.Int64

	mu         sync.Mutex
	signaled   bool
	err        error
	signaledAt time.Duration
	done       chan struct{}
	cbs        []*Callback
	onRelease  func(*Fence) // backend hook, like dma_fence_ops.release
}

// Callback is a registered fence callback; pass it to RemoveCallback to
// unregister it before the fence signals.
type Callback struct {
	fn func(*Fence)
}

var fenceIDs atomic.Uint64

// NewFence returns an unsignalled fence holding one reference, timestamped
// on the real clock.
func NewFence(context, seqno uint64, timeline string) *Fence {
	return NewFenceOn(nil, context, seqno, timeline)
}

// NewFenceOn is NewFence timestamped on clk (nil means ktime.Real()).
func NewFenceOn(clk ktime.Clock, context, seqno uint64, timeline string) *Fence {
	if clk == nil {
		clk = ktime.Real()
	}
	f := &Fence{
		id:       fenceIDs.Add(1),
		context:  context,
		seqno:    seqno,
		timeline: timeline,
		clk:      clk,
		done:     make(chan struct{}),
	}
	f.refs.Store(1)
	registry.add(f)
	return f
}

// NewStub returns a new, already signalled fence on its own context, like
// dma_fence_allocate_private_stub.
func NewStub(clk ktime.Clock) *Fence {
	f := NewFenceOn(clk, NewContext(1), 0, "stub")
	f.Signal(nil)
	return f
}

// ID is a process-wide unique fence number (debug views, error messages).
func (f *Fence) ID() uint64 { return f.id }

// Context is the fence's timeline context (see NewContext).
func (f *Fence) Context() uint64 { return f.context }

// Seqno is the fence's position on its context.
func (f *Fence) Seqno() uint64 { return f.seqno }

// Timeline is the driver/timeline name the fence was created with.
func (f *Fence) Timeline() string { return f.timeline }

func (f *Fence) String() string {
	return fmt.Sprintf("fence %d (context %d seqno %d %q)", f.id, f.context, f.seqno, f.timeline)
}

// Signal completes the fence with err (nil for success). Only the first
// call has an effect; it returns false if the fence was already signalled.
// Callbacks run on the caller's goroutine after the fence lock is dropped.
func (f *Fence) Signal(err error) bool {
	f.mu.Lock()
	if f.signaled {
		f.mu.Unlock()
		return false
	}
	f.signaled = true
	f.err = err
	f.signaledAt = f.clk.Now()
	cbs := f.cbs
	f.cbs = nil
	close(f.done)
	f.mu.Unlock()
	for _, cb := range cbs {
		cb.fn(f)
	}
	return true
}

// Signaled reports whether the fence has signalled.
func (f *Fence) Signaled() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// Err is the fence's error: nil until signalled, then nil or the error it
// was signalled with.
func (f *Fence) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// SignaledAt is the clock time at which the fence signalled (0 before).
func (f *Fence) SignaledAt() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.signaledAt
}

// Done is closed when the fence signals.
func (f *Fence) Done() <-chan struct{} { return f.done }

// Wait blocks until the fence signals or ctx is done. It returns ctx's
// error in the latter case; the fence's own error is reported by Err.
func (f *Fence) Wait(ctx context.Context) error {
	select {
	case <-f.done:
		return nil
	default:
	}
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AddCallback arranges for fn to run once the fence signals. It returns
// false, without calling fn, if the fence has already signalled.
func (f *Fence) AddCallback(fn func(*Fence)) bool {
	_, ok := f.AddRemovableCallback(fn)
	return ok
}

// AddRemovableCallback is AddCallback returning a handle for
// RemoveCallback (dma_fence_add_callback with its dma_fence_cb).
func (f *Fence) AddRemovableCallback(fn func(*Fence)) (*Callback, bool) {
	if fn == nil {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signaled {
		return nil, false
	}
	cb := &Callback{fn: fn}
	f.cbs = append(f.cbs, cb)
	return cb, true
}

// RemoveCallback unregisters cb; it returns false if cb already ran (or is
// running) or was never registered on f.
func (f *Fence) RemoveCallback(cb *Callback) bool {
	if cb == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range f.cbs {
		if c == cb {
			f.cbs = append(f.cbs[:i], f.cbs[i+1:]...)
			return true
		}
	}
	return false
}

// IsLater reports whether f comes after g on the same context.
func (f *Fence) IsLater(g *Fence) bool {
	return f.context == g.context && f.seqno > g.seqno
}

// Get takes a reference and returns f (nil-safe).
func (f *Fence) Get() *Fence {
	if f == nil {
		return nil
	}
	if f.refs.Add(1) <= 1 {
		// Resurrecting a released fence: a use-after-free in the kernel.
		refErrors.Add(1)
		f.refs.Add(-1)
	}
	return f
}

// tryGet takes a reference unless the fence is already released
// (dma_fence_get_rcu).
func (f *Fence) tryGet() bool {
	for {
		n := f.refs.Load()
		if n <= 0 {
			return false
		}
		if f.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Put drops a reference (nil-safe). Dropping more references than were
// taken is counted by RefErrors instead of crashing.
func (f *Fence) Put() {
	if f == nil {
		return
	}
	for {
		n := f.refs.Load()
		if n <= 0 {
			refErrors.Add(1)
			return
		}
		if f.refs.CompareAndSwap(n, n-1) {
			if n == 1 {
				f.release()
			}
			return
		}
	}
}

// Refcount is the current reference count (debug only).
func (f *Fence) Refcount() int64 { return f.refs.Load() }

func (f *Fence) release() {
	registry.remove(f)
	f.mu.Lock()
	hook := f.onRelease
	f.onRelease = nil
	f.mu.Unlock()
	if hook != nil {
		hook(f)
	}
}
