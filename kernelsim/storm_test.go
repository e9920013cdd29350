package kernelsim_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// stormDuration is how long a kill storm runs: KSIM_STORM_DURATION (a Go
// duration) for longer runs, 5 s by default.
func stormDuration(t testing.TB) time.Duration {
	if v := os.Getenv("KSIM_STORM_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("KSIM_STORM_DURATION: %v", err)
		}
		return d
	}
	return 5 * time.Second
}

// Devices of the storms: short TDR timeouts so hangs are killed quickly,
// a real but fast GPU.
var stormDeviceSpecs = []string{
	"driver=amdgpu,minor=128,vram=256M,gtt=256M,bandwidth=1G,iter=50us,timeout=300ms,credits=4",
	"driver=xe,minor=129,vram=256M,gtt=256M,bandwidth=1G,iter=50us,timeout=300ms",
}

func stormConfig() kernelsim.Config {
	amd, xe := amdgpuDev(), xeDev()
	for _, d := range []*kernelsim.DeviceConfig{&amd, &xe} {
		d.VRAMSize, d.GTTSize = 256<<20, 256<<20
		d.Bandwidth = 1 << 30
		d.IterTime = 50 * time.Microsecond
		d.JobTimeout = 300 * time.Millisecond
	}
	return kernelsim.Config{Devices: []kernelsim.DeviceConfig{amd, xe}}
}

// storm runs client processes against the kernelsim at dir, each
// inheriting the dma-buf shared as fd 3, and SIGKILLs them at random
// moments until the duration is over.
func storm(t *testing.T, dir string, shared int, dur time.Duration) {
	const clients = 6
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	sharedFile := os.NewFile(uintptr(must(unix.Dup(shared))), "shared-dmabuf")
	defer sharedFile.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=storm", "KSIM_DIR="+dir)
		cmd.ExtraFiles = []*os.File{sharedFile}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		// Wait returns once the client is dead even if something else
		// still holds its output pipe (a run hung once in Wait).
		cmd.WaitDelay = 10 * time.Second
		ok(t, cmd.Start())
		return cmd
	}
	reap := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		// Only SIGKILL may end a storm client.
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("storm client ended with %v: %s", err, cmd.Stdout)
		}
	}
	procs := make([]*exec.Cmd, clients)
	for i := range procs {
		procs[i] = start()
	}
	kills := 0
	for deadline := time.Now().Add(dur); time.Now().Before(deadline); {
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		i := rng.IntN(clients)
		reap(procs[i])
		kills++
		procs[i] = start()
	}
	for _, p := range procs {
		reap(p)
	}
	t.Logf("storm: %d clients killed in %v", kills+clients, dur)
}

// childStorm is a storm client: it never stops on its own.
func childStorm() error {
	dir := os.Getenv("KSIM_DIR")
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	const shared = 3
	var open []*libdrm.Device
	for {
		d, err := libdrm.Open(kernelsim.RenderNodePath(dir, 128+uint32(rng.IntN(2))))
		if err != nil {
			return err
		}
		open = append(open, d)
		stormClient(d, rng, shared, func(int) {})
		if len(open) > 3 {
			i := rng.IntN(len(open))
			open[i].Close()
			open = append(open[:i], open[i+1:]...)
		}
	}
}

// stormClient does a random mix of everything on d; errors (a guilty
// context, a busy BO, ...) are part of the game.
// Dma-buf fds it keeps open go to keep (a killed process drops them all).
func stormClient(d *libdrm.Device, rng *rand.Rand, shared int, keep func(fd int)) {
	hs, _ := d.ImportDmaBuf(shared)
	own, _ := d.BOCreate(64<<10, vram, 0, 0)
	ctx, _ := d.CtxCreate(0)
	tl, _ := d.SwSyncCreate()
	gate, _ := d.SyncobjCreate(false)
	out, _ := d.SyncobjCreate(false)
	d.SwSyncFence(tl, 1+uint64(rng.IntN(3)), gate)
	// On xe, exec queues of a regular and a long-running VM as well.
	ops := 9
	var vm, lrVM, q, lrq uint32
	if v, err := d.Version(); err == nil && v.Driver == "xe" {
		ops = 13
		vm, _ = d.XeVMCreate(0)
		lrVM, _ = d.XeVMCreate(uapi.XeVmCreateFlagLRMode)
		for _, m := range []uint32{vm, lrVM} {
			d.XeBind(m, own, 0, 0x100000, 64<<10)
			d.XeBind(m, hs, 0, 0x200000, 64<<10)
		}
		q, _ = d.XeExecQueueCreate(vm, 0)
		lrq, _ = d.XeExecQueueCreate(lrVM, 0)
	}
	for range 10 + rng.IntN(20) {
		var req *uapi.SubmitRequest
		switch rng.IntN(ops) { // an xe request now and then, on xe
		case 9:
			d.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: []*uapi.XeExecBuffer{{Va: 0x100000, Write: true}, {Va: 0x200000}},
				Commands: []*uapi.Command{copyCmd(0, 1, 4096)}, OutSyncobjs: []uint32{out}})
		case 10:
			d.XeExec(&uapi.XeExecRequest{ExecQueueId: lrq, Buffers: []*uapi.XeExecBuffer{{Va: 0x100000, Write: true}, {Va: 0x200000}},
				Commands: []*uapi.Command{compute(0, 1, 4096, uint64(rng.IntN(20000)))}, OutSyncobjs: []uint32{out}})
		case 11: // a queue torn down with its jobs in flight
			if rng.IntN(2) == 0 {
				d.XeExecQueueDestroy(q)
				q, _ = d.XeExecQueueCreate(vm, 0)
			} else {
				d.XeExecQueueDestroy(lrq)
				lrq, _ = d.XeExecQueueCreate(lrVM, 0)
			}
		case 12: // rebind part of a range jobs may be using
			d.XeUnbind(vm, 0x101000, 4096)
			d.XeBind(vm, own, 4096, 0x101000, 4096)
		}
		switch rng.IntN(9) {
		case 0:
			req = &uapi.SubmitRequest{Bos: []*uapi.SubmitBo{bo(own, true)}, Commands: []*uapi.Command{fill(0, 0, 64<<10, rng.Uint32())}}
		case 1:
			req = &uapi.SubmitRequest{Bos: []*uapi.SubmitBo{bo(own, true), bo(hs, false)}, Commands: []*uapi.Command{copyCmd(0, 1, 4096)}}
		case 2:
			req = &uapi.SubmitRequest{Bos: []*uapi.SubmitBo{bo(hs, true)}, Commands: []*uapi.Command{fill(0, 0, 4096, rng.Uint32())}}
		case 3:
			req = &uapi.SubmitRequest{Bos: []*uapi.SubmitBo{bo(own, true), bo(hs, false)},
				Commands: []*uapi.Command{compute(0, 1, 4096, uint64(rng.IntN(20000)))}, LongRunning: true}
		case 4:
			if rng.IntN(3) == 0 {
				req = &uapi.SubmitRequest{Bos: []*uapi.SubmitBo{bo(own, true)}, Commands: []*uapi.Command{hang()}}
			}
		case 5:
			req = &uapi.SubmitRequest{Bos: []*uapi.SubmitBo{bo(own, true)}, Commands: []*uapi.Command{fill(0, 0, 4096, 1)}, InSyncobjs: []uint32{gate}}
			if rng.IntN(2) == 0 {
				d.SwSyncInc(tl, 1)
			}
		case 6:
			if fd, err := d.ExportDmaBuf(own); err == nil {
				d.ImportDmaBuf(fd)
				if rng.IntN(2) == 0 {
					unix.Close(fd)
				} else {
					keep(fd)
				}
			}
		case 7:
			d.SyncobjWait([]uint32{out}, time.Duration(rng.IntN(20))*time.Millisecond, true, rng.IntN(2) == 0)
		case 8:
			d.WaitIdle(own, true, time.Duration(rng.IntN(20))*time.Millisecond)
		}
		if req == nil {
			continue
		}
		req.CtxId = ctx
		req.OutSyncobjs = []uint32{out}
		if _, err := d.Submit(req); uapi.IsErrno(err, syscall.ECANCELED) {
			d.CtxDestroy(ctx)
			ctx, _ = d.CtxCreate(0)
		}
	}
}

type stormCounts struct {
	files, bos, dmabufs, jobs, fences, unsignalled int
}

func countDebug(st *kernelsim.DebugState) stormCounts {
	c := stormCounts{files: len(st.Files), bos: len(st.BOs), dmabufs: len(st.DmaBufs), jobs: st.LiveJobs, fences: len(st.Fences)}
	for _, f := range st.Fences {
		if !f.Signaled {
			c.unsignalled++
		}
	}
	return c
}

// runStorm storms the kernelsim at dir and checks it recovers completely.
func runStorm(t *testing.T, env *ksimtest.Env) {
	c := must(ctl.Dial(env.Dir))
	defer c.Close()
	base := countDebug(must(c.Debug()))
	// The parent shares a BO with every client.
	p := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	h := must(p.BOCreate(64<<10, gtt, 0, 0))
	shared := must(p.ExportDmaBuf(h))

	storm(t, env.Dir, shared, stormDuration(t))

	// Every client is dead: all their work is signalled and gone. BOs go
	// last: a dead client's dma-bufs are released when the kernel sees
	// their files close, after its drm file went.
	var last stormCounts
	want := base
	want.files, want.bos, want.dmabufs = base.files+1, base.bos+1, base.dmabufs+1
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = countDebug(must(c.Debug()))
		last.fences = want.fences // signalled fences may live on in BO 1's resv
		if last == want {
			break
		}
		if time.Now().After(deadline) {
			st := must(c.Debug())
			var left []string
			for _, b := range st.BOs {
				left = append(left, fmt.Sprintf("bo %d: %d bytes, %d refs, dma-buf inode %d, %d resv fences", b.ID, b.Size, b.Refs, b.DmaBuf, len(b.Resv)))
			}
			t.Fatalf("after the storm: %+v, want %+v\n%s\ndma-bufs: %+v", last, want, strings.Join(left, "\n"), st.DmaBufs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The kernel still works.
	ctx := must(p.CtxCreate(0))
	s := must(p.SyncobjCreate(false))
	submit(t, p, &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)}, Commands: []*uapi.Command{fill(0, 0, 4096, 5)}, OutSyncobjs: []uint32{s}})
	if st := waitSync(t, p, s); st.errno != 0 {
		t.Fatal(st)
	}
	p.Close()
	unix.Close(shared)
	eventually(t, "counts to return to the baseline", func() bool {
		last = countDebug(must(c.Debug()))
		return last == base
	})
}

func TestKillStormDaemon(t *testing.T) {
	var args []string
	for _, d := range stormDeviceSpecs {
		args = append(args, "-device", d)
	}
	env := ksimtest.StartDaemon(t, kernelsimd(t), args...)
	runStorm(t, env)
}

func TestKillStormInProcess(t *testing.T) {
	env := ksimtest.Start(t, stormConfig())
	base := takeCensus(env.Kernel)
	g := runtime.NumGoroutine()
	runStorm(t, env)
	backToBaseline(t, env.Kernel, base)
	goroutinesBack(t, g)
}

// TestDebugViewDuringTeardown reads the debug view in a loop, in-process
// and through the control socket, while clients are torn down at every
// stage of their work (run it with -race).
func TestDebugViewDuringTeardown(t *testing.T) {
	env := ksimtest.Start(t, stormConfig())
	base := takeCensus(env.Kernel)
	c := must(ctl.Dial(env.Dir))
	defer c.Close()
	stop := make(chan struct{})
	done := make(chan error, 2)
	go func() {
		var err error
		for n := 0; err == nil; n++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if n%2 == 0 {
				env.Kernel.Debug()
			} else {
				_, err = c.DebugJSON()
			}
		}
		done <- err
	}()
	p := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 129)))
	h := must(p.BOCreate(64<<10, gtt, 0, 0))
	shared := must(p.ExportDmaBuf(h))
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 15 {
				d, err := libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128+uint32(rng.IntN(2))))
				if err != nil {
					errs <- err
					return
				}
				var kept []int
				stormClient(d, rng, shared, func(fd int) { kept = append(kept, fd) })
				d.Close() // with work in flight
				for _, fd := range kept {
					unix.Close(fd)
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		ok(t, <-errs)
	}
	close(stop)
	ok(t, <-done)
	p.Close()
	unix.Close(shared)
	backToBaseline(t, env.Kernel, base)
	st := env.Kernel.Debug()
	if len(st.Files) != 0 || st.LiveJobs != base.Jobs {
		t.Fatalf("after teardown: %+v", st)
	}
}

// TestDebugViewLargerThanAMessage: the debug view of a kernel with many
// objects does not fit in a packet; ctl passes a memfd for it, and a
// request without one gets the view out of line.
func TestDebugViewLargerThanAMessage(t *testing.T) {
	env := ksimtest.Start(t, stormConfig())
	d := env.Open(t, 128)
	for range 3000 {
		must(d.BOCreate(4096, gtt, 0, 0))
	}
	c := ctlClient(t, env)
	st := must(c.Debug())
	if len(st.BOs) != 3000 || len(st.Files) != 1 || len(st.Files[0].Handles) != 3000 {
		t.Fatalf("debug view: %d BOs, %d files", len(st.BOs), len(st.Files))
	}
	conn := must(uapi.Dial(kernelsim.ControlPath(env.Dir)))
	defer conn.Close()
	var r uapi.DebugReply
	must(conn.Call(uapi.OpDebug, &uapi.DebugRequest{}, &r))
	if len(r.Json) <= uapi.MaxMessage || !strings.Contains(r.Json, `"bos"`) {
		t.Fatalf("debug view without a memfd: %d bytes", len(r.Json))
	}
}
