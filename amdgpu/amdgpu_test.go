package amdgpu_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/amdgpu"
	"drmcr/images"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/uapi"
)

func blob(t *testing.T, priv *uapi.DriverPrivate) []byte {
	t.Helper()
	b, err := proto.Marshal(priv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeChecksTheBlob(t *testing.T) {
	good := &uapi.DriverPrivate{Version: 1, Driver: "amdgpu", Contexts: []*uapi.ContextState{{CtxId: 1,
		Jobs: []*uapi.JobState{{Bos: []*uapi.SubmitBo{{Handle: 1}}, BoIds: []uint64{4}}}}}}
	if _, err := amdgpu.Decode(blob(t, good)); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		blob []byte
		want string
	}{
		"other driver":  {blob(t, &uapi.DriverPrivate{Version: 1, Driver: "xe"}), `for "xe"`},
		"newer version": {blob(t, &uapi.DriverPrivate{Version: 2, Driver: "amdgpu"}), "version 2"},
		"garbage":       {[]byte{0xff, 0xff}, "driver blob"},
		"job BO count": {blob(t, &uapi.DriverPrivate{Version: 1, Driver: "amdgpu", Contexts: []*uapi.ContextState{{CtxId: 3,
			Jobs: []*uapi.JobState{{Bos: []*uapi.SubmitBo{{Handle: 1}}}}}}}), "context 3"},
	} {
		if _, err := amdgpu.Decode(tc.blob); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func TestDumpAndRestoreFile(t *testing.T) {
	p := amdgpu.New()
	cp := &uapi.FileCheckpoint{Driver: "amdgpu", DriverPrivate: blob(t, &uapi.DriverPrivate{Version: 1, Driver: "amdgpu"})}
	img, err := p.DumpFile(42, 7, cp)
	if err != nil {
		t.Fatal(err)
	}
	if img.Inode != 42 || img.Pid != 7 || img.DriverVersion != 1 || img.Driver != "amdgpu" {
		t.Fatalf("image %v", img)
	}
	rf, err := p.RestoreFile(img)
	if err != nil || rf.Inode != 42 || rf.State != cp {
		t.Fatalf("restore request %v, %v", rf, err)
	}
	img.DriverVersion = 2
	if _, err := p.RestoreFile(img); err == nil {
		t.Fatal("a blob whose version disagrees with the image was accepted")
	}
	if _, err := p.DumpFile(1, 1, &uapi.FileCheckpoint{Driver: "xe"}); err == nil {
		t.Fatal("an xe file was dumped by the amdgpu sub-plugin")
	}
}

// fileImage is a drm file image whose blob CheckFile passes: context 1
// with a preempted long-running compute job (fence 10) and a job queued
// behind it waiting on it (fence 11), sw_sync timeline 1 and syncobjs on
// the job, the timeline and a signalled fence.
func fileImage(t *testing.T, edit func(*uapi.DriverPrivate, *uapi.FileCheckpoint)) *images.DrmFile {
	t.Helper()
	st := &uapi.FileCheckpoint{
		Driver: "amdgpu", Minor: 128,
		Handles:   []*uapi.HandleState{{Handle: 1, BoId: 1}, {Handle: 2, BoId: 2}},
		Bos:       []*uapi.BoState{bos[1], bos[2]},
		JobFences: []uint64{10, 11}, WaitsOnFences: []uint64{10},
	}
	compute := &uapi.Command{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: 8192, Iterations: 100}
	fill := &uapi.Command{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, DstOff: 4096, Len: 4096, Value: 7}
	priv := &uapi.DriverPrivate{Version: 1, Driver: "amdgpu",
		Contexts: []*uapi.ContextState{{CtxId: 1, Submitted: 5, Completed: 3, Jobs: []*uapi.JobState{
			{FenceId: 10, LongRunning: true, Bos: []*uapi.SubmitBo{{Handle: 1}, {Handle: 2, Write: true}}, BoIds: []uint64{1, 2},
				Commands: []*uapi.Command{compute}, ProgressIter: 40, ProgressAcc: 99},
			{FenceId: 11, Bos: []*uapi.SubmitBo{{Handle: 1, Write: true}}, BoIds: []uint64{1},
				Commands: []*uapi.Command{fill}, DepFenceIds: []uint64{10}},
		}}},
		SwSyncs:  []*uapi.SwSyncState{{Timeline: 1, Value: 3}},
		Syncobjs: []*uapi.SyncobjState{{Handle: 1, Kind: uapi.SyncobjState_JOB, FenceId: 10}, {Handle: 2, Kind: uapi.SyncobjState_SW_SYNC, Timeline: 1, Point: 5}, {Handle: 3, Kind: uapi.SyncobjState_SIGNALED, Error: -5}},
	}
	if edit != nil {
		edit(priv, st)
	}
	st.DriverPrivate = blob(t, priv)
	return &images.DrmFile{Version: images.Version, Inode: 42, Driver: "amdgpu", DriverVersion: 1, State: st}
}

var bos = map[uint64]*uapi.BoState{
	1: {BoId: 1, Size: 8192, Domain: uapi.Domain_DOMAIN_VRAM, Minor: 128},
	2: {BoId: 2, Size: 4096, Domain: uapi.Domain_DOMAIN_GTT, Minor: 128},
	3: {BoId: 3, Size: 4096, Domain: uapi.Domain_DOMAIN_GTT, Minor: 128},
}

func boOf(id uint64) *uapi.BoState { return bos[id] }

// TestCheckFile: each kind of damage to a driver blob is a problem naming
// the image and the field; the good blob has none.
func TestCheckFile(t *testing.T) {
	p := amdgpu.New()
	if probs := p.CheckFile(fileImage(t, nil), boOf); len(probs) != 0 {
		t.Fatalf("problems in a good blob: %v", probs)
	}
	job := func(priv *uapi.DriverPrivate, i int) *uapi.JobState { return priv.Contexts[0].Jobs[i] }
	for _, tc := range []struct {
		name string
		edit func(*uapi.DriverPrivate, *uapi.FileCheckpoint)
		want string
	}{
		{"duplicate context id", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
			priv.Contexts = append(priv.Contexts, &uapi.ContextState{CtxId: 1})
		}, "drm-file-42.img: state.driver_private.contexts[1].ctx_id: context 1 is listed twice"},
		{"context id 0", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Contexts[0].CtxId = 0 },
			"contexts[0].ctx_id: 0 is not a context id (1 to 2147483647)"},
		{"context id near 2^32", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Contexts[0].CtxId = 1<<32 - 1 },
			"contexts[0].ctx_id: 4294967295 is not a context id"},
		{"more completed than submitted", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Contexts[0].Completed = 9 },
			"contexts[0].completed: 9 jobs completed of 5 submitted"},
		{"job command offset past its BO", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).Commands[0].DstOff = 8192 },
			"contexts[0].jobs[1].commands: gpu: command 0 (fill): dst range [8192,+4096) exceeds buffer 0 of 8192 bytes"},
		{"unknown command", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).Commands[0].Op = 77 },
			"jobs[1].commands: gpu: command 0 (op(77)): unknown opcode 77"},
		{"unknown job BO handle", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 0).Bos[1].Handle = 9 },
			"contexts[0].jobs[0].bos[1].handle: 9 is not a handle of the file"},
		{"job handle on another BO", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 0).Bos[1].Handle = 1 },
			"jobs[0].bos[1].handle: handle 1 is BO 1's, the job's BO is 2"},
		{"job BO not dumped", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).BoIds[0] = 99 },
			"jobs[1].bo_ids[0]: BO 99 is not a BO of the checkpoint"},
		{"job BO not the file's", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
			job(priv, 1).BoIds[0] = 3
			job(priv, 1).Bos[0].Handle = 0
		},
			"jobs[1].bo_ids[0]: BO 3 is not in the file's bos"},
		{"job BO count", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).BoIds = nil },
			"context 1: job with 1 BOs and 0 BO ids"},
		{"job waiting on a fence that does not exist", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).DepFenceIds = []uint64{999} },
			"jobs[1].dep_fence_ids[0]: fence 999 is missing from state.waits_on_fences"},
		{"job waiting on itself", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).DepFenceIds = []uint64{11} },
			"jobs[1].dep_fence_ids[0]: the job waits on its own fence 11: it could never run"},
		{"job waiting on a later job", func(priv *uapi.DriverPrivate, st *uapi.FileCheckpoint) {
			job(priv, 0).DepFenceIds = []uint64{11}
			st.WaitsOnFences = append(st.WaitsOnFences, 11)
		}, "jobs[0].dep_fence_ids[0]: the job waits on fence 11 of a job queued after it in context 1"},
		{"summary of fences waited on", func(_ *uapi.DriverPrivate, st *uapi.FileCheckpoint) { st.WaitsOnFences = []uint64{10, 12} },
			"state.waits_on_fences[1]: fence 12 is waited on by no saved job of the file"},
		{"summary of job fences", func(_ *uapi.DriverPrivate, st *uapi.FileCheckpoint) { st.JobFences = []uint64{10} },
			"jobs[1].fence_id: fence 11 is missing from state.job_fences"},
		{"two jobs of one fence", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
			job(priv, 1).FenceId = 10
			job(priv, 1).DepFenceIds = nil
		},
			"jobs[1].fence_id: fence 10 belongs to another job of the file too"},
		{"unknown progress command", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 0).ProgressCmd = 5 },
			"jobs[0].progress_cmd: gpu: progress at command 5 of a 1-command job"},
		{"progress past the iterations", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 0).ProgressIter = 101 },
			"jobs[0].progress_cmd: gpu: progress of 101 iterations in command 0 (compute of 100)"},
		{"progress of a job that never ran", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).ProgressCmd = 1 },
			"jobs[1].progress_cmd: a job that is not long-running never ran before the dump"},
		{"syncobj pointing at a fence that does not exist", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[0].FenceId = 77 },
			"state.driver_private.syncobjs[0].fence_id: syncobj 1 holds fence 77, which no saved job of the file has"},
		{"syncobj on a missing timeline", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[1].Timeline = 4 },
			"syncobjs[1].timeline: syncobj 2 holds a point of sw_sync timeline 4, which the file does not have"},
		{"syncobj of an unknown kind", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[2].Kind = 9 },
			"syncobjs[2].kind: 9 is not a syncobj state this sub-plugin knows"},
		{"syncobj error", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[2].Error = 5 },
			"syncobjs[2].error: 5 is neither 0 nor a negative errno"},
		{"syncobj twice", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[2].Handle = 1 },
			"syncobjs[2].handle: syncobj 1 is listed twice"},
		{"syncobj handle near 2^32", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[2].Handle = 1<<32 - 1 },
			"syncobjs[2].handle: 4294967295 is not a syncobj handle"},
		{"timeline twice", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
			priv.SwSyncs = append(priv.SwSyncs, &uapi.SwSyncState{Timeline: 1})
		}, "sw_syncs[1].timeline: timeline 1 is listed twice"},
		{"blob of another version", func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Version = 2 },
			"state.driver_private: driver blob version 2 is not supported"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			probs := p.CheckFile(fileImage(t, tc.edit), boOf)
			var msgs []string
			for _, pr := range probs {
				msgs = append(msgs, pr.String())
			}
			if all := strings.Join(msgs, "\n"); !strings.Contains(all, tc.want) {
				t.Errorf("problems\n%s\nlack %q", all, tc.want)
			}
		})
	}
}
