package dma

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// ErrSyncobjReleased is returned by waits on a Syncobj released meanwhile.
var ErrSyncobjReleased = errors.New("syncobj released")

var liveSyncobjs atomic.Int64

// LiveSyncobjs counts syncobjs not yet released (leak checks).
func LiveSyncobjs() int { return int(liveSyncobjs.Load()) }

// Syncobj is a binary drm_syncobj: a container for at most one fence that
// can be replaced, reset and waited on before any fence is attached
// (WAIT_FOR_SUBMIT).
type Syncobj struct {
	mu        sync.Mutex
	fence     *Fence
	submitted chan struct{} // closed while a fence is attached or after release
	released  bool
	waiters   []*submitWaiter // OnSubmit's, until a fence is attached
}

// submitWaiter is an OnSubmit registration.
type submitWaiter struct{ fn func(*Fence) }

// NewSyncobj returns an empty syncobj.
func NewSyncobj() *Syncobj {
	liveSyncobjs.Add(1)
	return &Syncobj{submitted: make(chan struct{})}
}

// Replace attaches f (taking a reference) in place of the current fence;
// nil clears it. It is a no-op after Release.
func (s *Syncobj) Replace(f *Fence) {
	f.Get()
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		f.Put()
		return
	}
	old := s.fence
	s.fence = f
	switch {
	case f != nil && old == nil:
		close(s.submitted) // wake WaitForSubmit
	case f == nil && old != nil:
		s.submitted = make(chan struct{})
	}
	var ws []*submitWaiter
	if f != nil {
		ws, s.waiters = s.waiters, nil
	}
	s.mu.Unlock()
	old.Put()
	for _, w := range ws {
		w.fn(f.Get())
	}
}

// OnSubmit arranges for fn to get the first fence attached to the syncobj
// from now on (the one attached now, if any), with a reference for fn to
// drop, as drm_syncobj_fence_add_wait captures it at attach time: a fence
// replaced or reset before the waiter looks is still the one it gets.
// cancel unregisters fn; fn never runs after a Release.
func (s *Syncobj) OnSubmit(fn func(*Fence)) (cancel func()) {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return func() {}
	}
	if s.fence != nil {
		f := s.fence.Get()
		s.mu.Unlock()
		fn(f)
		return func() {}
	}
	w := &submitWaiter{fn: fn}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if i := slices.Index(s.waiters, w); i >= 0 {
			s.waiters = slices.Delete(s.waiters, i, i+1)
		}
		s.mu.Unlock()
	}
}

// Fence returns the attached fence with a reference, or nil.
func (s *Syncobj) Fence() *Fence {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fence.Get()
}

// Signal attaches an already signalled stub fence (DRM_IOCTL_SYNCOBJ_SIGNAL).
func (s *Syncobj) Signal() {
	stub := NewStub(nil)
	s.Replace(stub)
	stub.Put()
}

// Reset detaches the fence (DRM_IOCTL_SYNCOBJ_RESET).
func (s *Syncobj) Reset() { s.Replace(nil) }

// WaitForSubmit blocks until a fence is attached and returns it with a
// reference. It fails with ctx's error, or ErrSyncobjReleased.
func (s *Syncobj) WaitForSubmit(ctx context.Context) (*Fence, error) {
	for {
		s.mu.Lock()
		if s.released {
			s.mu.Unlock()
			return nil, ErrSyncobjReleased
		}
		if s.fence != nil {
			f := s.fence.Get()
			s.mu.Unlock()
			return f, nil
		}
		ch := s.submitted
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("syncobj wait for submit: %w", ctx.Err())
		}
	}
}

// Wait waits for a fence to be attached and then for it to signal; it
// returns the fence's error if it signalled with one.
func (s *Syncobj) Wait(ctx context.Context) error {
	f, err := s.WaitForSubmit(ctx)
	if err != nil {
		return err
	}
	defer f.Put()
	if err := f.Wait(ctx); err != nil {
		return fmt.Errorf("syncobj wait on %v: %w", f, err)
	}
	return f.Err()
}

// Release drops the fence and retires the syncobj; waiters fail with
// ErrSyncobjReleased. Calling it twice is harmless.
func (s *Syncobj) Release() {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return
	}
	s.released = true
	s.waiters = nil
	old := s.fence
	s.fence = nil
	if old == nil {
		close(s.submitted)
	}
	s.mu.Unlock()
	old.Put()
	liveSyncobjs.Add(-1)
}
