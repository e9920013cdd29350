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
// with consistent jobs; dumping and restoring a file with that blob
// agree with Decode. The seed corpus (testdata/fuzz) holds the blobs of
// real checkpoints (see internal/fuzzing).
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	blob, _ := proto.Marshal(&uapi.DriverPrivate{Version: 1, Driver: amdgpu.Driver, Contexts: []*uapi.ContextState{{CtxId: 1,
		Jobs: []*uapi.JobState{{Bos: []*uapi.SubmitBo{{Handle: 1}}, BoIds: []uint64{1, 2}}}}}})
	f.Add(blob)
	f.Fuzz(func(t *testing.T, blob []byte) {
		p := amdgpu.New()
		priv, err := amdgpu.Decode(blob)
		cp := &uapi.FileCheckpoint{Driver: amdgpu.Driver, DriverPrivate: blob}
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
