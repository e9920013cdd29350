package kernelsim_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// manualEnv serves devices on a manual clock: GPU time and timeouts move
// only when the test advances the clock.
func manualEnv(t *testing.T, devs ...kernelsim.DeviceConfig) (*ksimtest.Env, *ktime.Manual) {
	clk := ktime.NewManual()
	return ksimtest.Start(t, kernelsim.Config{Devices: devs, Clock: clk}), clk
}

// slow makes copies and fills cost 1 s per MiB of clock time.
func slow(d kernelsim.DeviceConfig) kernelsim.DeviceConfig {
	d.Bandwidth = 1 << 20
	d.JobTimeout = 0
	return d
}

func instant(d kernelsim.DeviceConfig) kernelsim.DeviceConfig {
	d.Bandwidth = 0
	d.JobTimeout = 0
	return d
}

type syncState struct {
	signaled bool
	errno    int32
}

func query(t testing.TB, d *libdrm.Device, s uint32) syncState {
	t.Helper()
	r := must(d.SyncobjQuery(s))
	if !r.HasFence {
		t.Fatalf("syncobj %d has no fence", s)
	}
	return syncState{r.Signaled, r.Error}
}

func waitSync(t testing.TB, d *libdrm.Device, s uint32) syncState {
	t.Helper()
	if _, err := d.SyncobjWait([]uint32{s}, 20*time.Second, true, true); err != nil {
		t.Fatalf("wait for syncobj %d: %v", s, err)
	}
	return query(t, d, s)
}

func submit(t testing.TB, d *libdrm.Device, req *uapi.SubmitRequest) {
	t.Helper()
	if _, err := d.Submit(req); err != nil {
		t.Fatal(err)
	}
}

func bo(h uint32, write bool) *uapi.SubmitBo { return &uapi.SubmitBo{Handle: h, Write: write} }

func TestImplicitSyncAcrossFilesAndDevices(t *testing.T) {
	env, clk := manualEnv(t, slow(amdgpuDev()), instant(xeDev()))
	a := env.Open(t, 128)
	b := env.Open(t, 128)
	x := env.Open(t, 129)
	const n = 64 << 10
	shared := must(a.BOCreate(n, vram, 0, 0))
	fd := must(a.ExportDmaBuf(shared))
	defer libdrm.CloseFD(fd)
	xs := must(x.ImportDmaBuf(fd))
	bs := must(b.ImportDmaBuf(fd))
	xdst := must(x.BOCreate(n, gtt, 0, 0))
	bdst := must(b.BOCreate(n, gtt, 0, 0))
	xother := must(x.BOCreate(4096, gtt, 0, 0))
	actx, bctx, xctx := must(a.CtxCreate(0)), must(b.CtxCreate(0)), must(x.CtxCreate(0))
	sw, sx, sb, sc := must(a.SyncobjCreate(false)), must(x.SyncobjCreate(false)), must(b.SyncobjCreate(false)), must(x.SyncobjCreate(false))

	// Writer on the amdgpu: 64 KiB at 1 MiB/s of clock time.
	submit(t, a, &uapi.SubmitRequest{CtxId: actx, Bos: []*uapi.SubmitBo{bo(shared, true)},
		Commands: []*uapi.Command{fill(0, 0, n, 0x5eed5eed)}, OutSyncobjs: []uint32{sw}})
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("the writer never started")
	}
	// Readers on the xe (another device) and in another amdgpu file.
	submit(t, x, &uapi.SubmitRequest{CtxId: xctx, Bos: []*uapi.SubmitBo{bo(xdst, true), bo(xs, false)},
		Commands: []*uapi.Command{copyCmd(0, 1, n)}, OutSyncobjs: []uint32{sx}})
	submit(t, b, &uapi.SubmitRequest{CtxId: bctx, Bos: []*uapi.SubmitBo{bo(bdst, true), bo(bs, false)},
		Commands: []*uapi.Command{copyCmd(0, 1, n)}, OutSyncobjs: []uint32{sb}})
	// An unrelated job on the xe runs at once (the device is not stalled)...
	xctx2 := must(x.CtxCreate(0))
	submit(t, x, &uapi.SubmitRequest{CtxId: xctx2, Bos: []*uapi.SubmitBo{bo(xother, true)},
		Commands: []*uapi.Command{fill(0, 0, 4096, 1)}, OutSyncobjs: []uint32{sc}})
	if s := waitSync(t, x, sc); s.errno != 0 {
		t.Fatalf("unrelated job: %+v", s)
	}
	// ...while the readers wait for the writer still in flight.
	if query(t, a, sw).signaled || query(t, x, sx).signaled || query(t, b, sb).signaled {
		t.Fatal("the writer finished without the clock moving, or a reader did not wait for it")
	}
	if busy := must(x.WaitIdle(xs, false, 0)); !busy {
		t.Fatal("the shared BO is idle for readers while a write is in flight")
	}
	if got := readBO(t, x, xdst, n); !bytes.Equal(got, make([]byte, n)) {
		t.Fatal("the reader ran before the writer finished")
	}
	clk.Advance(time.Second)
	if st := waitSync(t, a, sw); st.errno != 0 {
		t.Fatalf("writer: %+v", st)
	}
	if st := waitSync(t, x, sx); st.errno != 0 {
		t.Fatalf("xe reader: %+v", st)
	}
	// b's reader copies on the slow amdgpu, after the writer.
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("amdgpu reader did not start")
	}
	clk.Advance(time.Second)
	if st := waitSync(t, b, sb); st.errno != 0 {
		t.Fatalf("amdgpu reader: %+v", st)
	}
	want := pattern(n, 0x5eed5eed)
	if !bytes.Equal(readBO(t, x, xdst, n), want) || !bytes.Equal(readBO(t, b, bdst, n), want) {
		t.Fatal("a reader did not see the writer's data")
	}
}

func TestExplicitSyncobjAndSwSyncDependencies(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev()), instant(xeDev())}})
	a := env.Open(t, 128)
	x := env.Open(t, 129)
	ha := must(a.BOCreate(4096, vram, 0, 0))
	hx := must(x.BOCreate(4096, vram, 0, 0))
	c1, c2 := must(a.CtxCreate(0)), must(a.CtxCreate(0))
	tl := must(a.SwSyncCreate())
	gate := must(a.SyncobjCreate(false))
	ok(t, a.SwSyncFence(tl, 2, gate))
	s1, s2, s3 := must(a.SyncobjCreate(false)), must(a.SyncobjCreate(false)), must(a.SyncobjCreate(false))

	// Job 1 waits for sw_sync point 2; job 2 (another context) waits for
	// job 1 through its out-syncobj.
	submit(t, a, &uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(ha, true)},
		Commands: []*uapi.Command{fill(0, 0, 4096, 0x11111111)}, InSyncobjs: []uint32{gate}, OutSyncobjs: []uint32{s1}})
	submit(t, a, &uapi.SubmitRequest{CtxId: c2, Commands: []*uapi.Command{},
		InSyncobjs: []uint32{s1}, OutSyncobjs: []uint32{s2}})
	// A control job on context 2's device path with no dependency runs.
	c3 := must(a.CtxCreate(0))
	submit(t, a, &uapi.SubmitRequest{CtxId: c3, Commands: []*uapi.Command{}, OutSyncobjs: []uint32{s3}})
	waitSync(t, a, s3)
	if query(t, a, s1).signaled || query(t, a, s2).signaled {
		t.Fatal("a job ran before its sw_sync / syncobj dependency")
	}
	ok(t, a.SwSyncInc(tl, 1))
	if _, err := a.SyncobjWait([]uint32{s1}, 0, true, false); !uapi.IsErrno(err, syscall.ETIME) {
		t.Fatalf("point 1 released the job waiting for point 2: %v", err)
	}
	ok(t, a.SwSyncInc(tl, 1))
	if st := waitSync(t, a, s2); st.errno != 0 {
		t.Fatalf("dependent job: %+v", st)
	}
	if !query(t, a, s1).signaled {
		t.Fatal("job 2 finished before job 1")
	}
	if !bytes.Equal(readBO(t, a, ha, 4096), pattern(4096, 0x11111111)) {
		t.Fatal("job 1 did not run")
	}
	// Wait-all and wait-any.
	if i, err := a.SyncobjWait([]uint32{s3, s1, s2}, time.Second, true, false); err != nil || i != 0 {
		t.Fatalf("wait all: %d %v", i, err)
	}
	// Errors.
	empty := must(a.SyncobjCreate(false))
	_, err := a.Submit(&uapi.SubmitRequest{CtxId: c1, InSyncobjs: []uint32{empty}})
	wantErrno(t, err, syscall.EINVAL)
	_, err = a.Submit(&uapi.SubmitRequest{CtxId: c1, InSyncobjs: []uint32{999}})
	wantErrno(t, err, syscall.ENOENT)
	_, err = a.Submit(&uapi.SubmitRequest{CtxId: c1, OutSyncobjs: []uint32{999}})
	wantErrno(t, err, syscall.ENOENT)
	_, err = a.Submit(&uapi.SubmitRequest{CtxId: 99})
	wantErrno(t, err, syscall.ENOENT)
	_, err = a.Submit(&uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(ha, true)}, Commands: []*uapi.Command{fill(0, 4096, 4, 1)}})
	wantErrno(t, err, syscall.EINVAL)
	_, err = a.Submit(&uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(ha, true)}, Commands: []*uapi.Command{fill(1, 0, 4, 1)}})
	wantErrno(t, err, syscall.EINVAL)
	_, err = a.SyncobjWait([]uint32{empty}, time.Second, true, false)
	wantErrno(t, err, syscall.EINVAL)
	_, err = a.SyncobjWait([]uint32{empty}, 0, true, true)
	wantErrno(t, err, syscall.ETIME)
	// A syncobj of one file means nothing in another: x has no syncobj 1.
	_, err = x.Submit(&uapi.SubmitRequest{CtxId: must(x.CtxCreate(0)), Bos: []*uapi.SubmitBo{bo(hx, true)}, InSyncobjs: []uint32{s1}})
	wantErrno(t, err, syscall.ENOENT)
}

// TestSchedulingClassicVsFirmware: on the amdgpu ring, jobs of different
// contexts execute in order on the hardware; xe gives each context its
// own firmware queue, so a short job overtakes a long one.
func TestSchedulingClassicVsFirmware(t *testing.T) {
	for _, c := range []struct {
		dev        kernelsim.DeviceConfig
		overtakes  bool
		driverName string
	}{
		{slow(amdgpuDev()), false, "amdgpu"},
		{slow(xeDev()), true, "xe"},
	} {
		t.Run(c.driverName, func(t *testing.T) {
			env, clk := manualEnv(t, c.dev)
			d := env.Open(t, c.dev.Minor)
			long, short := must(d.BOCreate(1<<20, vram, 0, 0)), must(d.BOCreate(4096, vram, 0, 0))
			c1, c2 := must(d.CtxCreate(0)), must(d.CtxCreate(0))
			sl, ss := must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false))
			submit(t, d, &uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(long, true)},
				Commands: []*uapi.Command{fill(0, 0, 1<<20, 1)}, OutSyncobjs: []uint32{sl}})
			if !clk.WaitPending(1, 20*time.Second) {
				t.Fatal("long job did not start")
			}
			submit(t, d, &uapi.SubmitRequest{CtxId: c2, Bos: []*uapi.SubmitBo{bo(short, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 2)}, OutSyncobjs: []uint32{ss}})
			if c.overtakes {
				// The short job gets its own queue and clock timer.
				if !clk.WaitPending(2, 20*time.Second) {
					t.Fatal("short job did not start on its own queue")
				}
			}
			clk.Advance(10 * time.Millisecond) // the short job's cost is 3.9 ms
			if c.overtakes {
				if st := waitSync(t, d, ss); st.errno != 0 {
					t.Fatal(st)
				}
				if query(t, d, sl).signaled {
					t.Fatal("long job done after 10 ms")
				}
			} else {
				// In-order ring: the short job cannot finish before the
				// long one; after it, the short job still costs its time.
				if query(t, d, ss).signaled || query(t, d, sl).signaled {
					t.Fatal("the short job overtook the long one on a classic ring")
				}
				clk.Advance(time.Second - 10*time.Millisecond)
				waitSync(t, d, sl)
				if !clk.WaitPending(1, 20*time.Second) {
					t.Fatal("short job never started after the long one")
				}
				if query(t, d, ss).signaled {
					t.Fatal("the short job finished together with the long one")
				}
				clk.Advance(10 * time.Millisecond)
				waitSync(t, d, ss)
				return
			}
			clk.Advance(time.Second)
			waitSync(t, d, sl)
		})
	}
}

func TestTimeoutMakesContextGuilty(t *testing.T) {
	for _, dev := range []kernelsim.DeviceConfig{amdgpuDev(), xeDev()} {
		t.Run(dev.Driver, func(t *testing.T) {
			dev.Bandwidth = 0
			dev.JobTimeout = time.Second
			env, clk := manualEnv(t, dev)
			d := env.Open(t, dev.Minor)
			h := must(d.BOCreate(4096, vram, 0, 0))
			hb := must(d.BOCreate(4096, vram, 0, 0))
			bad, good := must(d.CtxCreate(0)), must(d.CtxCreate(0))
			sHang, sBehind, sGood := must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false))
			submit(t, d, &uapi.SubmitRequest{CtxId: bad, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{hang()}, OutSyncobjs: []uint32{sHang}})
			submit(t, d, &uapi.SubmitRequest{CtxId: bad, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 3)}, OutSyncobjs: []uint32{sBehind}})
			if !clk.WaitPending(1, 20*time.Second) {
				t.Fatal("no TDR timer armed for the hanging job")
			}
			submit(t, d, &uapi.SubmitRequest{CtxId: good, Bos: []*uapi.SubmitBo{bo(hb, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 4)}, OutSyncobjs: []uint32{sGood}})
			if dev.Driver == "xe" {
				// Its own firmware queue: not stuck behind the hang.
				waitSync(t, d, sGood)
			}
			clk.Advance(999 * time.Millisecond)
			if query(t, d, sHang).signaled {
				t.Fatal("hang killed before the timeout")
			}
			clk.Advance(time.Millisecond)
			if st := waitSync(t, d, sHang); st.errno != -int32(syscall.ETIME) {
				t.Fatalf("hung job's fence: %+v, want -ETIME", st)
			}
			if st := waitSync(t, d, sBehind); st.errno != -int32(syscall.ECANCELED) {
				t.Fatalf("job queued behind the hang: %+v, want -ECANCELED", st)
			}
			if st := waitSync(t, d, sGood); st.errno != 0 {
				t.Fatalf("innocent context's job: %+v", st)
			}
			if !bytes.Equal(readBO(t, d, hb, 4096), pattern(4096, 4)) {
				t.Fatal("innocent job's result")
			}
			if !bytes.Equal(readBO(t, d, h, 4096), make([]byte, 4096)) {
				t.Fatal("the job queued behind the hang ran")
			}
			q := must(d.CtxQuery(bad))
			if !q.Guilty || q.Submitted != 2 || q.Completed != 2 {
				t.Fatalf("guilty context: %v", q)
			}
			if q := must(d.CtxQuery(good)); q.Guilty {
				t.Fatal("innocent context marked guilty")
			}
			_, err := d.Submit(&uapi.SubmitRequest{CtxId: bad, Commands: []*uapi.Command{}})
			wantErrno(t, err, syscall.ECANCELED)
			// The innocent context and new contexts keep working.
			s := must(d.SyncobjCreate(false))
			submit(t, d, &uapi.SubmitRequest{CtxId: good, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{fill(0, 0, 4096, 5)}, OutSyncobjs: []uint32{s}})
			if st := waitSync(t, d, s); st.errno != 0 {
				t.Fatal(st)
			}
			if !bytes.Equal(readBO(t, d, h, 4096), pattern(4096, 5)) {
				t.Fatal("BO of the hang unusable afterwards")
			}
		})
	}
}

// referenceCompute runs a Compute command list directly on the engine.
func referenceCompute(t testing.TB, src []byte, iters uint64) uint64 {
	t.Helper()
	dst := &memBuf{make([]byte, 8)}
	e := gpu.NewEngine(gpu.EngineConfig{})
	var p gpu.Progress
	err := e.Execute(context.Background(), []gpu.Command{{Op: gpu.OpCompute, Dst: 0, Src: 1, Len: uint64(len(src)), Iterations: iters}},
		[]gpu.Buffer{dst, &memBuf{src}}, &p, nil)
	ok(t, err)
	return binary.LittleEndian.Uint64(dst.b)
}

type memBuf struct{ b []byte }

func (m *memBuf) Size() uint64 { return uint64(len(m.b)) }
func (m *memBuf) ReadAt(p []byte, off uint64) error {
	copy(p, m.b[off:])
	return nil
}
func (m *memBuf) WriteAt(p []byte, off uint64) error {
	copy(m.b[off:], p)
	return nil
}

func TestLongRunningJobsAreNotTimedOut(t *testing.T) {
	dev := amdgpuDev()
	dev.JobTimeout = time.Second
	dev.IterTime = 10 * time.Millisecond
	env, clk := manualEnv(t, dev)
	d := env.Open(t, 128)
	src := must(d.BOCreate(4096, vram, 0, 0))
	ok(t, d.Write(src, 0, pattern(4096, 0x31415926)))
	dst := must(d.BOCreate(4096, vram, 0, 0))
	lr, reg := must(d.CtxCreate(0)), must(d.CtxCreate(0))
	s := must(d.SyncobjCreate(false))
	const iters = 500 // 5 s of clock time
	submit(t, d, &uapi.SubmitRequest{CtxId: lr, Bos: []*uapi.SubmitBo{bo(dst, true), bo(src, false)},
		Commands: []*uapi.Command{compute(0, 1, 4096, iters)}, OutSyncobjs: []uint32{s}, LongRunning: true})
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("compute did not start")
	}
	clk.Advance(3 * time.Second)
	if query(t, d, s).signaled || must(d.CtxQuery(lr)).Guilty {
		t.Fatal("long-running job killed by the timeout")
	}
	clk.Advance(2 * time.Second)
	if st := waitSync(t, d, s); st.errno != 0 {
		t.Fatalf("long-running job: %+v", st)
	}
	got := binary.LittleEndian.Uint64(readBO(t, d, dst, 8))
	if want := referenceCompute(t, pattern(4096, 0x31415926), iters); got != want {
		t.Fatalf("compute result %#x, want %#x", got, want)
	}
	// The same work as a regular job is killed by the timeout.
	s2 := must(d.SyncobjCreate(false))
	submit(t, d, &uapi.SubmitRequest{CtxId: reg, Bos: []*uapi.SubmitBo{bo(dst, true), bo(src, false)},
		Commands: []*uapi.Command{compute(0, 1, 4096, iters)}, OutSyncobjs: []uint32{s2}})
	if !clk.WaitPending(2, 20*time.Second) {
		t.Fatal("regular compute did not start")
	}
	clk.Advance(time.Second)
	if st := waitSync(t, d, s2); st.errno != -int32(syscall.ETIME) {
		t.Fatalf("regular job over the timeout: %+v", st)
	}
}
