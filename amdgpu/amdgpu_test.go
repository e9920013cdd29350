package amdgpu_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/amdgpu"
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
