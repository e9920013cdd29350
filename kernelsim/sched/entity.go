package sched

import (
	"context"
	"fmt"
	"sort"

	"drmcr/kernelsim/dma"
)

// Entity is a drm_sched_entity: one submission queue of a client context.
// Its jobs run in order; its fences live on their own fence contexts.
type Entity struct {
	sched   *Scheduler
	name    string
	context uint64 // scheduled fences; finished fences use context+1

	// Guarded by sched.mu.
	queue      []*Job // pushed, not on the hardware; sorted by seqno
	nextSeq    uint64
	inflight   int // jobs dispatching or running
	lrInFlight int // of which long-running
	paused     bool
	pauseGen   uint64        // counts pauses, to report what each one preempted
	resumed    chan struct{} // closed by Resume; replaced by Pause
	dead       chan struct{} // closed by Destroy
	guilty     bool
	destroyed  bool
	deadErr    error  // why the entity is unusable, when destroyed
	parking    bool   // drained while paused: its queue is parked work
	parkedJobs []*Job // the jobs parked by this entity
}

// NewEntity creates an entity on s. A Firmware scheduler takes a single
// entity: later ones, and entities of a finalised scheduler, are born
// destroyed (NewJob/Push fail with an error saying why).
func (s *Scheduler) NewEntity(name string) *Entity {
	e := &Entity{
		sched:   s,
		name:    name,
		context: dma.NewContext(2),
		resumed: make(chan struct{}),
		dead:    make(chan struct{}),
	}
	close(e.resumed)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		e.kill(fmt.Errorf("entity %q: scheduler %q is finalised: %w", name, s.cfg.Name, ErrDestroyed))
	case s.cfg.Mode == Firmware && len(s.all) > 0:
		e.kill(fmt.Errorf("entity %q: firmware scheduler %q already serves entity %q (one entity per firmware scheduler): %w",
			name, s.cfg.Name, s.all[0].name, ErrDestroyed))
	default:
		s.entities = append(s.entities, e)
		s.all = append(s.all, e)
	}
	return e
}

func (e *Entity) kill(err error) {
	e.destroyed = true
	e.deadErr = err
	close(e.dead)
}

// Name is the entity's name.
func (e *Entity) Name() string { return e.name }

// Scheduler is the scheduler the entity submits to.
func (e *Entity) Scheduler() *Scheduler { return e.sched }

// FenceContext is the context of the entity's finished fences (scheduled
// fences use FenceContext()-1).
func (e *Entity) FenceContext() uint64 { return e.context + 1 }

// Guilty reports whether one of the entity's jobs timed out.
func (e *Entity) Guilty() bool {
	e.sched.mu.Lock()
	defer e.sched.mu.Unlock()
	return e.guilty
}

// Paused reports whether the entity is paused.
func (e *Entity) Paused() bool {
	e.sched.mu.Lock()
	defer e.sched.mu.Unlock()
	return e.paused
}

// NewJob creates and arms a job: its scheduled and finished fences are
// allocated on the entity's contexts with the next seqno. The job takes
// ownership of the references in deps, even on error. Credits defaults to
// 1 and may be raised before Push.
func (e *Entity) NewJob(deps []*dma.Fence, payload any, longRunning bool) (*Job, error) {
	s := e.sched
	deps = dedupDeps(deps)
	s.mu.Lock()
	if e.destroyed {
		err := e.deadErr
		s.mu.Unlock()
		for _, d := range deps {
			d.Put()
		}
		return nil, fmt.Errorf("new job on entity %q: %w", e.name, err)
	}
	e.nextSeq++
	seq := e.nextSeq
	s.mu.Unlock()
	timeline := s.cfg.Name + ":" + e.name
	j := &Job{
		Deps:        deps,
		Credits:     1,
		LongRunning: longRunning,
		Payload:     payload,
		id:          jobIDs.Add(1),
		entity:      e,
		sched:       s,
		scheduled:   dma.NewFenceOn(s.cfg.Clock, e.context, seq, timeline),
		finished:    dma.NewFenceOn(s.cfg.Clock, e.context+1, seq, timeline),
	}
	liveJobs.Add(1)
	return j, nil
}

// Push queues j for execution. It blocks while the entity is paused, until
// Resume, Destroy or ctx is done. Push consumes j: on any error the job is
// freed and its finished fence signals ErrCanceled. Errors: ErrGuilty,
// ErrDestroyed, ctx's error, or ErrInvalid for a bad job (a job of another
// entity or pushed twice is refused without being consumed).
func (e *Entity) Push(ctx context.Context, j *Job) error {
	s := e.sched
	if j == nil {
		return fmt.Errorf("push on entity %q: nil job: %w", e.name, dma.ErrInvalid)
	}
	s.mu.Lock()
	if j.entity != e || j.pushed {
		s.mu.Unlock()
		return fmt.Errorf("push %v on entity %q: job belongs to entity %q or was already pushed: %w",
			j, e.name, j.entity.name, dma.ErrInvalid)
	}
	j.pushed = true
	var fail error
	for fail == nil {
		switch {
		case e.destroyed:
			fail = fmt.Errorf("push %v: %w", j, e.deadErr)
		case e.guilty:
			fail = fmt.Errorf("push %v on entity %q: %w", j, e.name, ErrGuilty)
		case j.Credits > s.cfg.Credits:
			fail = fmt.Errorf("push %v: needs %d credits, ring %q has %d: %w", j, j.Credits, s.cfg.Name, s.cfg.Credits, dma.ErrInvalid)
		case e.paused:
			resumed, dead := e.resumed, e.dead
			s.mu.Unlock()
			select {
			case <-resumed:
			case <-dead:
			case <-ctx.Done():
				fail = fmt.Errorf("push %v: entity %q paused: %w", j, e.name, ctx.Err())
			}
			s.mu.Lock()
			continue
		}
		if fail != nil {
			break
		}
		if j.Credits < 1 {
			j.Credits = 1
		}
		j.state = jobQueued
		e.requeue(j)
		s.broadcast()
		s.mu.Unlock()
		s.kick()
		return nil
	}
	j.state = jobDone
	s.mu.Unlock()
	s.complete(j, fmt.Errorf("%w: %w", fail, dma.ErrCanceled))
	return fail
}

// requeue inserts j into the queue in seqno order. Caller holds mu.
func (e *Entity) requeue(j *Job) {
	i := sort.Search(len(e.queue), func(i int) bool { return e.queue[i].Seqno() > j.Seqno() })
	e.queue = append(e.queue, nil)
	copy(e.queue[i+1:], e.queue[i:])
	e.queue[i] = j
}

// ready returns the head job if it may be dispatched now, arming a wake-up
// on the dependency it waits for otherwise. Caller holds mu.
func (e *Entity) ready() *Job {
	if len(e.queue) == 0 || e.lrInFlight > 0 {
		return nil
	}
	j := e.queue[0]
	if e.paused && j.LongRunning {
		return nil
	}
	for j.depIdx < len(j.Deps) {
		d := j.Deps[j.depIdx]
		if d.Signaled() || d.Context() == e.context || d.Context() == e.context+1 {
			j.depIdx++
			continue
		}
		if j.depFence != d {
			s := e.sched
			cb, ok := d.AddRemovableCallback(func(*dma.Fence) { s.kick() })
			if !ok {
				j.depIdx++
				continue
			}
			j.depFence, j.depCB = d, cb
		}
		return nil
	}
	return j
}

// Queued returns the jobs waiting in the entity's queue, in order: while
// paused, the preempted long-running jobs (with their progress in Payload)
// and the jobs behind them. For checkpointing.
func (e *Entity) Queued() []*Job {
	e.sched.mu.Lock()
	defer e.sched.mu.Unlock()
	return append([]*Job(nil), e.queue...)
}
