// Package drvstate checks the records that every driver blob of
// kernelsim is built from (contexts or exec queues with their saved jobs,
// syncobjs, sw_sync timelines), for the driver sub-plugins' CheckFile:
// each driver lays out its own blob and calls this for the parts it
// shares with the others.
package drvstate

import (
	"fmt"

	"drmcr/images"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/uapi"
)

// Context is a context record and the blob field it sits in (for
// problems: "state.driver_private.contexts[0]").
type Context struct {
	Field string
	State *uapi.ContextState
}

// Blob is the shared part of one drm file's driver blob.
type Blob struct {
	Field    string // the blob's field in the image, "state.driver_private"
	Contexts []Context
	Syncobjs []*uapi.SyncobjState
	SwSyncs  []*uapi.SwSyncState
}

// Check checks every field of the shared records of a drm file image's
// blob, creating nothing: context ids (1 to 2^31-1, once each), their
// saved jobs (BO ids of the checkpoint and of the file, handles of the
// file on them, commands within their BOs or the windows of them the job
// addresses, where the job stands, fences waited on that a job
// provides), sw_sync timelines and syncobjs (kinds, the jobs and
// timelines they point at), and that the file's summary of its jobs'
// fences is the blob's. bo gives a BO of the checkpoint by id (nil for
// none). It returns the problems and the fences of the saved jobs.
func Check(img *images.DrmFile, b Blob, bo func(id uint64) *uapi.BoState) ([]images.Problem, map[uint64]bool) {
	name := images.FileName(img.Inode)
	var out []images.Problem
	add := func(field, format string, args ...any) {
		out = append(out, images.Problemf(name, field, format, args...))
	}
	st := img.State
	blob := b.Field
	summaryJobs, summaryWaits := setOf(st.JobFences), setOf(st.WaitsOnFences)
	fileBOs := make(map[uint64]bool, len(st.Bos))
	for _, b := range st.Bos {
		fileBOs[b.BoId] = true
	}
	handles := make(map[uint32]uint64, len(st.Handles))
	for _, h := range st.Handles {
		handles[h.Handle] = h.BoId
	}

	// Jobs run in order within a context: a job may wait on any job but
	// itself and those queued after it in its context.
	jobs := map[uint64]bool{}
	var jobFences, waits []uint64
	ctxs := make(map[uint32]bool, len(b.Contexts))
	for _, c := range b.Contexts {
		cs, cf := c.State, c.Field
		if cs.CtxId == 0 || cs.CtxId > uapi.MaxID {
			add(cf+".ctx_id", "%d is not a context id (1 to %d)", cs.CtxId, uapi.MaxID)
		} else if ctxs[cs.CtxId] {
			add(cf+".ctx_id", "context %d is listed twice", cs.CtxId)
		}
		ctxs[cs.CtxId] = true
		if cs.Completed > cs.Submitted {
			add(cf+".completed", "%d jobs completed of %d submitted", cs.Completed, cs.Submitted)
		}
		later := map[uint64]bool{}
		for _, j := range cs.Jobs {
			later[j.FenceId] = true
		}
		for k, j := range cs.Jobs {
			jf := fmt.Sprintf("%s.jobs[%d]", cf, k)
			delete(later, j.FenceId)
			switch {
			case j.FenceId == 0:
				add(jf+".fence_id", "0 is no fence")
			case jobs[j.FenceId]:
				add(jf+".fence_id", "fence %d belongs to another job of the file too", j.FenceId)
			}
			jobs[j.FenceId] = true
			jobFences = append(jobFences, j.FenceId)
			if j.FenceId != 0 && !summaryJobs[j.FenceId] {
				add(jf+".fence_id", "fence %d is missing from state.job_fences, the file's list of its saved jobs' fences", j.FenceId)
			}
			out = append(out, checkJob(name, jf, j, bo, fileBOs, handles)...)
			for d, dep := range j.DepFenceIds {
				df := fmt.Sprintf("%s.dep_fence_ids[%d]", jf, d)
				switch {
				case dep == j.FenceId:
					add(df, "the job waits on its own fence %d: it could never run", dep)
				case later[dep]:
					add(df, "the job waits on fence %d of a job queued after it in context %d: neither could ever run", dep, cs.CtxId)
				case !summaryWaits[dep]:
					add(df, "fence %d is missing from state.waits_on_fences, the list of fences the file's saved work waits on, which are checked against the saved jobs of every file", dep)
				}
				waits = append(waits, dep)
			}
		}
	}
	// The core checks across files that every fence waited on is some
	// job's: its summary must be the blob's.
	blobJobs, blobWaits := setOf(jobFences), setOf(waits)
	for i, id := range st.JobFences {
		if !blobJobs[id] {
			add(fmt.Sprintf("state.job_fences[%d]", i), "fence %d is no saved job's of the file", id)
		}
	}
	for i, id := range st.WaitsOnFences {
		if !blobWaits[id] {
			add(fmt.Sprintf("state.waits_on_fences[%d]", i), "fence %d is waited on by no saved job of the file", id)
		}
	}

	timelines := make(map[uint32]bool, len(b.SwSyncs))
	for i, ts := range b.SwSyncs {
		f := fmt.Sprintf("%s.sw_syncs[%d].timeline", blob, i)
		switch {
		case ts.Timeline == 0 || ts.Timeline > uapi.MaxID:
			add(f, "%d is not a timeline id (1 to %d)", ts.Timeline, uapi.MaxID)
		case timelines[ts.Timeline]:
			add(f, "timeline %d is listed twice", ts.Timeline)
		}
		timelines[ts.Timeline] = true
	}
	syncobjs := make(map[uint32]bool, len(b.Syncobjs))
	for i, so := range b.Syncobjs {
		f := fmt.Sprintf("%s.syncobjs[%d]", blob, i)
		switch {
		case so.Handle == 0 || so.Handle > uapi.MaxID:
			add(f+".handle", "%d is not a syncobj handle (1 to %d)", so.Handle, uapi.MaxID)
		case syncobjs[so.Handle]:
			add(f+".handle", "syncobj %d is listed twice", so.Handle)
		}
		syncobjs[so.Handle] = true
		switch so.Kind {
		case uapi.SyncobjState_EMPTY:
		case uapi.SyncobjState_SIGNALED:
			if so.Error > 0 || so.Error < -4095 {
				add(f+".error", "%d is neither 0 nor a negative errno", so.Error)
			}
		case uapi.SyncobjState_JOB:
			if !jobs[so.FenceId] {
				add(f+".fence_id", "syncobj %d holds fence %d, which no saved job of the file has", so.Handle, so.FenceId)
			}
		case uapi.SyncobjState_SW_SYNC:
			if !timelines[so.Timeline] {
				add(f+".timeline", "syncobj %d holds a point of sw_sync timeline %d, which the file does not have", so.Handle, so.Timeline)
			}
		default:
			add(f+".kind", "%d is not a syncobj state this sub-plugin knows", int32(so.Kind))
		}
	}
	return out, jobs
}

// checkJob checks one saved job: its BOs, its commands against them and
// where it stands.
func checkJob(name, jf string, j *uapi.JobState, bo func(uint64) *uapi.BoState, fileBOs map[uint64]bool, handles map[uint32]uint64) []images.Problem {
	var out []images.Problem
	add := func(field, format string, args ...any) {
		out = append(out, images.Problemf(name, field, format, args...))
	}
	if len(j.Bos) != len(j.BoIds) {
		add(jf+".bo_ids", "%d BO ids for %d BOs", len(j.BoIds), len(j.Bos))
		return out
	}
	if len(j.Windows) != 0 && len(j.Windows) != len(j.BoIds) {
		add(jf+".windows", "%d windows for %d BOs", len(j.Windows), len(j.BoIds))
		return out
	}
	sizes := make([]uint64, len(j.BoIds))
	known := true
	for i, id := range j.BoIds {
		b := bo(id)
		if b == nil {
			add(fmt.Sprintf("%s.bo_ids[%d]", jf, i), "BO %d is not a BO of the checkpoint", id)
			known = false
			continue
		}
		sizes[i] = b.Size
		if len(j.Windows) == len(j.BoIds) {
			w := j.Windows[i]
			if w.Size == 0 || w.Offset > b.Size || w.Size > b.Size-w.Offset {
				add(fmt.Sprintf("%s.windows[%d]", jf, i), "[%d, +%d) is not a non-empty range of the %d-byte BO %d", w.Offset, w.Size, b.Size, id)
				known = false
			}
			sizes[i] = w.Size
		}
		if !fileBOs[id] {
			add(fmt.Sprintf("%s.bo_ids[%d]", jf, i), "BO %d is not in the file's bos", id)
		}
		// A handle the task closed since the submit is 0 (the job holds
		// the BO by id); any other must still be that BO's.
		if h := j.Bos[i].Handle; h != 0 {
			if got, ok := handles[h]; !ok {
				add(fmt.Sprintf("%s.bos[%d].handle", jf, i), "%d is not a handle of the file", h)
			} else if got != id {
				add(fmt.Sprintf("%s.bos[%d].handle", jf, i), "handle %d is BO %d's, the job's BO is %d", h, got, id)
			}
		}
	}
	if len(j.Commands) > gpu.MaxCommands {
		add(jf+".commands", "%d commands, at most %d", len(j.Commands), gpu.MaxCommands)
		return out
	}
	cmds := make([]gpu.Command, len(j.Commands))
	for i, c := range j.Commands {
		cmds[i] = command(c)
	}
	if known {
		if err := gpu.Validate(cmds, len(sizes), sizes); err != nil {
			add(jf+".commands", "%v", err)
		}
	}
	p := gpu.Progress{Cmd: int(j.ProgressCmd), Iter: j.ProgressIter, Acc: j.ProgressAcc}
	if !j.LongRunning && p != (gpu.Progress{}) {
		add(jf+".progress_cmd", "a job that is not long-running never ran before the dump, but its progress is command %d, iteration %d", p.Cmd, p.Iter)
	} else if err := gpu.CheckProgress(cmds, p); err != nil {
		add(jf+".progress_cmd", "%v", err)
	}
	return out
}

// command is a saved command as the GPU runs it.
func command(c *uapi.Command) gpu.Command {
	return gpu.Command{
		Op: gpu.Op(c.Op), Dst: int(c.Dst), Src: int(c.Src),
		DstOff: c.DstOff, SrcOff: c.SrcOff, Len: c.Len,
		Value: c.Value, Iterations: c.Iterations,
	}
}

func setOf(ids []uint64) map[uint64]bool {
	m := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}
