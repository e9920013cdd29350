package kernelsim

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// Context is a GPU context: a scheduler entity of a drm file. On a
// firmware-scheduled device it also owns its scheduler.
type Context struct {
	id     uint32
	f      *File
	prio   int32
	sched  *sched.Scheduler // own scheduler (firmware mode), else nil
	entity *sched.Entity
	data   any  // the driver's (an xe exec queue)
	lr     bool // long-running: no timeout, no implicit sync

	submitted, completed atomic.Uint64
	// wasGuilty: restored from a checkpoint of a guilty context. The
	// restored entity cannot be made guilty, so the kernel keeps the
	// verdict itself, as amdgpu keeps a context's guilty flag.
	wasGuilty atomic.Bool

	// gate: submitters wait while the context is paused.
	mu        sync.Mutex
	cond      *sync.Cond
	paused    bool
	destroyed bool
	// restored holds preempted work restored from a checkpoint, pushed
	// when the context resumes.
	restored []*sched.Job
}

// jobInfo is what the kernel remembers of a job beyond the scheduler's
// view: the BO references it holds and how it was submitted, which a
// checkpoint of preempted work needs.
type jobInfo struct {
	ctx     *Context
	bos     []*BO
	submit  []*uapi.SubmitBo
	cmds    []*uapi.Command
	payload *gpu.JobPayload
	windows []JobBuffer // the pieces of bos the job addresses (xe); nil: whole BOs
}

// backend wraps the GPU engine's scheduler backend to release a job's BO
// references when the scheduler frees it.
type backend struct {
	sched.Backend
	k *Kernel
}

func (b *backend) FreeJob(j *sched.Job) {
	b.Backend.FreeJob(j)
	k := b.k
	k.mu.Lock()
	defer k.mu.Unlock()
	info, ok := k.jobs[j]
	if !ok {
		return
	}
	delete(k.jobs, j)
	for _, bo := range info.bos {
		bo.put()
	}
}

// CtxCreate creates a context and returns its id.
func (f *File) CtxCreate(prio int32) (uint32, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return 0, errnof(syscall.EBADF, "file closed")
	}
	c := &Context{f: f, prio: prio}
	c.cond = sync.NewCond(&c.mu)
	id, err := f.contexts.alloc(c)
	if err != nil {
		return 0, errnof(syscall.ENOSPC, "%v", err)
	}
	c.id = id
	c.setup()
	if f.paused {
		c.paused = true
	}
	return id, nil
}

// setup creates the context's scheduler entity.
func (c *Context) setup() {
	d := c.f.dev
	name := fmt.Sprintf("file%d-ctx%d", c.f.id, c.id)
	s := d.ring
	if s == nil {
		c.sched = d.newScheduler(name)
		s = c.sched
	}
	c.entity = s.NewEntity(name)
}

// destroy tears the context down at any instant: waiting submitters fail,
// queued work is cancelled, the entity and its own scheduler go.
func (c *Context) destroy() {
	c.mu.Lock()
	c.destroyed = true
	restored := c.restored
	c.restored = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	c.entity.Destroy()
	// Pushing to a destroyed entity cancels the job and frees it through
	// the scheduler, like any other job of the context.
	for _, j := range restored {
		c.entity.Push(context.Background(), j)
	}
	if c.sched != nil {
		c.sched.Fini()
	}
}

// guilty reports whether one of the context's jobs hung, before or after
// a restore.
func (c *Context) guilty() bool { return c.wasGuilty.Load() || c.entity.Guilty() }

// CtxDestroy destroys a context (its queued jobs are cancelled).
func (f *File) CtxDestroy(id uint32) error {
	k := f.k
	k.mu.Lock()
	if f.closed {
		k.mu.Unlock()
		return errnof(syscall.EBADF, "file closed")
	}
	if c, ok := f.contexts.get(id); ok && c.data != nil {
		k.mu.Unlock()
		return errnof(syscall.ENOENT, "context %d is a driver's queue, destroyed through the driver's own ioctl", id)
	}
	c, ok := f.contexts.remove(id)
	k.mu.Unlock()
	if !ok {
		return errnof(syscall.ENOENT, "no context %d", id)
	}
	c.destroy()
	return nil
}

// CtxQuery reports a context's state.
func (f *File) CtxQuery(id uint32) (*uapi.CtxQueryReply, error) {
	c, err := f.context(id)
	if err != nil {
		return nil, err
	}
	return &uapi.CtxQueryReply{Guilty: c.guilty(), Submitted: c.submitted.Load(), Completed: c.completed.Load()}, nil
}

func (f *File) context(id uint32) (*Context, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return nil, errnof(syscall.EBADF, "file closed")
	}
	c, ok := f.contexts.get(id)
	if !ok {
		return nil, errnof(syscall.ENOENT, "no context %d", id)
	}
	return c, nil
}

// lockUnpaused returns with c.mu held and the context taking work, or an
// error. The wait is a blocking point: nothing has happened yet, so a
// checkpoint may record the request and replay it after restore.
func (c *Context) lockUnpaused(ctx context.Context) error {
	c.mu.Lock()
	for c.paused && !c.destroyed {
		c.mu.Unlock()
		err := blockingWait(ctx, func(ctx context.Context) error { return c.waitUnpaused(ctx) })
		if err != nil {
			return err
		}
		c.mu.Lock()
	}
	if c.destroyed {
		c.mu.Unlock()
		return errnof(syscall.ECANCELED, "context %d destroyed", c.id)
	}
	return nil
}

func (c *Context) waitUnpaused(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.paused && !c.destroyed {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.cond.Wait()
	}
	return nil
}

// Submit queues a job (the CS ioctl). Its dependencies are the explicit
// in-syncobjs plus, for each BO, the fences its reservation object holds
// that the access must wait for (implicit sync, dma_resv_usage_rw); its
// finished fence then goes into each BO's reservation object and into the
// out-syncobjs. Submitting to a paused context waits.
func (f *File) Submit(ctx context.Context, req *uapi.SubmitRequest) (*uapi.SubmitReply, error) {
	c, err := f.context(req.CtxId)
	if err != nil {
		return nil, err
	}
	if c.data != nil {
		return nil, errnof(syscall.ENOENT, "context %d is a driver's queue, which takes work through the driver's own ioctl", c.id)
	}
	if c.guilty() {
		return nil, errnof(syscall.ECANCELED, "context %d is guilty of a GPU hang", c.id)
	}
	cmds := make([]gpu.Command, len(req.Commands))
	for i, uc := range req.Commands {
		cmds[i] = commandFromUAPI(uc)
	}
	if err := c.lockUnpaused(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()

	k := f.k
	k.mu.Lock()
	info := &jobInfo{ctx: c, submit: req.Bos, cmds: req.Commands}
	bufs := make([]JobBuffer, 0, len(req.Bos))
	for _, sb := range req.Bos {
		bo, err := f.lookup(sb.Handle)
		if err != nil {
			info.release()
			k.mu.Unlock()
			return nil, err
		}
		bo.get()
		info.bos = append(info.bos, bo)
		bufs = append(bufs, JobBuffer{BO: bo, Size: bo.size, Write: sb.Write})
	}
	deps, outs, err := f.resolveJob(c, info, bufs, cmds, req.InSyncobjs, req.OutSyncobjs)
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}
	fin, err := c.queue(ctx, info, bufs, deps, outs, req.LongRunning || c.lr)
	if err != nil {
		return nil, err
	}
	return &uapi.SubmitReply{FenceId: fin.ID(), Seqno: fin.Seqno()}, nil
}

// resolveJob checks a job's commands against its buffers (whose BOs
// info already holds a reference on) and gathers its dependencies and
// out-syncobjs. On failure the references are dropped. Called with k.mu
// held.
func (f *File) resolveJob(c *Context, info *jobInfo, bufs []JobBuffer, cmds []gpu.Command, in, out []uint32) ([]*dma.Fence, []*dma.Syncobj, error) {
	var deps []*dma.Fence
	fail := func(err error) ([]*dma.Fence, []*dma.Syncobj, error) {
		info.release()
		for _, d := range deps {
			d.Put()
		}
		return nil, nil, err
	}
	gbufs, sizes := gpuBuffers(bufs)
	if err := gpu.Validate(cmds, len(gbufs), sizes); err != nil {
		return fail(errnof(syscall.EINVAL, "commands: %v", err))
	}
	if !c.lr {
		for _, b := range bufs {
			deps = append(deps, b.BO.resv.Fences(dma.UsageRW(b.Write))...)
		}
	}
	for _, h := range in {
		s, ok := f.syncobjs.get(h)
		if !ok {
			return fail(errnof(syscall.ENOENT, "no syncobj %d", h))
		}
		fence := s.Fence()
		if fence == nil {
			return fail(errnof(syscall.EINVAL, "syncobj %d has no fence", h))
		}
		deps = append(deps, fence)
	}
	var outs []*dma.Syncobj
	for _, h := range out {
		s, ok := f.syncobjs.get(h)
		if !ok {
			return fail(errnof(syscall.ENOENT, "no syncobj %d", h))
		}
		outs = append(outs, s)
	}
	info.payload = &gpu.JobPayload{Cmds: cmds, Bufs: gbufs}
	return deps, outs, nil
}

// queue makes the job, publishes its finished fence in its BOs'
// reservation objects and the out-syncobjs, and pushes it. Called with
// c.mu held (the context takes work), without k.mu.
func (c *Context) queue(ctx context.Context, info *jobInfo, bufs []JobBuffer, deps []*dma.Fence, outs []*dma.Syncobj, longRunning bool) (*dma.Fence, error) {
	k := c.f.k
	job, err := c.entity.NewJob(deps, info.payload, longRunning)
	if err != nil {
		k.mu.Lock()
		info.release()
		k.mu.Unlock()
		return nil, errnof(syscall.EINVAL, "job: %v", err)
	}
	fin := job.Finished()
	for _, b := range bufs {
		b.BO.resv.Add(fin, c.usage(b.Write))
	}
	for _, s := range outs {
		s.Replace(fin)
	}
	k.mu.Lock()
	k.jobs[job] = info
	k.mu.Unlock()
	c.submitted.Add(1)
	fin.AddCallback(func(*dma.Fence) { c.completed.Add(1) })
	if err := c.entity.Push(ctx, job); err != nil {
		return nil, errnof(syscall.ECANCELED, "push: %v", err)
	}
	return fin, nil
}

// release drops the BO references of a job that never reached the
// scheduler. Called with k.mu held.
func (info *jobInfo) release() {
	for _, bo := range info.bos {
		bo.put()
	}
	info.bos = nil
}

func commandFromUAPI(c *uapi.Command) gpu.Command {
	return gpu.Command{
		Op: gpu.Op(c.Op), Dst: int(c.Dst), Src: int(c.Src),
		DstOff: c.DstOff, SrcOff: c.SrcOff, Len: c.Len,
		Value: c.Value, Iterations: c.Iterations,
	}
}

// pause stops the context taking work and drains it (see File.Pause).
func (c *Context) pause(ctx context.Context) error {
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
	_, err := c.entity.Pause(ctx)
	return err
}

// resume lets the context take work again, starting with restored
// preempted jobs.
func (c *Context) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused || c.destroyed {
		return
	}
	c.entity.Resume()
	restored := c.restored
	c.restored = nil
	for _, j := range restored {
		if err := c.entity.Push(context.Background(), j); err != nil {
			// Push fails only on a destroyed entity, which signals and
			// frees the job itself.
			continue
		}
	}
	c.paused = false
	c.cond.Broadcast()
}
