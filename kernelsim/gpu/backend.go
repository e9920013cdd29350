package gpu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/sched"
)

// JobPayload is what a sched.Job carries for this backend.
type JobPayload struct {
	Cmds     []Command
	Bufs     []Buffer
	Progress Progress // where to (re)start; updated as the job runs
	// Release, if set, is called once when the job is freed (the GEM
	// layer drops its buffer references there).
	Release func()
}

// Backend runs scheduler jobs on an Engine as one in-order hardware queue:
// a classic ring, or a firmware queue when each firmware-mode scheduler
// gets its own Backend. It implements sched.Backend.
type Backend struct {
	engine  *Engine
	name    string
	context uint64

	mu      sync.Mutex
	seq     uint64
	ring    []*hwJob // submitted, not started, in order
	jobs    map[*sched.Job]*hwJob
	active  bool          // a worker goroutine is draining the ring
	cursor  time.Duration // clock time the previous job ended at
	retired uint64
}

type hwJob struct {
	job     *sched.Job
	p       *JobPayload
	fence   *dma.Fence // backend's reference, signalled at the end
	ctx     context.Context
	cancel  context.CancelFunc
	preempt chan struct{}
	once    sync.Once
	done    chan struct{}
}

var _ sched.Backend = (*Backend)(nil)

// NewBackend returns a backend executing on e; name labels its hardware
// fences.
func NewBackend(e *Engine, name string) *Backend {
	if name == "" {
		name = "gpu"
	}
	return &Backend{engine: e, name: name, context: dma.NewContext(1), jobs: make(map[*sched.Job]*hwJob)}
}

// RunJob validates the job's payload and queues it on the hardware queue.
func (b *Backend) RunJob(j *sched.Job) (*dma.Fence, error) {
	p, ok := j.Payload.(*JobPayload)
	if !ok || p == nil {
		return nil, fmt.Errorf("gpu %s: %v: payload is %T, want *gpu.JobPayload: %w", b.name, j, j.Payload, ErrInvalid)
	}
	sizes := make([]uint64, len(p.Bufs))
	for i, buf := range p.Bufs {
		if buf == nil {
			return nil, fmt.Errorf("gpu %s: %v: buffer %d is nil: %w", b.name, j, i, ErrInvalid)
		}
		sizes[i] = buf.Size()
	}
	if err := Validate(p.Cmds, len(p.Bufs), sizes); err != nil {
		return nil, fmt.Errorf("gpu %s: %v: %w", b.name, j, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	f := dma.NewFenceOn(b.engine.Clock(), b.context, b.seq, b.name)
	hj := &hwJob{job: j, p: p, fence: f.Get(), ctx: ctx, cancel: cancel,
		preempt: make(chan struct{}), done: make(chan struct{})}
	b.jobs[j] = hj
	b.ring = append(b.ring, hj)
	if !b.active {
		b.active = true
		go b.worker()
	}
	return f, nil
}

// worker executes the ring in order and exits when it is empty, so an idle
// backend owns no goroutine.
func (b *Backend) worker() {
	for {
		b.mu.Lock()
		if len(b.ring) == 0 {
			b.active = false
			b.mu.Unlock()
			return
		}
		hj := b.ring[0]
		b.ring = b.ring[1:]
		start := max(b.cursor, b.engine.Clock().Now())
		b.mu.Unlock()

		end, err := b.engine.ExecuteAt(hj.ctx, start, hj.p.Cmds, hj.p.Bufs, &hj.p.Progress, hj.preempt)
		b.mu.Lock()
		if err == nil {
			b.cursor = end
		} else {
			// Stopped early: the queue restarts from now.
			b.cursor = b.engine.Clock().Now()
		}
		b.mu.Unlock()
		b.finish(hj, err)
	}
}

func (b *Backend) finish(hj *hwJob, err error) {
	if errors.Is(err, context.Canceled) {
		err = fmt.Errorf("gpu %s: %v killed: %w", b.name, hj.job, dma.ErrCanceled)
	}
	hj.cancel()
	// Drop our reference before signalling and close done: whoever waits
	// on either sees the backend holding nothing of the job.
	f := hj.fence
	f.Put()
	f.Signal(err)
	close(hj.done)
	// Forget the job last, so TimedOutJob either finds it and waits for
	// done or finds nothing held. A preempted job may be back already.
	b.mu.Lock()
	if b.jobs[hj.job] == hj {
		delete(b.jobs, hj.job)
	}
	b.retired++
	b.mu.Unlock()
}

// TimedOutJob kills the job: dropped from the queue if not started, or
// stopped at once (the engine watches its context) and waited for.
func (b *Backend) TimedOutJob(j *sched.Job) {
	b.mu.Lock()
	hj := b.jobs[j]
	if hj == nil {
		b.mu.Unlock()
		return
	}
	if i := slices.Index(b.ring, hj); i >= 0 {
		b.ring = slices.Delete(b.ring, i, i+1)
		b.mu.Unlock()
		b.finish(hj, context.Canceled)
		return
	}
	b.mu.Unlock()
	hj.cancel()
	<-hj.done
}

// Preempt asks a job to stop at its next preemption point: between
// commands, within a compute loop, or before a command's results are
// written (mid-command-buffer preemption); the job resumes from its
// Progress when it runs again. A job that contains OpHang is not
// preemptible. A job not started yet stops before its first command.
func (b *Backend) Preempt(j *sched.Job) bool {
	b.mu.Lock()
	hj := b.jobs[j]
	b.mu.Unlock()
	if hj == nil {
		return false
	}
	if slices.ContainsFunc(hj.p.Cmds, func(c Command) bool { return c.Op == OpHang }) {
		return false
	}
	hj.once.Do(func() { close(hj.preempt) })
	return true
}

// FreeJob releases the payload's resources.
func (b *Backend) FreeJob(j *sched.Job) {
	if p, ok := j.Payload.(*JobPayload); ok && p != nil && p.Release != nil {
		p.Release()
	}
}

// Busy reports whether the hardware queue has work.
func (b *Backend) Busy() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.active
}
