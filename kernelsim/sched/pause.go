package sched

import (
	"context"
	"fmt"
	"strings"
)

// PauseReport says what a successful Pause left in the entity's queue.
type PauseReport struct {
	Entity    string
	Preempted []JobInfo // long-running jobs stopped by this pause, in order
	Queued    []JobInfo // everything in the queue (preempted jobs first)
}

// PauseError is Pause's error when ctx ends first: it lists what the
// entity still waits on. The entity stays paused.
type PauseError struct {
	Entity  string
	Waiting []string
	Err     error // ctx's error
}

func (e *PauseError) Error() string {
	return fmt.Sprintf("pause entity %q: %v; still waiting on: %s", e.Entity, e.Err, strings.Join(e.Waiting, "; "))
}

func (e *PauseError) Unwrap() error { return e.Err }

// Pause stops the entity taking new work (Push blocks), runs its queued and
// in-flight regular jobs to completion and preempts its long-running jobs,
// which go back to the head of the queue with their progress and an
// unsignalled finished fence. It returns once nothing of the entity is on
// the hardware and its queue is empty or starts with a long-running job.
// When ctx ends first it returns a *PauseError naming what it waits on and
// leaves the entity paused: the caller decides whether to Resume.
func (e *Entity) Pause(ctx context.Context) (*PauseReport, error) {
	s := e.sched
	s.mu.Lock()
	if e.destroyed {
		err := e.deadErr
		s.mu.Unlock()
		return nil, fmt.Errorf("pause entity %q: %w", e.name, err)
	}
	if !e.paused {
		e.paused = true
		e.pauseGen++
		e.resumed = make(chan struct{})
	}
	s.mu.Unlock()
	s.kick()
	for {
		s.mu.Lock()
		if e.destroyed {
			err := e.deadErr
			s.mu.Unlock()
			return nil, fmt.Errorf("pause entity %q: %w", e.name, err)
		}
		if e.inflight == 0 && (len(e.queue) == 0 || e.queue[0].LongRunning || e.queue[0].blockedOnParked()) {
			r := &PauseReport{Entity: e.name}
			if !e.parking {
				// What is left will not run before Resume: other
				// entities' jobs may wait on it and still drain.
				e.parking = true
				e.parkedJobs = append([]*Job(nil), e.queue...)
				park(e.parkedJobs)
			}
			for _, j := range e.queue {
				if j.preemptGen == e.pauseGen {
					r.Preempted = append(r.Preempted, j.info())
				}
				r.Queued = append(r.Queued, j.info())
			}
			s.mu.Unlock()
			return r, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-parkedChanged():
		case <-ctx.Done():
			s.mu.Lock()
			err := &PauseError{Entity: e.name, Waiting: e.waitingOn(), Err: ctx.Err()}
			s.mu.Unlock()
			return nil, err
		}
	}
}

// waitingOn describes what keeps the entity from being drained. Caller
// holds mu.
func (e *Entity) waitingOn() []string {
	s := e.sched
	now := s.cfg.Clock.Now()
	var out []string
	for _, j := range s.pending {
		if j.entity != e {
			continue
		}
		what := fmt.Sprintf("%v running on the hardware of %q for %v", j, s.cfg.Name, now-j.startedAt)
		switch {
		case j.notPreemptible:
			what += " (long-running, not preemptible)"
		case j.preemptAsked:
			what += " (preemption requested)"
		case j.hwDone:
			what += " (completed, retiring)"
		}
		out = append(out, what)
	}
	if s.dispatching == e {
		out = append(out, "a job being handed to the hardware")
	}
	if len(e.queue) > 0 && !e.queue[0].LongRunning && !e.queue[0].blockedOnParked() {
		j := e.queue[0]
		if j.depIdx < len(j.Deps) && j.depFence != nil && !j.depFence.Signaled() {
			out = append(out, fmt.Sprintf("%v waiting on dependency %v", j, j.depFence))
		} else {
			out = append(out, fmt.Sprintf("%v queued, waiting for ring %q (%d/%d credits in use)", j, s.cfg.Name, s.used, s.cfg.Credits))
		}
		if n := len(e.queue) - 1; n > 0 {
			out = append(out, fmt.Sprintf("%d more queued job(s) behind it", n))
		}
	}
	if len(out) == 0 {
		out = append(out, "nothing (drained as the deadline hit)")
	}
	return out
}

// Resume lets the entity take work again: blocked Pushes proceed and
// preempted jobs run again from their saved progress.
func (e *Entity) Resume() {
	s := e.sched
	s.mu.Lock()
	var wasParked []*Job
	if e.paused {
		e.paused = false
		close(e.resumed)
		s.broadcast()
		if e.parking {
			e.parking = false
			wasParked, e.parkedJobs = e.parkedJobs, nil
		}
	}
	s.mu.Unlock()
	unpark(wasParked)
	s.kick()
}
