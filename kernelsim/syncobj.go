package kernelsim

import (
	"context"
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

// SyncobjDestroy drops a syncobj handle.
func (f *File) SyncobjDestroy(h uint32) error {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := f.syncobjs.remove(h)
	if !ok {
		return errnof(syscall.ENOENT, "no syncobj %d", h)
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

// SyncobjWait waits for all (or the first of) the syncobjs' fences. With
// waitForSubmit an empty syncobj is waited on until a fence arrives;
// without it, an empty syncobj is an error (EINVAL), as in Linux. It
// returns the index of the first signalled syncobj.
func (f *File) SyncobjWait(ctx context.Context, handles []uint32, timeout time.Duration, all, waitForSubmit bool) (uint32, error) {
	if len(handles) == 0 || len(handles) > 256 {
		return 0, errnof(syscall.EINVAL, "wait on %d syncobjs", len(handles))
	}
	objs := make([]*dma.Syncobj, len(handles))
	for i, h := range handles {
		s, err := f.syncobj(h)
		if err != nil {
			return 0, err
		}
		objs[i] = s
	}
	// Like drm_syncobj_array_wait_timeout, first_signaled is the lowest
	// index among the fences already signalled at the call, if enough
	// are; otherwise the first to signal.
	var first uint32
	signaled := 0
	for i, s := range objs {
		fence := s.Fence()
		if fence == nil && !waitForSubmit {
			return 0, errnof(syscall.EINVAL, "syncobj %d has no fence", handles[i])
		}
		if fence != nil && fence.Signaled() {
			if signaled == 0 {
				first = uint32(i)
			}
			signaled++
		}
		fence.Put()
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
		done := make(chan int, len(objs))
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for i, s := range objs {
			go func() {
				fence, err := s.WaitForSubmit(wctx)
				if err != nil {
					return
				}
				defer fence.Put()
				if fence.Wait(wctx) == nil {
					done <- i
				}
			}()
		}
		need := 1
		if all {
			need = len(objs)
		}
		for n := 0; n < need; n++ {
			select {
			case i := <-done:
				if n == 0 && signaled == 0 {
					first = uint32(i)
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, errnof(syscall.ETIME, "syncobj wait timed out")
		}
		return 0, err
	}
	return first, nil
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
