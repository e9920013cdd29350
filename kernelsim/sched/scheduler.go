package sched

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/ktime"
)

// Mode selects how entities map to schedulers.
type Mode int

const (
	// Classic: one scheduler per hardware ring, shared by entities.
	Classic Mode = iota
	// Firmware: one scheduler per entity (firmware-scheduled queues).
	Firmware
)

func (m Mode) String() string {
	if m == Firmware {
		return "firmware"
	}
	return "classic"
}

// Config configures a Scheduler.
type Config struct {
	Name    string
	Credits int           // ring capacity in job credits; < 1 means 1
	Timeout time.Duration // TDR timeout for regular jobs; 0 = none
	Clock   ktime.Clock   // nil means ktime.Real()
	Mode    Mode
}

// Scheduler is a drm_gpu_scheduler: one hardware ring (Classic) or one
// firmware queue (Firmware). One goroutine runs it until Fini.
type Scheduler struct {
	cfg Config
	b   Backend

	mu       sync.Mutex
	entities []*Entity // run queue: live entities, round-robin order
	all      []*Entity // every entity not yet destroyed
	rr       int
	pending  []*Job // on the hardware, in dispatch order
	used     int    // credits in use
	// headSince is when pending[0] became the head of the ring: the TDR
	// timer runs from there.
	headSince   time.Duration
	dispatching *Entity // entity whose job is inside Backend.RunJob
	idle        *sync.Cond
	changed     chan struct{} // closed and replaced on every state change
	stopped     bool

	wake     chan struct{}
	stop     chan struct{}
	loopDone chan struct{}
}

// New starts a scheduler for backend b.
func New(cfg Config, b Backend) *Scheduler {
	if cfg.Credits < 1 {
		cfg.Credits = 1
	}
	if cfg.Clock == nil {
		cfg.Clock = ktime.Real()
	}
	if cfg.Timeout < 0 {
		cfg.Timeout = 0
	}
	s := &Scheduler{
		cfg:      cfg,
		b:        b,
		changed:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	s.idle = sync.NewCond(&s.mu)
	go s.loop()
	return s
}

// Name is the scheduler's name.
func (s *Scheduler) Name() string { return s.cfg.Name }

// Config returns the scheduler's configuration.
func (s *Scheduler) Config() Config { return s.cfg }

// kick wakes the scheduler loop; safe from any goroutine and callback.
func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// broadcast wakes everything waiting for a state change. Caller holds mu.
func (s *Scheduler) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Scheduler) loop() {
	defer close(s.loopDone)
	for {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		action, deadline, timed := s.step()
		if action != nil {
			s.broadcast()
		}
		s.mu.Unlock()
		if action != nil {
			action()
			s.mu.Lock()
			s.broadcast()
			s.mu.Unlock()
			continue
		}
		var timer <-chan struct{}
		stopTimer := func() bool { return false }
		if timed {
			timer, stopTimer = s.cfg.Clock.After(deadline - s.cfg.Clock.Now())
		}
		select {
		case <-s.wake:
		case <-timer:
		case <-s.stop:
		}
		stopTimer()
	}
}

// step picks the next thing to do, in drm_sched's priority: retire
// completed jobs, handle a timeout, request preemptions, dispatch a job.
// It mutates state under mu and returns the part that calls the backend.
// With nothing to do, it returns the TDR deadline to sleep until, if any.
func (s *Scheduler) step() (action func(), deadline time.Duration, timed bool) {
	now := s.cfg.Clock.Now()
	for i, j := range s.pending {
		if j.hwDone && j.state == jobRunning {
			return s.retire(i, now), 0, false
		}
	}
	if len(s.pending) > 0 && s.cfg.Timeout > 0 {
		head := s.pending[0]
		if head.state == jobRunning && !head.LongRunning {
			dl := s.headSince + s.cfg.Timeout
			if now >= dl {
				return s.timeout(now), 0, false
			}
			deadline, timed = dl, true
		}
	}
	for _, j := range s.pending {
		if j.state == jobRunning && j.LongRunning && j.entity.paused && !j.preemptAsked {
			j.preemptAsked = true
			return func() { s.preempt(j) }, 0, false
		}
	}
	// A draining entity never waits for other entities' work on a shared
	// ring: their jobs in its way are preempted and requeued, as a GPU
	// with mid-command-buffer preemption or several rings would do.
	if j := s.inTheWayOfDrain(); j != nil {
		j.preemptAsked = true
		return func() { s.preempt(j) }, 0, false
	}
	if j := s.selectJob(); j != nil {
		return func() { s.dispatch(j) }, 0, false
	}
	return nil, deadline, timed
}

// removePending takes pending[i] off the ring. Caller holds mu.
func (s *Scheduler) removePending(i int, now time.Duration) {
	s.pending = append(s.pending[:i], s.pending[i+1:]...)
	if i == 0 {
		s.headSince = now
	}
}

// retire handles a job whose hardware fence signalled.
func (s *Scheduler) retire(i int, now time.Duration) func() {
	j := s.pending[i]
	s.removePending(i, now)
	s.used -= j.Credits
	e := j.entity
	if j.LongRunning {
		e.lrInFlight--
	}
	err := j.hw.Err()
	if errors.Is(err, ErrPreempted) {
		// Back to the head of the entity's queue with its progress; the
		// finished fence stays unsignalled.
		hw := j.hw
		j.hw, j.hwDone, j.preemptAsked = nil, false, false
		j.preemptions++
		j.preemptGen = e.pauseGen
		j.state = jobQueued
		e.inflight--
		e.requeue(j)
		return func() { hw.Put() }
	}
	j.state = jobDone
	return func() {
		s.complete(j, err)
		s.doneInflight(e)
	}
}

// timeout handles the TDR of the job at the head of the ring. The entity
// turns guilty; its other jobs already on the ring are killed too (as
// drm_sched_resubmit_jobs cancels the guilty context's jobs), so nothing of
// a guilty entity runs after its hang.
func (s *Scheduler) timeout(now time.Duration) func() {
	j := s.pending[0]
	e := j.entity
	e.guilty = true
	victims := []*Job{j}
	s.removePending(0, now)
	for i := 0; i < len(s.pending); {
		if v := s.pending[i]; v.entity == e {
			victims = append(victims, v)
			s.removePending(i, now)
			continue
		}
		i++
	}
	for _, v := range victims {
		v.state = jobDone
	}
	return func() {
		// Newest first: a job later on the ring must not start in the gap
		// left by killing the one before it.
		for k := len(victims) - 1; k >= 0; k-- {
			v := victims[k]
			s.b.TimedOutJob(v)
			s.mu.Lock()
			s.used -= v.Credits
			if v.LongRunning {
				e.lrInFlight--
			}
			s.mu.Unlock()
			err := fmt.Errorf("%v canceled: entity %q is guilty: %w", v, e.name, dma.ErrCanceled)
			if v == j {
				err = fmt.Errorf("%v on %s: ran longer than %v: %w", j, s.cfg.Name, s.cfg.Timeout, dma.ErrTimedOut)
			}
			s.complete(v, err)
			s.doneInflight(e)
		}
	}
}

// doneInflight accounts for a job of e that left the hardware and is
// complete, so a Pause that sees inflight drop also sees the job's fence
// signalled.
func (s *Scheduler) doneInflight(e *Entity) {
	s.mu.Lock()
	e.inflight--
	s.mu.Unlock()
}

func (s *Scheduler) preempt(j *Job) {
	ok := s.b.Preempt(j)
	if !ok {
		s.mu.Lock()
		j.notPreemptible = true
		s.mu.Unlock()
	}
}

// draining reports whether a paused entity still has work to drain.
// Caller holds mu.
func (e *Entity) draining() bool { return e.paused && !e.parking && !e.destroyed }

// drainReady returns a draining entity whose next job could run now, but
// for the ring. Caller holds mu.
func (s *Scheduler) drainReady() *Entity {
	for _, e := range s.entities {
		if e.draining() {
			if j := e.ready(); j != nil && !j.LongRunning {
				return e
			}
		}
	}
	return nil
}

// inTheWayOfDrain returns a running job of an entity that is not paused
// which a draining entity's work waits behind: any such job while a
// draining entity's ready job waits for the ring, and otherwise those
// ahead of a draining entity's jobs on the in-order hardware queue.
// Caller holds mu.
func (s *Scheduler) inTheWayOfDrain() *Job {
	waiting := s.drainReady() != nil
	last := -1 // the last job of a draining entity on the hardware
	for i, j := range s.pending {
		if j.entity.draining() {
			last = i
		}
	}
	for i, j := range s.pending {
		if !waiting && i > last {
			break
		}
		if !j.entity.paused && j.state == jobRunning && !j.preemptAsked && !j.notPreemptible && !j.hwDone {
			return j
		}
	}
	return nil
}

// selectJob pops the next ready job, serving entities round-robin, if the
// ring has room; while an entity drains for a pause, its jobs go first and
// no other entity's job takes the ring from it. Caller holds mu.
func (s *Scheduler) selectJob() *Job {
	if e := s.drainReady(); e != nil {
		j := e.ready()
		if s.used+j.Credits > s.cfg.Credits {
			return nil // preemption of what is in the way frees credits
		}
		return s.take(e, j)
	}
	n := len(s.entities)
	for k := range n {
		idx := (s.rr + k) % n
		e := s.entities[idx]
		j := e.ready()
		if j == nil || s.used+j.Credits > s.cfg.Credits {
			continue
		}
		s.rr = idx + 1
		return s.take(e, j)
	}
	return nil
}

// take pops e's ready head job j for dispatch. Caller holds mu.
func (s *Scheduler) take(e *Entity, j *Job) *Job {
	e.queue = e.queue[1:]
	j.state = jobDispatching
	s.used += j.Credits
	e.inflight++
	if j.LongRunning {
		e.lrInFlight++
	}
	s.dispatching = e
	return j
}

// dispatch hands j to the hardware (drm_sched_run_job_work).
func (s *Scheduler) dispatch(j *Job) {
	e := j.entity
	var (
		hw  *dma.Fence
		err error
	)
	s.mu.Lock()
	guilty := e.guilty
	s.mu.Unlock()
	if !guilty {
		hw, err = s.b.RunJob(j)
	}
	j.scheduled.Signal(nil)
	now := s.cfg.Clock.Now()

	s.mu.Lock()
	s.dispatching = nil
	s.idle.Broadcast()
	if guilty || err != nil || hw == nil {
		j.state = jobDone
		s.used -= j.Credits
		if j.LongRunning {
			e.lrInFlight--
		}
		s.mu.Unlock()
		hw.Put()
		switch {
		case guilty:
			err = fmt.Errorf("%v skipped: entity %q is guilty: %w", j, e.name, dma.ErrCanceled)
		case err != nil:
			err = fmt.Errorf("%v: run job: %w", j, err)
		}
		s.complete(j, err)
		s.doneInflight(e)
		return
	}
	j.hw = hw
	j.state = jobRunning
	j.startedAt = now
	if len(s.pending) == 0 {
		s.headSince = now
	}
	s.pending = append(s.pending, j)
	s.mu.Unlock()

	done := func() {
		s.mu.Lock()
		j.hwDone = true
		s.mu.Unlock()
		s.kick()
	}
	if !hw.AddCallback(func(*dma.Fence) { done() }) {
		done()
	}
}
