package xe_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/uapi"
	"drmcr/xe"
)

func blob(t *testing.T, priv *uapi.XeDriverPrivate) []byte {
	t.Helper()
	b, err := proto.Marshal(priv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeChecksTheBlob(t *testing.T) {
	if _, err := xe.Decode(blob(t, &uapi.XeDriverPrivate{Version: 1, Driver: "xe"})); err != nil {
		t.Fatal(err)
	}
	amd, _ := proto.Marshal(&uapi.DriverPrivate{Version: 1, Driver: "amdgpu"})
	for name, tc := range map[string]struct {
		blob []byte
		want string
	}{
		"amdgpu's blob": {amd, `for "amdgpu"`},
		"newer version": {blob(t, &uapi.XeDriverPrivate{Version: 2, Driver: "xe"}), "version 2"},
		"garbage":       {[]byte{0xff, 0xff}, "driver blob"},
		"no queue":      {blob(t, &uapi.XeDriverPrivate{Version: 1, Driver: "xe", ExecQueues: []*uapi.XeExecQueueState{{VmId: 1}}}), "no queue state"},
	} {
		if _, err := xe.Decode(tc.blob); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func TestDumpAndRestoreFile(t *testing.T) {
	p := xe.New()
	cp := &uapi.FileCheckpoint{Driver: "xe", DriverPrivate: blob(t, &uapi.XeDriverPrivate{Version: 1, Driver: "xe"})}
	img, err := p.DumpFile(42, 7, cp)
	if err != nil {
		t.Fatal(err)
	}
	if img.Inode != 42 || img.Pid != 7 || img.DriverVersion != 1 || img.Driver != "xe" {
		t.Fatalf("image %v", img)
	}
	if rf, err := p.RestoreFile(img); err != nil || rf.Inode != 42 || rf.State != cp {
		t.Fatalf("restore request %v, %v", rf, err)
	}
	img.DriverVersion = 2
	if _, err := p.RestoreFile(img); err == nil {
		t.Fatal("a blob whose version disagrees with the image was accepted")
	}
	if _, err := p.DumpFile(1, 1, &uapi.FileCheckpoint{Driver: "amdgpu"}); err == nil {
		t.Fatal("an amdgpu file was dumped by the xe sub-plugin")
	}
}

var bos = map[uint64]*uapi.BoState{
	1: {BoId: 1, Size: 4 * 4096, Domain: uapi.Domain_DOMAIN_VRAM, Minor: 129},
	2: {BoId: 2, Size: 4096, Domain: uapi.Domain_DOMAIN_GTT, Minor: 129},
	3: {BoId: 3, Size: 4096, Domain: uapi.Domain_DOMAIN_GTT, Minor: 129},
}

func boOf(id uint64) *uapi.BoState { return bos[id] }

// fileImage is an xe file image whose blob CheckFile passes: a
// long-running VM 1 binding BO 1 in two pieces and BO 2, exec queue 1 on
// it with a preempted compute (fence 10) addressing windows of its BOs,
// a regular VM 2 with exec queue 2, and a syncobj on the job.
func fileImage(t *testing.T, edit func(*uapi.XeDriverPrivate, *uapi.FileCheckpoint)) *images.DrmFile {
	t.Helper()
	st := &uapi.FileCheckpoint{
		Driver: "xe", Minor: 129,
		Handles:   []*uapi.HandleState{{Handle: 1, BoId: 1}},
		Bos:       []*uapi.BoState{bos[1], bos[2]},
		JobFences: []uint64{10},
	}
	compute := &uapi.Command{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: 4096, Iterations: 100}
	priv := &uapi.XeDriverPrivate{Version: 1, Driver: "xe",
		Vms: []*uapi.XeVmState{
			{VmId: 1, Flags: uapi.XeVmCreateFlagLRMode, Bindings: []*uapi.XeBinding{
				{Va: 0x100000, Range: 4096, BoId: 1}, {Va: 0x103000, Range: 4096, BoId: 1, BoOffset: 3 * 4096}, {Va: 0x200000, Range: 4096, BoId: 2}}},
			{VmId: 2},
		},
		ExecQueues: []*uapi.XeExecQueueState{
			{VmId: 1, LongRunning: true, Preemptions: 1, Queue: &uapi.ContextState{CtxId: 1, Submitted: 1, Jobs: []*uapi.JobState{
				{FenceId: 10, LongRunning: true, Bos: []*uapi.SubmitBo{{}, {Write: true}}, BoIds: []uint64{1, 2},
					Windows:  []*uapi.BoWindow{{Offset: 3 * 4096, Size: 4096}, {Size: 4096}},
					Commands: []*uapi.Command{compute}, ProgressIter: 40}}}},
			{VmId: 2, Queue: &uapi.ContextState{CtxId: 2}},
		},
		Syncobjs: []*uapi.SyncobjState{{Handle: 1, Kind: uapi.SyncobjState_JOB, FenceId: 10}},
	}
	if edit != nil {
		edit(priv, st)
	}
	st.DriverPrivate = blob(t, priv)
	return &images.DrmFile{Version: images.Version, Inode: 42, Driver: "xe", DriverVersion: 1, State: st}
}

// TestCheckFile: each kind of damage to an xe blob is a problem naming
// the image and the field; the good blob has none.
func TestCheckFile(t *testing.T) {
	p := xe.New()
	if probs := p.CheckFile(fileImage(t, nil), boOf); len(probs) != 0 {
		t.Fatalf("problems in a good blob: %v", probs)
	}
	for _, tc := range []struct {
		name string
		edit func(*uapi.XeDriverPrivate, *uapi.FileCheckpoint)
		want string
	}{
		{"VM id 0", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[1].VmId = 0 }, "vms[1].vm_id: 0 is not a VM id"},
		{"VM twice", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[1].VmId = 1 }, "VM 1 is listed twice"},
		{"VM flags", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[1].Flags = 8 }, "unknown flags"},
		{"unaligned binding", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[0].Bindings[0].Va++ }, "not page aligned"},
		{"overlapping bindings", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[0].Bindings[1].Va = 0x100000 }, "bindings[1].va: 0x100000 overlaps"},
		{"binding outside VA", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[0].Bindings[2].Va = 1 << 48 }, "outside the xe address space"},
		{"binding outside BO", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[0].Bindings[2].BoOffset = 4096 }, "outside the 4096-byte BO 2"},
		{"binding of an unknown BO", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[0].Bindings[2].BoId = 9 }, "BO 9 is not a BO of the checkpoint"},
		{"binding of another file's BO", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Vms[0].Bindings[2].BoId = 3 }, "BO 3 is not in the file's bos"},
		{"queue on no VM", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.ExecQueues[1].VmId = 5 }, "VM 5 is not in the blob"},
		{"queue mode", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.ExecQueues[1].LongRunning = true }, "exec_queues[1].long_running: true, but VM 2's mode is false"},
		{"queue id twice", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.ExecQueues[1].Queue.CtxId = 1 }, "context 1 is listed twice"},
		{"window outside BO", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) {
			p.ExecQueues[0].Queue.Jobs[0].Windows[0].Offset = 4 * 4096
		}, "exec_queues[0].queue.jobs[0].windows[0]"},
		{"window count", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) {
			p.ExecQueues[0].Queue.Jobs[0].Windows = p.ExecQueues[0].Queue.Jobs[0].Windows[:1]
		}, "1 windows for 2 BOs"},
		{"command beyond its window", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) {
			p.ExecQueues[0].Queue.Jobs[0].Commands[0].Len = 8192
		}, "queue.jobs[0].commands"},
		{"syncobj on no job", func(p *uapi.XeDriverPrivate, _ *uapi.FileCheckpoint) { p.Syncobjs[0].FenceId = 11 }, "which no saved job of the file has"},
		{"summary", func(_ *uapi.XeDriverPrivate, st *uapi.FileCheckpoint) { st.JobFences = nil }, "missing from state.job_fences"},
	} {
		probs := p.CheckFile(fileImage(t, tc.edit), boOf)
		found := false
		for _, pr := range probs {
			if strings.Contains(pr.String(), tc.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: problems %v, want one saying %q", tc.name, probs, tc.want)
		}
	}
}

func TestState(t *testing.T) {
	ds, err := xe.New().State(fileImage(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Contexts) != 2 || len(ds.Syncobjs) != 1 || len(ds.Objects) != 7 ||
		ds.Objects[0] != "VM 1 (long-running): 3 binding(s)" || !strings.Contains(ds.Objects[5], "exec queue 1 on VM 1, long-running true, preempted 1 time(s)") {
		t.Fatalf("state %+v", ds)
	}
}
