package sched

import (
	"fmt"
	"sync/atomic"

	"drmcr/kernelsim/dma"
)

// Destroy tears the entity down at any instant: jobs on the hardware are
// killed (Backend.TimedOutJob) and complete with ErrCanceled; queued jobs
// are cancelled with ErrCanceled once their dependencies and the entity's
// previous job have signalled (fence callbacks, no blocking wait); every
// job is freed exactly once; blocked Pushes fail with ErrDestroyed. It
// waits only for a RunJob call in progress for this entity and for the
// kills. In Firmware mode it also finalises the scheduler. Idempotent.
func (e *Entity) Destroy() {
	s := e.sched
	s.mu.Lock()
	if e.destroyed {
		s.mu.Unlock()
		return
	}
	e.kill(fmt.Errorf("entity %q destroyed: %w", e.name, ErrDestroyed))
	if e.paused {
		e.paused = false
		close(e.resumed)
	}
	if e.parking {
		e.parking = false
		unpark(e.parkedJobs)
		e.parkedJobs = nil
	}
	s.entities = without(s.entities, e)
	s.all = without(s.all, e)
	for s.dispatching == e {
		s.idle.Wait()
	}
	queued := e.queue
	e.queue = nil
	for _, j := range queued {
		j.state = jobDone
		if j.depCB != nil {
			j.depFence.RemoveCallback(j.depCB)
		}
	}
	var inflight []*Job
	now := s.cfg.Clock.Now()
	for i := 0; i < len(s.pending); {
		j := s.pending[i]
		if j.entity != e {
			i++
			continue
		}
		j.state = jobDone
		s.removePending(i, now)
		inflight = append(inflight, j)
	}
	e.inflight -= len(inflight)
	s.broadcast()
	firmware := s.cfg.Mode == Firmware
	s.mu.Unlock()

	// Newest first, so no later job of the entity starts on the hardware
	// in the gap left by killing the one before it.
	for k := len(inflight) - 1; k >= 0; k-- {
		j := inflight[k]
		s.b.TimedOutJob(j)
		s.mu.Lock()
		s.used -= j.Credits
		if j.LongRunning {
			e.lrInFlight--
		}
		hw := j.hw
		s.mu.Unlock()
		var err error = fmt.Errorf("%v killed: %w", j, dma.ErrCanceled)
		if hw.Signaled() && hw.Err() == nil {
			err = nil // it finished before the kill landed
		}
		s.complete(j, err)
	}
	s.cancelQueued(queued)
	s.kick()
	if firmware {
		s.Fini()
	}
}

// cancelQueued completes never-run jobs with ErrCanceled, each once its
// unsignalled dependencies and its predecessor have signalled, as
// drm_sched_entity_kill chains them.
func (s *Scheduler) cancelQueued(jobs []*Job) {
	var prev *dma.Fence
	for _, j := range jobs {
		waits := []*dma.Fence{prev}
		for _, d := range j.Deps[j.depIdx:] {
			if d.Context() != j.entity.context && d.Context() != j.entity.context+1 {
				waits = append(waits, d)
			}
		}
		prev = j.finished // signalled by complete(j), never before
		err := fmt.Errorf("%v canceled: entity %q destroyed: %w", j, j.entity.name, dma.ErrCanceled)
		afterAll(waits, func(inline bool) {
			if inline {
				s.complete(j, err)
			} else {
				// Off the signaller's goroutine: FreeJob may take locks
				// the signaller holds.
				go s.complete(j, err)
			}
		})
	}
}

// afterAll calls fn once every non-nil fence in fs has signalled; inline
// says whether that is now, on the caller's goroutine.
func afterAll(fs []*dma.Fence, fn func(inline bool)) {
	var left atomic.Int64
	left.Store(1) // held until registration is done
	for _, f := range fs {
		if f == nil {
			continue
		}
		left.Add(1)
		if !f.AddCallback(func(*dma.Fence) {
			if left.Add(-1) == 0 {
				fn(false)
			}
		}) {
			left.Add(-1)
		}
	}
	if left.Add(-1) == 0 {
		fn(true)
	}
}

func without(list []*Entity, e *Entity) []*Entity {
	for i, x := range list {
		if x == e {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

// Fini tears the scheduler down (drm_sched_fini): the scheduler goroutine
// exits, every entity is destroyed, pending jobs are killed and queued ones
// cancelled with ErrCanceled. Finished fences stay valid. Idempotent; must
// not be called from a Backend method of this scheduler.
func (s *Scheduler) Fini() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stop)
	}
	s.mu.Unlock()
	<-s.loopDone
	s.mu.Lock()
	all := append([]*Entity(nil), s.all...)
	s.mu.Unlock()
	for _, e := range all {
		e.Destroy()
	}
}
