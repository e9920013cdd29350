package sched

import (
	"sync"

	"drmcr/kernelsim/dma"
)

// Parked work: once a paused entity has drained, the jobs left in its
// queue (preempted long-running jobs and what was queued behind them) will
// not run before the entity resumes. Their finished fences are "parked".
// A job of another entity that waits on a parked fence cannot run either,
// and must not keep that entity's Pause from completing: a checkpoint
// records it, with the dependency, as work to restore.
var parked = struct {
	sync.Mutex
	fences  map[*dma.Fence]int // finished fence -> parking entities (1)
	changed chan struct{}      // closed and replaced on every change
}{fences: map[*dma.Fence]int{}, changed: make(chan struct{})}

// Parked reports whether f is the finished fence of a job parked in a
// drained, paused entity.
func Parked(f *dma.Fence) bool {
	parked.Lock()
	defer parked.Unlock()
	return parked.fences[f] > 0
}

func parkedChanged() <-chan struct{} {
	parked.Lock()
	defer parked.Unlock()
	return parked.changed
}

// park records the finished fences of jobs; unpark forgets them.
func park(jobs []*Job) { setParked(jobs, 1) }

func unpark(jobs []*Job) { setParked(jobs, -1) }

func setParked(jobs []*Job, delta int) {
	if len(jobs) == 0 {
		return
	}
	parked.Lock()
	defer parked.Unlock()
	for _, j := range jobs {
		if n := parked.fences[j.finished] + delta; n > 0 {
			parked.fences[j.finished] = n
		} else {
			delete(parked.fences, j.finished)
		}
	}
	close(parked.changed)
	parked.changed = make(chan struct{})
}

// blockedOnParked reports whether every dependency j still waits on is
// parked work. Caller holds the scheduler's mu.
func (j *Job) blockedOnParked() bool {
	if j.depIdx >= len(j.Deps) {
		return false
	}
	for _, d := range j.Deps[j.depIdx:] {
		if !d.Signaled() && !Parked(d) {
			return false
		}
	}
	return true
}
