package xe

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"drmcr/kernelsim"
	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// execQueue is an exec queue (struct xe_exec_queue): a context of the
// file, with its own scheduler, bound to a VM. A queue of a long-running
// VM has a preempt fence (xe_preempt_fence.c): an unsignalled fence in
// every BO bound into the VM (as bookkeeping, which implicit sync never
// waits on), that signals once the queue is off the hardware. Something
// that must have the VM's memory quiet (on Linux an eviction, here a
// checkpoint's PAUSE) enables signalling on it: the queue is suspended
// (its running job preempted, nothing more dispatched) and the fence
// signals; on resume the queue gets a new fence (xe's rebind worker) and
// goes on where it stopped. Its jobs have no timeout.
type execQueue struct {
	x  *file
	vm *vm
	c  *kernelsim.Context

	mu          sync.Mutex
	preempt     *dma.Fence // the armed preempt fence; nil while suspended or for a non-LR queue
	fenceCtx    uint64
	seqno       uint64
	preemptions atomic.Uint64
}

// execQueueCreate is XE_EXEC_QUEUE_CREATE on a VM.
func (x *file) execQueueCreate(vmID uint32, prio int32) (uint32, error) {
	var id uint32
	err := x.f.Locked(func() error {
		v, ok := x.vms[vmID]
		if !ok {
			return kernelsim.Errnof(syscall.ENOENT, "no VM %d", vmID)
		}
		q := &execQueue{x: x, vm: v, fenceCtx: dma.NewContext(1)}
		c, err := x.f.NewContextLocked(prio, q, v.lr())
		if err != nil {
			return err
		}
		q.c = c
		v.queues[c.ID()] = q
		if v.lr() {
			q.arm()
		}
		id = c.ID()
		return nil
	})
	return id, err
}

// execQueueDestroy is XE_EXEC_QUEUE_DESTROY: at any instant, with jobs
// queued or running: they are cancelled or killed (their fences signal
// ECANCELED), and the finished fences live on wherever they were
// published (BOs, syncobjs) after the queue's scheduler is gone.
func (x *file) execQueueDestroy(id uint32) error {
	var q *execQueue
	err := x.f.Locked(func() error {
		c, err := x.f.ContextLocked(id)
		if err != nil {
			return err
		}
		var ok bool
		if q, ok = c.Data().(*execQueue); !ok {
			return kernelsim.Errnof(syscall.ENOENT, "context %d is not an exec queue", id)
		}
		if _, err := x.f.RemoveContextLocked(id); err != nil {
			return err
		}
		delete(q.vm.queues, id)
		return nil
	})
	if err != nil {
		return err
	}
	q.c.Destroy()
	q.disarm(dma.ErrCanceled)
	return nil
}

// arm gives the queue a new preempt fence and installs it in every BO
// bound into its VM. Called with the kernel lock held.
func (q *execQueue) arm() {
	q.mu.Lock()
	if q.preempt != nil {
		q.mu.Unlock()
		return
	}
	q.seqno++
	pf := dma.NewFence(q.fenceCtx, q.seqno, "xe-preempt")
	q.preempt = pf
	q.mu.Unlock()
	for _, b := range q.vm.binds {
		q.installPreemptFence(b.bo)
	}
}

// installPreemptFence adds the queue's preempt fence to a BO bound into
// its VM. Called with the kernel lock held.
func (q *execQueue) installPreemptFence(bo *kernelsim.BO) {
	q.mu.Lock()
	pf := q.preempt
	q.mu.Unlock()
	if pf != nil {
		_ = bo.Resv().Add(pf, dma.UsageBookkeep) // a live BO's resv takes any fence
	}
}

// disarm signals the preempt fence, if armed.
func (q *execQueue) disarm(err error) bool {
	q.mu.Lock()
	pf := q.preempt
	q.preempt = nil
	q.mu.Unlock()
	if pf == nil {
		return false
	}
	pf.Signal(err)
	pf.Put()
	return true
}

// Preempt implements kernelsim.Preempter: signalling is enabled on the
// preempt fence of a long-running queue: the queue is suspended, then the
// fence signals. A queue of a regular VM drains instead.
func (q *execQueue) Preempt(ctx context.Context) error {
	err := q.c.Pause(ctx)
	if err == nil && q.disarm(nil) {
		q.preemptions.Add(1)
	}
	return err
}

// Resume implements kernelsim.Preempter: the queue takes work again with
// a new preempt fence.
func (q *execQueue) Resume() {
	q.c.Resume()
	if !q.vm.lr() {
		return
	}
	_ = q.x.f.Locked(func() error { // a closed file needs no fence
		if _, ok := q.vm.queues[q.c.ID()]; ok {
			q.arm()
		}
		return nil
	})
}

// exec is XE_EXEC: a batch on an exec queue. Each buffer is a GPU
// address of the queue's VM and stands for the rest of its binding; the
// job holds the bound BOs. A regular VM's job waits for the fences its
// accesses must (implicit sync) and publishes its own in the BOs; a
// long-running VM's job does neither (its memory is guarded by the
// preempt fences) and has no timeout.
func (x *file) exec(ctx context.Context, r *uapi.XeExecRequest) (*uapi.XeExecReply, error) {
	var q *execQueue
	err := x.f.Locked(func() error {
		c, err := x.f.ContextLocked(r.ExecQueueId)
		if err != nil {
			return err
		}
		var ok bool
		if q, ok = c.Data().(*execQueue); !ok {
			return kernelsim.Errnof(syscall.ENOENT, "context %d is not an exec queue", r.ExecQueueId)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	fence, seqno, err := q.c.SubmitJob(ctx, kernelsim.JobSpec{
		Commands: r.Commands, InSyncobjs: r.InSyncobjs, OutSyncobjs: r.OutSyncobjs,
		Resolve: func() ([]kernelsim.JobBuffer, error) {
			if _, ok := q.vm.queues[q.c.ID()]; !ok {
				return nil, kernelsim.Errnof(syscall.ENOENT, "exec queue %d destroyed", r.ExecQueueId)
			}
			bufs := make([]kernelsim.JobBuffer, 0, len(r.Buffers))
			for i, eb := range r.Buffers {
				b, off, ok := q.vm.lookup(eb.Va)
				if !ok {
					for _, jb := range bufs {
						jb.BO.PutLocked()
					}
					return nil, kernelsim.Errnof(syscall.EFAULT, "buffer %d: GPU address %#x is not bound in VM %d", i, eb.Va, q.vm.id)
				}
				b.bo.GetLocked()
				bufs = append(bufs, kernelsim.JobBuffer{BO: b.bo, Offset: b.off + off, Size: b.size - off, Write: eb.Write})
			}
			return bufs, nil
		},
	})
	if err != nil {
		return nil, err
	}
	return &uapi.XeExecReply{FenceId: fence, Seqno: seqno}, nil
}
