package xe_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
	"drmcr/xe"
)

// FuzzDecode: any bytes as an xe driver blob decode or fail, never panic;
// a blob that decodes is an xe blob of a version this sub-plugin reads;
// CheckFile names the image in each problem and refuses what does not
// decode; State never panics on what decodes; dumping and restoring a
// file with that blob agree with Decode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	blob, _ := proto.Marshal(&uapi.XeDriverPrivate{Version: 1, Driver: xe.Driver,
		Vms: []*uapi.XeVmState{{VmId: 1, Flags: uapi.XeVmCreateFlagLRMode, Bindings: []*uapi.XeBinding{{Va: 0x100000, Range: 4096, BoId: 1}}}},
		ExecQueues: []*uapi.XeExecQueueState{{VmId: 1, LongRunning: true, Queue: &uapi.ContextState{CtxId: 1,
			Jobs: []*uapi.JobState{{Bos: []*uapi.SubmitBo{{}}, BoIds: []uint64{1}, Windows: []*uapi.BoWindow{{Size: 4096}}}}}}}})
	f.Add(blob)
	f.Fuzz(func(t *testing.T, blob []byte) {
		p := xe.New()
		priv, err := xe.Decode(blob)
		cp := &uapi.FileCheckpoint{Driver: xe.Driver, DriverPrivate: blob,
			Handles: []*uapi.HandleState{{Handle: 1, BoId: 1}}, Bos: []*uapi.BoState{{BoId: 1, Size: 4096}, {BoId: 2, Size: 8192}}}
		bos := map[uint64]*uapi.BoState{1: cp.Bos[0], 2: cp.Bos[1]}
		img0 := &images.DrmFile{Version: images.Version, Inode: 7, Driver: xe.Driver, DriverVersion: 1, State: cp}
		probs := p.CheckFile(img0, func(id uint64) *uapi.BoState { return bos[id] })
		for _, pr := range probs {
			if pr.Image != images.FileName(7) || pr.Msg == "" {
				t.Fatalf("problem %+v", pr)
			}
		}
		if err != nil && len(probs) == 0 {
			t.Fatalf("CheckFile passed a blob Decode refuses: %v", err)
		}
		img, derr := p.DumpFile(7, 1, cp)
		if (err == nil) != (derr == nil) {
			t.Fatalf("Decode says %v, DumpFile says %v", err, derr)
		}
		if err != nil {
			return
		}
		if priv.Driver != xe.Driver || priv.Version != 1 {
			t.Fatalf("decoded a blob of %q version %d", priv.Driver, priv.Version)
		}
		if _, err := p.State(img); err != nil {
			t.Fatalf("State of a blob that decodes: %v", err)
		}
		rf, err := p.RestoreFile(img)
		if err != nil || rf.Inode != 7 || rf.State != cp {
			t.Fatalf("the dumped image does not restore: %v", err)
		}
	})
}
