package kernelsim

import (
	"context"
	"sync"
	"syscall"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// SyncobjCreate creates a binary syncobj, optionally already signalled.
func (f *File) SyncobjCreate(signaled bool) (uint32, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return 0, errnof(syscall.EBADF, "file closed")
	}
	s := dma.NewSyncobj()
	if signaled {
		s.Signal()
	}
	h, err := f.syncobjs.alloc(s)
	if err != nil {
		s.Release()
		return 0, errnof(syscall.ENOSPC, "%v", err)
	}
	return h, nil
}

func (f *File) syncobj(h uint32) (*dma.Syncobj, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return nil, errnof(syscall.EBADF, "file closed")
	}
	s, ok := f.syncobjs.get(h)
	if !ok {
		return nil, errnof(syscall.ENOENT, "no syncobj %d", h)
	}
	return s, nil
}

// SyncobjDestroy drops a syncobj handle. An unknown handle is EINVAL, as
// in drm_syncobj_destroy (lookups elsewhere are ENOENT). A wait that uses
// the syncobj goes on with what it found there (it holds its own
// reference on Linux).
func (f *File) SyncobjDestroy(h uint32) error {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := f.syncobjs.remove(h)
	if !ok {
		return errnof(syscall.EINVAL, "no syncobj %d", h)
	}
	s.Release()
	return nil
}

// SyncobjReset removes a syncobj's fence.
func (f *File) SyncobjReset(h uint32) error {
	s, err := f.syncobj(h)
	if err != nil {
		return err
	}
	s.Reset()
	return nil
}

// SyncobjSignal installs a signalled fence.
func (f *File) SyncobjSignal(h uint32) error {
	s, err := f.syncobj(h)
	if err != nil {
		return err
	}
	s.Signal()
	return nil
}

// SyncobjQuery reports the state of a syncobj's fence. The fence stays
// queryable after the job, context and scheduler that made it are gone.
func (f *File) SyncobjQuery(h uint32) (*uapi.SyncobjQueryReply, error) {
	s, err := f.syncobj(h)
	if err != nil {
		return nil, err
	}
	fence := s.Fence()
	if fence == nil {
		return &uapi.SyncobjQueryReply{}, nil
	}
	defer fence.Put()
	r := &uapi.SyncobjQueryReply{HasFence: true, Signaled: fence.Signaled(), FenceId: fence.ID()}
	if r.Signaled {
		r.Error = dma.Errno(fence.Err())
	}
	return r, nil
}

// SyncobjWait waits for all (or any) of the syncobjs' fences, like
// DRM_IOCTL_SYNCOBJ_WAIT. The fences are those the syncobjs hold at the
// call; with waitForSubmit a syncobj without one is waited on until a
// fence is attached (the first one attached counts, even if replaced or
// reset meanwhile); without it, a syncobj without a fence is EINVAL.
//
// The index it returns is Linux's first_signaled: for a wait for any, the
// lowest index whose fence has signalled when the waiter looks (at the
// call, or when woken); for a wait for all, the lowest index already
// signalled at the call, or ^0 if none was.
func (f *File) SyncobjWait(ctx context.Context, handles []uint32, timeout time.Duration, all, waitForSubmit bool) (uint32, error) {
	if len(handles) == 0 {
		return 0, errnof(syscall.EINVAL, "wait on no syncobj")
	}
	objs := make([]*dma.Syncobj, len(handles))
	for i, h := range handles {
		s, err := f.syncobj(h)
		if err != nil {
			return 0, err
		}
		objs[i] = s
	}
	// w.fences[i] is what syncobj i is waited on for: its fence at the
	// call, or the first one attached later.
	w := &syncobjWait{fences: make([]*dma.Fence, len(objs)), wake: make(chan struct{}, 1)}
	defer w.release()
	first, signaled := ^uint32(0), 0
	for i, s := range objs {
		fence := s.Fence()
		if fence == nil && !waitForSubmit {
			return 0, errnof(syscall.EINVAL, "syncobj %d has no fence", handles[i])
		}
		w.fences[i] = fence
		if fence != nil && fence.Signaled() {
			if signaled == 0 {
				first = uint32(i)
			}
			signaled++
		}
	}
	if signaled == len(objs) || (!all && signaled > 0) {
		return first, nil
	}
	if timeout >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err := blockingWait(ctx, func(ctx context.Context) error {
		w.arm(objs)
		for {
			if i, done := w.check(all); done {
				if !all {
					first = uint32(i)
				}
				return nil
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, errnof(syscall.ETIME, "syncobj wait timed out")
		}
		return 0, err
	}
	return first, nil
}

// syncobjWait is the state of one SyncobjWait: the fences waited on, and
// the callbacks that wake the waiter when one signals or arrives.
type syncobjWait struct {
	wake chan struct{}

	mu       sync.Mutex
	fences   []*dma.Fence // each with a reference
	cbs      []fenceCallback
	cancels  []func() // OnSubmit registrations
	released bool
}

type fenceCallback struct {
	fence *dma.Fence
	cb    *dma.Callback
}

func (w *syncobjWait) notify(*dma.Fence) {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// arm registers the callbacks: on each fence, and on each syncobj without
// one, for the first fence attached.
func (w *syncobjWait) arm(objs []*dma.Syncobj) {
	for i, s := range objs {
		w.mu.Lock()
		fence := w.fences[i]
		w.mu.Unlock()
		if fence != nil {
			w.watch(fence)
			continue
		}
		cancel := s.OnSubmit(func(got *dma.Fence) {
			w.mu.Lock()
			if w.fences[i] != nil || w.released {
				w.mu.Unlock()
				got.Put() // released, or somehow attached twice
				return
			}
			w.fences[i] = got
			w.mu.Unlock()
			w.watch(got)
		})
		w.mu.Lock()
		w.cancels = append(w.cancels, cancel)
		w.mu.Unlock()
	}
}

// watch wakes the waiter when fence signals.
func (w *syncobjWait) watch(fence *dma.Fence) {
	cb, ok := fence.AddRemovableCallback(w.notify)
	if !ok {
		w.notify(fence) // signalled already
		return
	}
	w.mu.Lock()
	if w.released {
		w.mu.Unlock()
		fence.RemoveCallback(cb)
		return
	}
	w.cbs = append(w.cbs, fenceCallback{fence, cb})
	w.mu.Unlock()
}

// check reports whether the wait is over: for any, the lowest index
// signalled; for all, whether every fence has.
func (w *syncobjWait) check(all bool) (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for i, fence := range w.fences {
		if fence == nil || !fence.Signaled() {
			continue
		}
		if !all {
			return i, true
		}
		n++
	}
	return 0, n == len(w.fences)
}

// release drops the callbacks and the fences' references.
func (w *syncobjWait) release() {
	w.mu.Lock()
	w.released = true
	cancels, cbs := w.cancels, w.cbs
	w.cancels, w.cbs = nil, nil
	w.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
	for _, c := range cbs {
		c.fence.RemoveCallback(c.cb)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, fence := range w.fences {
		fence.Put()
		w.fences[i] = nil
	}
}

// SwSyncCreate creates a sw_sync timeline, a fence source driven by the
// client (Linux's sw_sync test device).
func (f *File) SwSyncCreate() (uint32, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return 0, errnof(syscall.EBADF, "file closed")
	}
	t := dma.NewSwSyncTimeline("sw_sync")
	id, err := f.swsync.alloc(t)
	if err != nil {
		t.Release()
		return 0, errnof(syscall.ENOSPC, "%v", err)
	}
	return id, nil
}

// SwSyncFence puts a fence for point on the timeline into a syncobj.
func (f *File) SwSyncFence(timeline uint32, point uint64, syncobj uint32) error {
	k := f.k
	k.mu.Lock()
	t, ok := f.swsync.get(timeline)
	s, sok := f.syncobjs.get(syncobj)
	k.mu.Unlock()
	if !ok {
		return errnof(syscall.ENOENT, "no sw_sync timeline %d", timeline)
	}
	if !sok {
		return errnof(syscall.ENOENT, "no syncobj %d", syncobj)
	}
	fence := t.CreateFence(point)
	s.Replace(fence)
	fence.Put()
	return nil
}

// SwSyncInc advances a timeline, signalling the fences it reaches.
func (f *File) SwSyncInc(timeline uint32, inc uint64) error {
	k := f.k
	k.mu.Lock()
	t, ok := f.swsync.get(timeline)
	k.mu.Unlock()
	if !ok {
		return errnof(syscall.ENOENT, "no sw_sync timeline %d", timeline)
	}
	t.Inc(inc)
	return nil
}
