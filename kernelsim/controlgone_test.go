package kernelsim_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// TestControlConnectionGone: criu's side (the plugin's helper) holds a
// control connection. If it dies mid-dump, the files that connection
// paused run again; if it dies mid-restore, the session it opened is
// aborted: the file a task claimed is hung up and everything the session
// created is destroyed, as when criu's exit hook reports a failure.
func TestControlConnectionGone(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{amdgpuDev()}})
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	h := must(d.BOCreate(4096, vram, 0, 0))
	ok(t, d.Write(h, 0, pattern(4096, 0x5eed)))
	ctx := must(d.CtxCreate(0))

	// Mid-dump.
	dying := must(ctl.Dial(env.Dir))
	ok(t, dying.Pause([]uint64{fileID(t, dying, d)}, 10*time.Second))
	if !debugFile(t, env, c, d).Paused {
		t.Fatal("the file is not paused")
	}
	dying.Close()
	eventually(t, "the file to resume", func() bool { return !debugFile(t, env, c, d).Paused })
	s := must(d.SyncobjCreate(false))
	submit(t, d, &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
		Commands: []*uapi.Command{fill(0, 0, 4096, 9)}, OutSyncobjs: []uint32{s}})
	if st := waitSync(t, d, s); st.errno != 0 {
		t.Fatalf("a job after the pausing connection went: %+v", st)
	}

	// Mid-restore.
	ino := inode(t, d.FD())
	img, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
	kill(t, c, ids, []*libdrm.Device{d}, nil)
	backToBaseline(t, env.Kernel, base)
	dying = must(ctl.Dial(env.Dir))
	sess := openSession(t, env, dying, img)
	fd := must(sess.claimRaw(ino))
	defer unix.Close(fd)
	if n := env.Kernel.Counts().Files; n != base.Files+1 {
		t.Fatalf("%d files after the claim, want %d", n, base.Files+1)
	}
	dying.Close()
	backToBaseline(t, env.Kernel, base)
	// The claimed connection is hung up: it reads end of file.
	buf := make([]byte, 64)
	if n, _, _, _, err := unix.Recvmsg(fd, buf, nil, 0); n != 0 || err != nil {
		t.Fatalf("the claimed connection after the abort: read %d bytes, %v; want end of file", n, err)
	}
}
