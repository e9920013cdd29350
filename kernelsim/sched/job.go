package sched

import (
	"fmt"
	"sync/atomic"
	"time"

	"drmcr/kernelsim/dma"
)

type jobState int

const (
	jobArmed       jobState = iota // created by NewJob
	jobQueued                      // in its entity's queue
	jobDispatching                 // being handed to Backend.RunJob
	jobRunning                     // on the hardware
	jobDone                        // retired, killed or cancelled
)

var (
	liveJobs   atomic.Int64
	jobIDs     atomic.Uint64
	freeErrors atomic.Int64
)

// LiveJobs counts jobs created and not yet freed (leak checks).
func LiveJobs() int { return int(liveJobs.Load()) }

// FreeErrors counts attempts to free a job twice. It must stay zero.
func FreeErrors() int64 { return freeErrors.Load() }

// Job is a unit of work for the scheduler (drm_sched_job).
type Job struct {
	// Deps are the fences the job waits for; the job owns these
	// references and drops them when freed.
	Deps []*dma.Fence
	// Credits is the ring space the job takes (at least 1, at most the
	// scheduler's Credits).
	Credits int
	// LongRunning jobs have no timeout and are preempted, not waited for,
	// by Pause.
	LongRunning bool
	// Payload is the backend's data (for package gpu, *gpu.JobPayload).
	Payload any

	id        uint64
	entity    *Entity
	sched     *Scheduler
	scheduled *dma.Fence
	finished  *dma.Fence
	freed     atomic.Bool

	// Guarded by sched.mu.
	state          jobState
	pushed         bool
	depIdx         int
	depFence       *dma.Fence
	depCB          *dma.Callback
	hw             *dma.Fence
	hwDone         bool
	startedAt      time.Duration
	preemptAsked   bool
	notPreemptible bool
	preemptions    int
	preemptGen     uint64 // entity pauseGen at the last preemption
}

// ID is a process-wide unique job number.
func (j *Job) ID() uint64 { return j.id }

// Seqno is the job's position on its entity's timeline (its fences' seqno).
func (j *Job) Seqno() uint64 { return j.finished.Seqno() }

// Entity is the entity the job was created on.
func (j *Job) Entity() *Entity { return j.entity }

// Finished is the scheduler fence that signals when the job is done. It is
// borrowed: valid as long as the job lives; Get it to keep it longer.
func (j *Job) Finished() *dma.Fence { return j.finished }

// Scheduled is the fence that signals when the job is handed to the
// hardware (or cancelled). Borrowed like Finished.
func (j *Job) Scheduled() *dma.Fence { return j.scheduled }

func (j *Job) String() string {
	return fmt.Sprintf("job %d (%s seqno %d)", j.id, j.entity.name, j.Seqno())
}

// JobInfo describes a job for reports and debug views.
type JobInfo struct {
	ID          uint64
	Seqno       uint64
	LongRunning bool
	Preemptions int
}

func (j *Job) info() JobInfo {
	return JobInfo{ID: j.id, Seqno: j.Seqno(), LongRunning: j.LongRunning, Preemptions: j.preemptions}
}

// dedupDeps keeps the latest fence per context and drops nils, releasing
// the references it discards.
func dedupDeps(deps []*dma.Fence) []*dma.Fence {
	var out []*dma.Fence
next:
	for _, f := range deps {
		if f == nil {
			continue
		}
		for i, g := range out {
			if g.Context() == f.Context() {
				if f.IsLater(g) {
					out[i] = f
					g.Put()
				} else {
					f.Put()
				}
				continue next
			}
		}
		out = append(out, f)
	}
	return out
}

// complete frees j through the backend and then signals its fences with
// err. Exactly one caller wins; others are counted in FreeErrors.
func (s *Scheduler) complete(j *Job, err error) {
	if !j.freed.CompareAndSwap(false, true) {
		freeErrors.Add(1)
		return
	}
	s.b.FreeJob(j)
	liveJobs.Add(-1)
	for _, d := range j.Deps {
		d.Put()
	}
	s.mu.Lock()
	hw := j.hw
	j.hw = nil
	s.mu.Unlock()
	hw.Put()
	j.scheduled.Signal(nil)
	j.scheduled.Put()
	fin := j.finished
	// Drop the job's reference first: a waiter woken by the signal finds
	// the job's references gone.
	fin.Put()
	fin.Signal(err)
}
