// Package sched models the DRM GPU scheduler (drm_sched): entities queue
// jobs, a scheduler picks ready jobs fairly and hands them to a Backend
// (the driver's run_job), tracks their hardware fences, handles timeouts
// (TDR), and frees every job exactly once.
//
// Two modes, chosen per driver:
//
//   - Classic: one Scheduler per hardware ring shared by many entities;
//     ready entities are served round-robin, an entity's jobs run in order,
//     and at most Config.Credits credits of jobs are on the ring. As in
//     drm_sched, a pick under way while dependencies signal may pass an
//     entity that turns ready behind it and serve a later one first.
//   - Firmware: one Scheduler per entity (Xe, panthor); each entity's jobs
//     run on their own firmware queue, in parallel with other entities', so
//     completion is out of order across entities. Destroying the entity
//     also finalises its scheduler.
//
// Behaviour chosen where Linux leaves room, or differs on purpose:
//
//   - A job becomes runnable once every dependency has signalled, whatever
//     its error: like drm_sched, a failed dependency does not fail the job
//     and its error is not propagated to the finished fence. Dependencies on
//     the entity's own fences are skipped (the entity runs in order), and
//     NewJob keeps only the latest fence per context
//     (drm_sched_job_add_dependency).
//   - The finished fence signals with the hardware fence's error. It is
//     signalled after Backend.FreeJob has returned and after the job
//     dropped its fence references, so a waiter that sees it signalled also
//     sees the job gone (LiveJobs) and the backend's resources released.
//     (Linux signals first and frees later from a worker.)
//   - Timeout (TDR) runs from when a job reaches the head of the ring, as
//     drm_sched restarts its timer at each completion. On expiry:
//     Backend.TimedOutJob, the finished fence signals ErrTimedOut, the
//     entity becomes guilty (Push fails with ErrGuilty) and its jobs already
//     queued are completed with ErrCanceled without reaching the hardware
//     (amdgpu skips the IBs of a guilty context). Other entities carry on.
//     Long-running jobs have no timeout.
//   - Destroy kills in-flight jobs (Backend.TimedOutJob, finished fence
//     ErrCanceled) and cancels queued ones with ErrCanceled, without
//     blocking. As in drm_sched_entity_kill, a cancelled queued job's fence
//     signals only after its dependencies and the previous job of the
//     entity have signalled (through fence callbacks, never a blocking
//     wait), so a consumer ordered after it never overtakes the work it was
//     ordered after. Linux uses -ESRCH for killed jobs; this model uses
//     ErrCanceled (-ECANCELED) as the project asks.
//   - A long-running job occupies its entity: later jobs of the entity are
//     not dispatched until it completes or is preempted, so preemption
//     never reorders an entity's jobs.
//   - Push consumes the job whatever happens: on error the job's finished
//     fence signals ErrCanceled and the job is freed. Take a reference on
//     Finished() before Push if you need the fence afterwards.
package sched
