package kernelsim_test

import (
	"bytes"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// TestFencesOutliveContext: the finished fences of a destroyed context's
// jobs stay queryable through syncobjs (on xe the context's scheduler is
// gone too); queued jobs are cancelled with -ECANCELED without running,
// but only once what they waited on has signalled (drm_sched_entity_kill).
func TestFencesOutliveContext(t *testing.T) {
	for _, dev := range []kernelsim.DeviceConfig{instant(amdgpuDev()), instant(xeDev())} {
		t.Run(dev.Driver, func(t *testing.T) {
			env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
			base := takeCensus(nil)
			d := env.Open(t, dev.Minor)
			h := must(d.BOCreate(4096, vram, 0, 0))
			c := must(d.CtxCreate(0))
			tl := must(d.SwSyncCreate())
			gate := must(d.SyncobjCreate(false))
			ok(t, d.SwSyncFence(tl, 1, gate))
			s1, s2, s3 := must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false))
			submit(t, d, &uapi.SubmitRequest{CtxId: c, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 1)}, OutSyncobjs: []uint32{s1}})
			waitSync(t, d, s1)
			submit(t, d, &uapi.SubmitRequest{CtxId: c, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 2)}, InSyncobjs: []uint32{gate}, OutSyncobjs: []uint32{s2}})
			submit(t, d, &uapi.SubmitRequest{CtxId: c, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 3)}, OutSyncobjs: []uint32{s3}})
			ok(t, d.CtxDestroy(c))
			wantErrno(t, d.CtxDestroy(c), syscall.ENOENT)
			_, err := d.Submit(&uapi.SubmitRequest{CtxId: c})
			wantErrno(t, err, syscall.ENOENT)
			_, err = d.CtxQuery(c)
			wantErrno(t, err, syscall.ENOENT)

			if st := query(t, d, s1); !st.signaled || st.errno != 0 {
				t.Fatalf("completed job's fence after context destroy: %+v", st)
			}
			if query(t, d, s2).signaled || query(t, d, s3).signaled {
				t.Fatal("cancelled jobs signalled before the fence they wait on")
			}
			ok(t, d.SwSyncInc(tl, 1))
			for _, s := range []uint32{s2, s3} {
				if st := waitSync(t, d, s); st.errno != -int32(syscall.ECANCELED) {
					t.Fatalf("cancelled job %d: %+v", s, st)
				}
			}
			if !bytes.Equal(readBO(t, d, h, 4096), pattern(4096, 1)) {
				t.Fatal("a cancelled job ran")
			}
			eventually(t, "the jobs to be freed", func() bool { return takeCensus(nil).Jobs == base.Jobs })
			// Still queryable later, with nothing of the job left.
			if st := query(t, d, s3); st.errno != -int32(syscall.ECANCELED) {
				t.Fatal(st)
			}
		})
	}
}

// TestFileCloseSignalsEverything closes a file with a hanging job, a
// long-running job, queued work blocked on its own sw_sync timeline and a
// BO shared with a file on another device: everything signals, the other
// file's reader runs, and nothing is left live.
func TestFileCloseSignalsEverything(t *testing.T) {
	cfg := twoDevices()
	cfg.Devices[0].JobTimeout = time.Hour
	cfg.Devices[0].IterTime = time.Millisecond
	env := ksimtest.Start(t, cfg)
	base := takeCensus(env.Kernel)
	a, err := libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128))
	ok(t, err)
	x := env.Open(t, 129)
	shared := must(a.BOCreate(4096, vram, 0, 0))
	ok(t, a.Write(shared, 0, pattern(4096, 0x77)))
	scratch := must(a.BOCreate(4096, vram, 0, 0))
	fd := must(a.ExportDmaBuf(shared))
	xs := must(x.ImportDmaBuf(fd))
	libdrm.CloseFD(fd)
	xdst := must(x.BOCreate(4096, vram, 0, 0))

	c1, c2, c3 := must(a.CtxCreate(0)), must(a.CtxCreate(0)), must(a.CtxCreate(0))
	tl := must(a.SwSyncCreate())
	gate := must(a.SyncobjCreate(false))
	ok(t, a.SwSyncFence(tl, 5, gate))
	submit(t, a, &uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(scratch, true)}, Commands: []*uapi.Command{hang()}})
	submit(t, a, &uapi.SubmitRequest{CtxId: c2, Bos: []*uapi.SubmitBo{bo(scratch, true), bo(shared, false)},
		Commands: []*uapi.Command{compute(0, 1, 4096, 1<<30)}, LongRunning: true})
	submit(t, a, &uapi.SubmitRequest{CtxId: c3, Bos: []*uapi.SubmitBo{bo(shared, true)},
		Commands: []*uapi.Command{fill(0, 0, 4096, 0x99)}, InSyncobjs: []uint32{gate}})
	// The xe file's reader waits for a's pending write of the shared BO.
	xc := must(x.CtxCreate(0))
	xsync := must(x.SyncobjCreate(false))
	submit(t, x, &uapi.SubmitRequest{CtxId: xc, Bos: []*uapi.SubmitBo{bo(xdst, true), bo(xs, false)},
		Commands: []*uapi.Command{copyCmd(0, 1, 4096)}, OutSyncobjs: []uint32{xsync}})
	if query(t, x, xsync).signaled {
		t.Fatal("reader did not wait for the queued writer of another file")
	}

	a.Close()
	if st := waitSync(t, x, xsync); st.errno != 0 {
		t.Fatalf("the other file's reader: %+v", st)
	}
	// The cancelled writer never ran: the reader saw the old contents.
	if !bytes.Equal(readBO(t, x, xdst, 4096), pattern(4096, 0x77)) {
		t.Fatal("reader saw data of a cancelled job")
	}
	if busy := must(x.WaitIdle(xs, true, 0)); busy {
		t.Fatal("shared BO still busy after its writer's file closed")
	}
	eventually(t, "the closed file's jobs and BO to go", func() bool {
		c := takeCensus(env.Kernel)
		// x's: its own BO, its import attachment and the shared BO the
		// attachment holds on the closed file's device.
		return c.Files == base.Files+1 && c.Jobs == base.Jobs && c.BOs == base.BOs+3
	})
	st := env.Kernel.Debug()
	if st.LiveJobs != base.Jobs {
		t.Fatalf("debug view: %d live jobs", st.LiveJobs)
	}
	for _, f := range st.Fences {
		if !f.Signaled {
			t.Errorf("unsignalled fence after the file closed: %+v", f)
		}
	}
	// The shared BO's reservation object still holds the dead file's
	// fences: signalled, with their errors.
	for _, b := range st.BOs {
		for _, r := range b.Resv {
			if !r.Fence.Signaled {
				t.Errorf("BO %d holds unsignalled %+v", b.ID, r.Fence)
			}
		}
	}
	x.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestClientGoneWhileBlocked: a client that disappears while the kernel
// is blocked in its request (a wait that never ends, a submit to a paused
// context) must not pin its drm file or a goroutine: like a process
// killed in an ioctl, the wait is interrupted and the file released.
func TestClientGoneWhileBlocked(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	gbase := runtime.NumGoroutine()
	node := kernelsim.RenderNodePath(env.Dir, 128)

	var ids []uint64
	c := ctlClient(t, env)
	for _, b := range []struct {
		name string
		req  func(t *testing.T, d *libdrm.Device) []byte
	}{
		{"syncobj wait on sw_sync", func(t *testing.T, d *libdrm.Device) []byte {
			tl := must(d.SwSyncCreate())
			s := must(d.SyncobjCreate(false))
			ok(t, d.SwSyncFence(tl, 1, s))
			pkt, _ := uapi.Marshal(uapi.Header{Op: uapi.OpSyncobjWait, Seq: 1000},
				&uapi.SyncobjWaitRequest{Handles: []uint32{s}, TimeoutNs: -1, WaitAll: true})
			return pkt
		}},
		{"wait for submit", func(t *testing.T, d *libdrm.Device) []byte {
			s := must(d.SyncobjCreate(false))
			pkt, _ := uapi.Marshal(uapi.Header{Op: uapi.OpSyncobjWait, Seq: 1000},
				&uapi.SyncobjWaitRequest{Handles: []uint32{s}, TimeoutNs: -1, WaitForSubmit: true})
			return pkt
		}},
		{"wait idle on a never-ending job", func(t *testing.T, d *libdrm.Device) []byte {
			h := must(d.BOCreate(4096, vram, 0, 0))
			ctx := must(d.CtxCreate(0))
			submit(t, d, &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{hang()}, LongRunning: true})
			pkt, _ := uapi.Marshal(uapi.Header{Op: uapi.OpGemWaitIdle, Seq: 1000},
				&uapi.GemWaitIdleRequest{Handle: h, TimeoutNs: -1})
			return pkt
		}},
		{"submit to a paused context", func(t *testing.T, d *libdrm.Device) []byte {
			ctx := must(d.CtxCreate(0))
			id := fileID(t, c, d)
			ok(t, c.Pause([]uint64{id}, 10*time.Second))
			ids = append(ids, id)
			pkt, _ := uapi.Marshal(uapi.Header{Op: uapi.OpSubmit, Seq: 1000},
				&uapi.SubmitRequest{CtxId: ctx, Commands: []*uapi.Command{}})
			return pkt
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			ok(t, err)
			ok(t, unix.Connect(fd, &unix.SockaddrUnix{Name: node}))
			d := libdrm.FromFD(fd)
			pkt := b.req(t, d)
			ok(t, uapi.Send(fd, pkt))
			// The reply does not come: the kernel is blocked.
			if _, _, _, err := recvTimeout(fd, 50*time.Millisecond); err == nil {
				t.Fatal("blocking request answered")
			}
			unix.Close(fd) // the process dies
			eventually(t, "the dead client's file to be released", func() bool {
				return env.Kernel.Counts().Files == base.Files
			})
		})
	}
	ok(t, c.Resume(ids))
	backToBaseline(t, env.Kernel, base)
	goroutinesBack(t, gbase+4) // the control connection's goroutines
}
