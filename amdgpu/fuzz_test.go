package amdgpu_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/amdgpu"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// FuzzDecode: any bytes as a driver blob decode or fail, never panic; a
// blob that decodes is an amdgpu blob of a version this sub-plugin reads,
// with consistent jobs; the driver's check of the blob (CheckFile) names
// the image in each problem and refuses what does not decode; dumping
// and restoring a file with that blob agree with Decode. The seed corpus (testdata/fuzz) holds the blobs of
// real checkpoints (see internal/fuzzing).
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	blob, _ := proto.Marshal(&uapi.DriverPrivate{Version: 1, Driver: amdgpu.Driver, Contexts: []*uapi.ContextState{{CtxId: 1,
		Jobs: []*uapi.JobState{{Bos: []*uapi.SubmitBo{{Handle: 1}}, BoIds: []uint64{1, 2}}}}}})
	f.Add(blob)
	f.Fuzz(func(t *testing.T, blob []byte) {
		p := amdgpu.New()
		priv, err := amdgpu.Decode(blob)
		cp := &uapi.FileCheckpoint{Driver: amdgpu.Driver, DriverPrivate: blob,
			Handles: []*uapi.HandleState{{Handle: 1, BoId: 1}, {Handle: 2, BoId: 2}}, Bos: []*uapi.BoState{{BoId: 1, Size: 4096}, {BoId: 2, Size: 8192}}}
		// The driver's check of the blob: problems naming the image, never
		// a panic; a blob that does not decode is one.
		bos := map[uint64]*uapi.BoState{1: cp.Bos[0], 2: cp.Bos[1]}
		probs := p.CheckFile(&images.DrmFile{Version: images.Version, Inode: 7, Driver: amdgpu.Driver, DriverVersion: 1, State: cp}, func(id uint64) *uapi.BoState { return bos[id] })
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
		if priv.Driver != amdgpu.Driver || priv.Version != 1 {
			t.Fatalf("decoded a blob of %q version %d", priv.Driver, priv.Version)
		}
		for _, c := range priv.Contexts {
			for _, j := range c.Jobs {
				if len(j.Bos) != len(j.BoIds) {
					t.Fatalf("decoded a job with %d BOs and %d BO ids", len(j.Bos), len(j.BoIds))
				}
			}
		}
		if img.Version != images.Version || img.DriverVersion != priv.Version || img.Inode != 7 {
			t.Fatalf("dumped image %v", img)
		}
		rf, err := p.RestoreFile(img)
		if err != nil || rf.Inode != 7 || rf.State != cp {
			t.Fatalf("the dumped image does not restore: %v", err)
		}
	})
}
