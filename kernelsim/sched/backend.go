package sched

import "drmcr/kernelsim/dma"

// Backend is the driver side of the scheduler (drm_sched_backend_ops).
// The scheduler never calls it with its own lock held; the calls must not
// block unboundedly and must not call Fini on the same scheduler.
type Backend interface {
	// RunJob starts j on the hardware and returns its hardware fence (the
	// scheduler takes over that reference). A nil fence with a nil error
	// means the job completed synchronously; an error fails the job.
	RunJob(j *Job) (*dma.Fence, error)
	// TimedOutJob stops j on the hardware; when it returns the job no
	// longer touches its buffers. Used for TDR and to kill jobs on Destroy.
	TimedOutJob(j *Job)
	// Preempt asks a job to stop at its next preemption point and signal
	// its hardware fence with ErrPreempted: a long-running job when its
	// entity pauses, and any job whose entity is not paused that is in the
	// way of one that drains for a pause. It returns false if the job
	// cannot be preempted; the scheduler then waits for it.
	Preempt(j *Job) bool
	// FreeJob is called exactly once per job, whatever happened to it.
	FreeJob(j *Job)
}
