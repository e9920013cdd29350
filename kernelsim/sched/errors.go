package sched

import "errors"

var (
	// ErrGuilty: the entity had a job time out; it takes no new work
	// (amdgpu returns -ECANCELED for a guilty context).
	ErrGuilty = errors.New("entity is guilty of a GPU hang")
	// ErrDestroyed: the entity or its scheduler has been torn down.
	ErrDestroyed = errors.New("entity destroyed")
	// ErrPreempted is the hardware-fence error a backend uses to say a
	// long-running job stopped at a preemption point with its progress
	// saved. The scheduler requeues the job instead of completing it.
	ErrPreempted = errors.New("job preempted")
)
