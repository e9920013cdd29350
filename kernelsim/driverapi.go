package kernelsim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// This file is what the core offers drivers, as drm_gem.c, drm_syncobj.c
// and the scheduler offer Linux drivers: lookups, references, contexts
// with their scheduler entity, job submission with implicit sync, and the
// pieces of a checkpoint and a restore every driver needs. Methods named
// Locked are called with the kernel lock held (Kernel.mu, which protects
// the object graph, drivers' state included); the others take it.

// Locked runs fn with the kernel lock held.
func (f *File) Locked(fn func() error) error {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	if f.closed {
		return errnof(syscall.EBADF, "file closed")
	}
	return fn()
}

// Priv returns the driver's state of the file.
func (f *File) Priv() FilePriv { return f.priv }

// LookupLocked returns the BO of a handle, unreferenced.
func (f *File) LookupLocked(handle uint32) (*BO, error) { return f.lookup(handle) }

// GetLocked takes a reference on the BO.
func (bo *BO) GetLocked() { bo.get() }

// PutLocked drops a reference; the last frees the BO.
func (bo *BO) PutLocked() { bo.put() }

// Size is the BO's size in bytes.
func (bo *BO) Size() uint64 { return bo.size }

// SyncobjLocked returns a syncobj of the file.
func (f *File) SyncobjLocked(h uint32) (*dma.Syncobj, error) {
	s, ok := f.syncobjs.get(h)
	if !ok {
		return nil, errnof(syscall.ENOENT, "no syncobj %d", h)
	}
	return s, nil
}

// PageSize is the device's GPU page size.
func (d *Device) PageSize() uint64 { return 1 << d.drv.pageShift }

// VAMax is the end of the device's GPU address space.
func (d *Device) VAMax() uint64 { return d.drv.vaMax }

// NewContextLocked creates a context of the file with its scheduler
// entity (and its own scheduler on a firmware-scheduled device); data is
// the driver's (see Context.Data, Preempter). A long-running context
// runs long-running jobs only (no timeout; preempted, never killed by a
// checkpoint) and has no implicit sync: its jobs wait on no BO's fences
// and publish theirs as bookkeeping, as xe's LR mode does.
func (f *File) NewContextLocked(prio int32, data any, longRunning bool) (*Context, error) {
	if f.closed {
		return nil, errnof(syscall.EBADF, "file closed")
	}
	c := &Context{f: f, prio: prio, data: data, lr: longRunning}
	c.cond = sync.NewCond(&c.mu)
	id, err := f.contexts.alloc(c)
	if err != nil {
		return nil, errnof(syscall.ENOSPC, "%v", err)
	}
	c.id = id
	c.setup()
	if f.paused {
		c.paused = true
	}
	return c, nil
}

// ContextLocked returns a context of the file.
func (f *File) ContextLocked(id uint32) (*Context, error) {
	c, ok := f.contexts.get(id)
	if !ok {
		return nil, errnof(syscall.ENOENT, "no context %d", id)
	}
	return c, nil
}

// RemoveContextLocked takes a context out of the file; the caller then
// destroys it with Destroy, without the kernel lock.
func (f *File) RemoveContextLocked(id uint32) (*Context, error) {
	c, ok := f.contexts.remove(id)
	if !ok {
		return nil, errnof(syscall.ENOENT, "no context %d", id)
	}
	return c, nil
}

// ID is the context's id in its file.
func (c *Context) ID() uint32 { return c.id }

// Data is what the driver attached to the context.
func (c *Context) Data() any { return c.data }

// LongRunning reports whether the context is long-running.
func (c *Context) LongRunning() bool { return c.lr }

// Destroy tears the context down at any instant (see destroy). Called
// without the kernel lock.
func (c *Context) Destroy() { c.destroy() }

// Pause stops the context taking work, runs what it queued and preempts
// long-running jobs (see File.Pause). Called without the kernel lock.
func (c *Context) Pause(ctx context.Context) error { return c.pause(ctx) }

// Resume undoes Pause, starting with preempted work.
func (c *Context) Resume() { c.resume() }

// Idle reports whether the context holds no job (queued or running).
func (c *Context) Idle() bool { return c.submitted.Load() == c.completed.Load() }

// usage is how a job of the context publishes its fence in a BO's
// reservation object.
func (c *Context) usage(write bool) dma.Usage {
	switch {
	case c.lr:
		return dma.UsageBookkeep
	case write:
		return dma.UsageWrite
	}
	return dma.UsageRead
}

// JobBuffer is a piece of a BO that a job addresses: commands see bytes
// [Offset, Offset+Size) of the BO as their buffer.
type JobBuffer struct {
	BO           *BO
	Offset, Size uint64
	Write        bool
}

// window is a JobBuffer as the GPU sees it.
type window struct {
	mem       *Backing
	off, size uint64
}

func (w window) Size() uint64 { return w.size }

func (w window) ReadAt(p []byte, off uint64) error {
	if off > w.size || uint64(len(p)) > w.size-off {
		return errnof(syscall.EINVAL, "access of %d bytes at offset %d outside a %d-byte window", len(p), off, w.size)
	}
	return w.mem.ReadAt(p, w.off+off)
}

func (w window) WriteAt(p []byte, off uint64) error {
	if off > w.size || uint64(len(p)) > w.size-off {
		return errnof(syscall.EINVAL, "access of %d bytes at offset %d outside a %d-byte window", len(p), off, w.size)
	}
	return w.mem.WriteAt(p, w.off+off)
}

// gpuBuffers turns job buffers into what the GPU executes on: whole BOs
// are their memory itself.
func gpuBuffers(bufs []JobBuffer) ([]gpu.Buffer, []uint64) {
	out := make([]gpu.Buffer, len(bufs))
	sizes := make([]uint64, len(bufs))
	for i, b := range bufs {
		sizes[i] = b.Size
		if b.Offset == 0 && b.Size == b.BO.size {
			out[i] = b.BO.mem
			continue
		}
		out[i] = window{mem: b.BO.mem, off: b.Offset, size: b.Size}
	}
	return out, sizes
}

// JobSpec is a job a driver submits on a context.
type JobSpec struct {
	Commands    []*uapi.Command
	InSyncobjs  []uint32 // explicit dependencies
	OutSyncobjs []uint32 // receive the finished fence
	// Resolve names the job's buffers, each BO referenced for the job.
	// It runs with the kernel lock held, once the context takes work.
	Resolve func() ([]JobBuffer, error)
}

// SubmitJob queues a job on the context (the driver's exec ioctl) and
// returns its finished fence's id and seqno. It waits while the context
// is paused (a replayable wait: nothing has happened yet).
func (c *Context) SubmitJob(ctx context.Context, spec JobSpec) (uint64, uint64, error) {
	if c.guilty() {
		return 0, 0, errnof(syscall.ECANCELED, "context %d is guilty of a GPU hang", c.id)
	}
	cmds := make([]gpu.Command, len(spec.Commands))
	for i, uc := range spec.Commands {
		cmds[i] = commandFromUAPI(uc)
	}
	if err := c.lockUnpaused(ctx); err != nil {
		return 0, 0, err
	}
	defer c.mu.Unlock()
	f, k := c.f, c.f.k
	k.mu.Lock()
	if f.closed {
		k.mu.Unlock()
		return 0, 0, errnof(syscall.EBADF, "file closed")
	}
	bufs, err := spec.Resolve()
	if err != nil {
		k.mu.Unlock()
		return 0, 0, err
	}
	info := &jobInfo{ctx: c, cmds: spec.Commands, windows: bufs}
	for _, b := range bufs {
		info.bos = append(info.bos, b.BO)
		info.submit = append(info.submit, &uapi.SubmitBo{Write: b.Write})
	}
	deps, outs, err := f.resolveJob(c, info, bufs, cmds, spec.InSyncobjs, spec.OutSyncobjs)
	k.mu.Unlock()
	if err != nil {
		return 0, 0, err
	}
	fin, err := c.queue(ctx, info, bufs, deps, outs, c.lr)
	if err != nil {
		return 0, 0, err
	}
	return fin.ID(), fin.Seqno(), nil
}

// DriverCheckpoint is what the core gives a driver's Checkpoint hook: the
// records of contexts and syncobjs every driver's blob carries. Its
// methods are called with the kernel lock held, contexts first.
type DriverCheckpoint struct {
	f         *File
	bos       map[uint64]*BO
	jobFences map[*dma.Fence]bool
	fences    []uint64 // the saved jobs' finished fences
	waits     []uint64 // the fences they wait on
}

// File is the file being checkpointed.
func (cp *DriverCheckpoint) File() *File { return cp.f }

// Contexts returns the file's contexts by id.
func (cp *DriverCheckpoint) Contexts() []*Context { return cp.f.contextList() }

// AddBO makes a BO part of the checkpoint (one the driver's state holds
// by itself, such as a VM binding's) and returns its id.
func (cp *DriverCheckpoint) AddBO(bo *BO) uint64 {
	bo = bo.real()
	cp.bos[bo.id] = bo
	return bo.id
}

// Context records a context: its counters and the work a pause left in
// it (preempted long-running jobs and what was queued behind them).
func (cp *DriverCheckpoint) Context(c *Context) (*uapi.ContextState, error) {
	f, k := cp.f, cp.f.k
	cs := &uapi.ContextState{
		CtxId: c.id, Priority: c.prio, Guilty: c.guilty(),
		Submitted: c.submitted.Load(), Completed: c.completed.Load(),
	}
	c.mu.Lock()
	jobs := append(c.entity.Queued(), c.restored...)
	c.mu.Unlock()
	for _, j := range jobs {
		info, ok := k.jobs[j]
		if !ok {
			return nil, fmt.Errorf("context %d: queued job without kernel state", c.id)
		}
		js := &uapi.JobState{
			FenceId: j.Finished().ID(), Bos: slices.Clone(info.submit), Commands: info.cmds,
			LongRunning: j.LongRunning,
		}
		// A handle the task closed after the submit (or reused for
		// another BO) is recorded as 0: the job holds its BO by id.
		for i, sb := range js.Bos {
			if i < len(info.bos) {
				if bo, ok := f.handles.get(sb.Handle); !ok || bo != info.bos[i] {
					js.Bos[i] = &uapi.SubmitBo{Handle: 0, Write: sb.Write}
				}
			}
		}
		for _, w := range info.windows {
			js.Windows = append(js.Windows, &uapi.BoWindow{Offset: w.Offset, Size: w.Size})
		}
		// A drained context keeps preempted long-running work and what
		// was queued behind it, which may wait on parked work of any
		// paused context: restore rebuilds those waits.
		for _, dep := range j.Deps {
			if dep.Signaled() {
				continue
			}
			if !cp.jobFences[dep] && !sched.Parked(dep) {
				return nil, fmt.Errorf("context %d: queued job %d waits on fence %d (%s), which is not paused work to restore", c.id, j.ID(), dep.ID(), dep.Timeline())
			}
			js.DepFenceIds = append(js.DepFenceIds, dep.ID())
		}
		if j.LongRunning {
			js.ProgressCmd = int32(info.payload.Progress.Cmd)
			js.ProgressIter = info.payload.Progress.Iter
			js.ProgressAcc = info.payload.Progress.Acc
		}
		for _, bo := range info.bos {
			js.BoIds = append(js.BoIds, cp.AddBO(bo))
		}
		cp.jobFences[j.Finished()] = true
		cp.fences = append(cp.fences, js.FenceId)
		cp.waits = append(cp.waits, js.DepFenceIds...)
		cs.Jobs = append(cs.Jobs, js)
	}
	return cs, nil
}

// Syncobjs records the file's syncobjs and sw_sync timelines; a syncobj
// may hold the fence of a job recorded by Context before.
func (cp *DriverCheckpoint) Syncobjs() ([]*uapi.SyncobjState, []*uapi.SwSyncState, error) {
	f := cp.f
	var (
		syncobjs []*uapi.SyncobjState
		swsyncs  []*uapi.SwSyncState
	)
	timelines := map[uint64]uint32{} // fence context -> timeline id
	for _, id := range f.swsync.ids() {
		t, _ := f.swsync.get(id)
		swsyncs = append(swsyncs, &uapi.SwSyncState{Timeline: id, Value: t.Value()})
		timelines[t.Context()] = id
	}
	for _, h := range f.syncobjs.ids() {
		s, _ := f.syncobjs.get(h)
		st := &uapi.SyncobjState{Handle: h}
		if fence := s.Fence(); fence != nil {
			switch tl, isSw := timelines[fence.Context()]; {
			case fence.Signaled():
				st.Kind = uapi.SyncobjState_SIGNALED
				st.Error = dma.Errno(fence.Err())
			case cp.jobFences[fence]:
				st.Kind = uapi.SyncobjState_JOB
				st.FenceId = fence.ID()
			case isSw:
				st.Kind = uapi.SyncobjState_SW_SYNC
				st.Timeline = tl
				st.Point = fence.Seqno()
			default:
				fence.Put()
				return nil, nil, fmt.Errorf("syncobj %d holds unsignalled fence %d (%s) that is not this file's to restore", h, fence.ID(), fence.Timeline())
			}
			fence.Put()
		}
		syncobjs = append(syncobjs, st)
	}
	return syncobjs, swsyncs, nil
}

// DriverRestore is what the core gives a driver's Restore hook. Its
// methods are called with the kernel lock held, contexts before syncobjs.
type DriverRestore struct {
	s    *Session
	f    *File
	jobs map[uint64]*sched.Job // dump-time fence id -> restored job
}

// File is the file being restored.
func (rs *DriverRestore) File() *File { return rs.f }

// BO returns a BO of the checkpoint by its dump-time id, referenced for
// the caller, creating it on its own device if no one did yet. A BO of
// another device that the file imported comes as the file's import
// attachment of it (its handles are restored first).
func (rs *DriverRestore) BO(id uint64) (*BO, error) {
	bo, err := rs.s.boFor(id)
	if err != nil || bo.dev == rs.f.dev || bo.dmabuf == nil {
		return bo, err
	}
	if h, ok := rs.f.primeHandle(bo.dmabuf); ok {
		if att, ok := rs.f.handles.get(h); ok && att.exporter == bo {
			att.get()
			bo.put()
			return att, nil
		}
	}
	return bo, nil
}

// Context recreates a context, paused, with its saved work; data and
// longRunning are as for File.NewContextLocked.
func (rs *DriverRestore) Context(cs *uapi.ContextState, data any, longRunning bool) (*Context, error) {
	f, s := rs.f, rs.s
	c := &Context{f: f, prio: cs.Priority, paused: true, data: data, lr: longRunning}
	c.cond = sync.NewCond(&c.mu)
	if err := f.contexts.allocAt(cs.CtxId, c); err != nil {
		return nil, fmt.Errorf("context %d: %w", cs.CtxId, err)
	}
	c.id = cs.CtxId
	c.setup()
	c.wasGuilty.Store(cs.Guilty)
	c.submitted.Store(cs.Submitted)
	c.completed.Store(cs.Completed)
	for _, js := range cs.Jobs {
		bos := make([]*BO, 0, len(js.BoIds))
		for _, id := range js.BoIds {
			bo, err := rs.BO(id)
			if err != nil {
				for _, b := range bos {
					b.put()
				}
				return nil, fmt.Errorf("context %d job: %w", cs.CtxId, err)
			}
			bos = append(bos, bo)
		}
		deps := make([]*dma.Fence, 0, len(js.DepFenceIds))
		for _, id := range js.DepFenceIds {
			deps = append(deps, s.fenceFor(id))
		}
		j, err := c.restoredJob(js, bos, deps)
		if err != nil {
			for _, b := range bos {
				b.put()
			}
			return nil, fmt.Errorf("context %d job: %w", cs.CtxId, err)
		}
		c.restored = append(c.restored, j)
		rs.jobs[js.FenceId] = j
		s.provide(js.FenceId, j.Finished())
	}
	return c, nil
}

// Syncobjs recreates sw_sync timelines and syncobjs.
func (rs *DriverRestore) Syncobjs(syncobjs []*uapi.SyncobjState, swsyncs []*uapi.SwSyncState) error {
	f := rs.f
	timelines := map[uint32]*dma.SwSyncTimeline{}
	for _, ts := range swsyncs {
		t := dma.NewSwSyncTimeline("sw_sync")
		if err := f.swsync.allocAt(ts.Timeline, t); err != nil {
			t.Release()
			return fmt.Errorf("sw_sync timeline %d: %w", ts.Timeline, err)
		}
		t.Inc(ts.Value)
		timelines[ts.Timeline] = t
	}
	for _, ss := range syncobjs {
		so := dma.NewSyncobj()
		if err := f.syncobjs.allocAt(ss.Handle, so); err != nil {
			so.Release()
			return fmt.Errorf("syncobj %d: %w", ss.Handle, err)
		}
		switch ss.Kind {
		case uapi.SyncobjState_EMPTY:
		case uapi.SyncobjState_SIGNALED:
			fence := dma.NewFence(dma.NewContext(1), 1, "restored")
			fence.Signal(dma.ErrFromErrno(ss.Error))
			so.Replace(fence)
			fence.Put()
		case uapi.SyncobjState_JOB:
			j, ok := rs.jobs[ss.FenceId]
			if !ok {
				return fmt.Errorf("syncobj %d: no preempted job with fence %d", ss.Handle, ss.FenceId)
			}
			so.Replace(j.Finished())
		case uapi.SyncobjState_SW_SYNC:
			t, ok := timelines[ss.Timeline]
			if !ok {
				return fmt.Errorf("syncobj %d: no sw_sync timeline %d", ss.Handle, ss.Timeline)
			}
			fence := t.CreateFence(ss.Point)
			so.Replace(fence)
			fence.Put()
		default:
			return fmt.Errorf("syncobj %d: unknown state %v", ss.Handle, ss.Kind)
		}
	}
	return nil
}

// BlockingWait runs wait at a replayable blocking point of a request:
// before the ioctl has any effect, so a checkpoint taken meanwhile
// records the request and replays it after restore.
func BlockingWait(ctx context.Context, wait func(context.Context) error) error {
	return blockingWait(ctx, wait)
}
