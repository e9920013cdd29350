package kernelsim_test

import (
	"bytes"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// Tests of the xe driver (kernelsim/xe) through its uAPI. They live here
// to share the checkpoint helpers of the core's tests.

const page = 4096

func xeExec(t testing.TB, d *libdrm.Device, q uint32, bufs []*uapi.XeExecBuffer, cmds []*uapi.Command, out ...uint32) {
	t.Helper()
	if _, err := d.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: bufs, Commands: cmds, OutSyncobjs: out}); err != nil {
		t.Fatal(err)
	}
}

func xbuf(va uint64, write bool) *uapi.XeExecBuffer { return &uapi.XeExecBuffer{Va: va, Write: write} }

// TestXeVMBind: VM_BIND maps and unmaps GPU ranges (an unmap in the
// middle splits a binding, a map over a range replaces what was there),
// EXEC resolves GPU addresses through the queue's VM to the rest of their
// binding, a binding keeps its BO after the handle is closed, and the
// ioctls of one driver are ENOTTY on the other's device.
func TestXeVMBind(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev()), instant(xeDev())}})
	base := takeCensus(env.Kernel)
	a := env.Open(t, 128)
	x := env.Open(t, 129)
	h := must(x.BOCreate(4*page, gtt, 0, 0))
	ok(t, x.Write(h, 0, pattern(4*page, 0x01010101)))
	vm := must(x.XeVMCreate(0))
	q := must(x.XeExecQueueCreate(vm, 0))
	ok(t, x.XeBind(vm, h, 0, 0x100000, 4*page))
	ok(t, x.XeUnbind(vm, 0x101000, 2*page))
	s := must(x.SyncobjCreate(false))

	// 0x103000 is page 3 of the BO, and the window is that one page.
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x103000, true)}, []*uapi.Command{fill(0, 0, page, 0x11111111)}, s)
	waitSync(t, x, s)
	want := slices.Concat(pattern(3*page, 0x01010101), pattern(page, 0x11111111))
	if got := readBO(t, x, h, 4*page); !bytes.Equal(got, want) {
		t.Fatal("fill through the split binding did not land on page 3 only")
	}
	_, err := x.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: []*uapi.XeExecBuffer{xbuf(0x103000, true)}, Commands: []*uapi.Command{fill(0, 0, 2*page, 1)}})
	wantErrno(t, err, syscall.EINVAL)
	_, err = x.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: []*uapi.XeExecBuffer{xbuf(0x101000, true)}, Commands: []*uapi.Command{fill(0, 0, page, 1)}})
	wantErrno(t, err, syscall.EFAULT)
	// An address inside a binding addresses the rest of it.
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x100800, true)}, []*uapi.Command{fill(0, 0, page/2, 0x22222222)}, s)
	waitSync(t, x, s)
	if got := readBO(t, x, h, page); !bytes.Equal(got[page/2:], pattern(page/2, 0x22222222)) || !bytes.Equal(got[:page/2], pattern(page/2, 0x01010101)) {
		t.Fatal("fill at an address inside a binding")
	}

	// MAP over the first page replaces it with another BO.
	h2 := must(x.BOCreate(page, gtt, 0, 0))
	ok(t, x.XeBind(vm, h2, 0, 0x100000, page))
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x100000, true)}, []*uapi.Command{fill(0, 0, page, 0x33333333)}, s)
	waitSync(t, x, s)
	if !bytes.Equal(readBO(t, x, h2, page), pattern(page, 0x33333333)) {
		t.Fatal("the remapped page is not the new BO's")
	}
	// The binding holds the BO without a handle.
	ok(t, x.BOClose(h))
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x103000, true)}, []*uapi.Command{fill(0, 0, page, 0x44444444)}, s)
	if st := waitSync(t, x, s); st.errno != 0 {
		t.Fatalf("exec on a BO without handle: %+v", st)
	}

	// Bad binds change nothing; one op failing fails all.
	for name, op := range map[string]*uapi.XeVmBindOp{
		"unaligned":    {Op: uapi.XeVmBindOp_MAP, Handle: h2, Va: 0x200001, Range: page},
		"empty":        {Op: uapi.XeVmBindOp_UNMAP, Va: 0x200000},
		"outside BO":   {Op: uapi.XeVmBindOp_MAP, Handle: h2, BoOffset: page, Va: 0x200000, Range: page},
		"outside VA":   {Op: uapi.XeVmBindOp_MAP, Handle: h2, Va: 1 << 48, Range: page},
		"no handle":    {Op: uapi.XeVmBindOp_MAP, Handle: 99, Va: 0x200000, Range: page},
		"unmap a BO":   {Op: uapi.XeVmBindOp_UNMAP, Handle: h2, Va: 0x200000, Range: page},
		"unknown op":   {Op: 7, Va: 0x200000, Range: page},
		"second fails": {Op: uapi.XeVmBindOp_MAP, Handle: 99, Va: 0x300000, Range: page},
	} {
		ops := []*uapi.XeVmBindOp{op}
		if name == "second fails" {
			ops = []*uapi.XeVmBindOp{{Op: uapi.XeVmBindOp_UNMAP, Va: 0x100000, Range: 4 * page}, op}
		}
		if err := x.XeVMBind(&uapi.XeVmBindRequest{VmId: vm, Binds: ops}); err == nil {
			t.Errorf("%s: bind succeeded", name)
		}
	}
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x100000, false)}, []*uapi.Command{fill(0, 0, page, 0)}, s) // still bound
	wantErrno(t, x.XeVMBind(&uapi.XeVmBindRequest{VmId: 42}), syscall.ENOENT)

	// The driver's own rules.
	wantErrno(t, x.XeVMDestroy(vm), syscall.EBUSY)
	_, err = x.Submit(&uapi.SubmitRequest{CtxId: q})
	wantErrno(t, err, syscall.ENOENT)
	wantErrno(t, x.CtxDestroy(q), syscall.ENOENT)
	_, err = a.XeVMCreate(0)
	wantErrno(t, err, syscall.ENOTTY)
	wantErrno(t, x.VMMap(h2, 0, 0x100000, page, 0), syscall.ENOTTY)
	_, err = x.XeVMCreate(1)
	wantErrno(t, err, syscall.EINVAL)
	ok(t, x.XeExecQueueDestroy(q))
	ok(t, x.XeVMDestroy(vm))
	wantErrno(t, x.XeVMDestroy(vm), syscall.ENOENT)
	a.Close()
	x.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestXeQueuesCompleteOutOfOrder: each exec queue has its own scheduler
// (the firmware schedules queues), so a short job on one queue completes
// while a long job submitted before it on another queue of the same VM
// still runs.
func TestXeQueuesCompleteOutOfOrder(t *testing.T) {
	env, clk := manualEnv(t, slow(xeDev()))
	x := env.Open(t, 129)
	const big = 1 << 20
	hb := must(x.BOCreate(big, gtt, 0, 0))
	hs := must(x.BOCreate(page, gtt, 0, 0))
	vm := must(x.XeVMCreate(0))
	ok(t, x.XeBind(vm, hb, 0, 0x1000000, big))
	ok(t, x.XeBind(vm, hs, 0, 0x2000000, page))
	qa, qb := must(x.XeExecQueueCreate(vm, 0)), must(x.XeExecQueueCreate(vm, 0))
	sa, sb := must(x.SyncobjCreate(false)), must(x.SyncobjCreate(false))
	xeExec(t, x, qa, []*uapi.XeExecBuffer{xbuf(0x1000000, true)}, []*uapi.Command{fill(0, 0, big, 7)}, sa)
	xeExec(t, x, qb, []*uapi.XeExecBuffer{xbuf(0x2000000, true)}, []*uapi.Command{fill(0, 0, page, 9)}, sb)
	if !clk.WaitPending(2, 20*time.Second) {
		t.Fatal("both jobs should be running")
	}
	clk.Advance(10 * time.Millisecond) // the 4 KiB fill needs 4 ms, the 1 MiB one 1 s
	if st := waitSync(t, x, sb); st.errno != 0 {
		t.Fatalf("short job: %+v", st)
	}
	if query(t, x, sa).signaled {
		t.Fatal("the long job completed after 10 ms")
	}
	clk.Advance(time.Second)
	if st := waitSync(t, x, sa); st.errno != 0 {
		t.Fatalf("long job: %+v", st)
	}
}

// lrEnv is an xe device whose compute loops take 1 ms of manual clock per
// iteration and whose regular jobs time out after 1 s.
func lrEnv(t *testing.T) (*ksimtest.Env, *ktime.Manual) {
	d := xeDev()
	d.Bandwidth = 0
	d.IterTime = time.Millisecond
	d.JobTimeout = time.Second
	return manualEnv(t, instant(amdgpuDev()), d)
}

func resvTimelines(env *ksimtest.Env, boID uint64) (signaled, pending []string) {
	for _, b := range env.Kernel.Debug().BOs {
		if b.ID != boID {
			continue
		}
		for _, e := range b.Resv {
			if e.Fence.Signaled {
				signaled = append(signaled, e.Fence.Timeline)
			} else {
				pending = append(pending, e.Fence.Timeline)
			}
		}
	}
	return
}

// TestXeLongRunningPreemptFence: a long-running VM's job runs past the
// device's job timeout without being killed; its queue's preempt fence
// sits unsignalled in the VM's BOs; PAUSE preempts the queue through it
// (the fence signals, the job stays where it was); RESUME arms a new
// fence and the job finishes with the result of an uninterrupted run.
func TestXeLongRunningPreemptFence(t *testing.T) {
	env, clk := lrEnv(t)
	c := ctlClient(t, env)
	x := env.Open(t, 129)
	const n = 64 << 10
	src, dst, ref := must(x.BOCreate(n, gtt, 0, 0)), must(x.BOCreate(n, gtt, 0, 0)), must(x.BOCreate(n, gtt, 0, 0))
	ok(t, x.Write(src, 0, pattern(n, 0x5eed5eed)))
	vm := must(x.XeVMCreate(uapi.XeVmCreateFlagLRMode))
	ok(t, x.XeBind(vm, src, 0, 0x100000, n))
	ok(t, x.XeBind(vm, dst, 0, 0x200000, n))
	q := must(x.XeExecQueueCreate(vm, 0))
	srcID := must(x.BOInfo(src)).BoId
	if _, pending := resvTimelines(env, srcID); !slices.Contains(pending, "xe-preempt") {
		t.Fatalf("no preempt fence in a bound BO: %v", pending)
	}
	s := must(x.SyncobjCreate(false))
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x200000, true), xbuf(0x100000, false)}, []*uapi.Command{compute(0, 1, n, 2000)}, s)
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("compute did not start")
	}
	clk.Advance(1500 * time.Millisecond) // past the 1 s job timeout
	if query(t, x, s).signaled {
		t.Fatal("the long-running job was killed or finished early")
	}

	id := fileID(t, c, x)
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	cp := must(c.CheckpointFile(id))
	var priv uapi.XeDriverPrivate
	ok(t, proto.Unmarshal(cp.DriverPrivate, &priv))
	if len(priv.ExecQueues) != 1 || priv.ExecQueues[0].Preemptions != 1 || !priv.ExecQueues[0].LongRunning ||
		len(priv.ExecQueues[0].Queue.Jobs) != 1 || priv.ExecQueues[0].Queue.Jobs[0].ProgressIter != 1500 {
		t.Fatalf("checkpointed queues: %v", &priv)
	}
	if _, pending := resvTimelines(env, srcID); slices.Contains(pending, "xe-preempt") {
		t.Fatal("the preempt fence did not signal at PAUSE")
	}
	ok(t, c.Resume([]uint64{id}))
	if _, pending := resvTimelines(env, srcID); !slices.Contains(pending, "xe-preempt") {
		t.Fatal("no new preempt fence after RESUME")
	}
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("the preempted job did not resume")
	}
	clk.Advance(500 * time.Millisecond)
	if st := waitSync(t, x, s); st.errno != 0 {
		t.Fatalf("long-running job: %+v", st)
	}

	// The same compute, uninterrupted, on another long-running VM.
	vm2 := must(x.XeVMCreate(uapi.XeVmCreateFlagLRMode))
	ok(t, x.XeBind(vm2, src, 0, 0x100000, n))
	ok(t, x.XeBind(vm2, ref, 0, 0x200000, n))
	q2 := must(x.XeExecQueueCreate(vm2, 0))
	s2 := must(x.SyncobjCreate(false))
	xeExec(t, x, q2, []*uapi.XeExecBuffer{xbuf(0x200000, true), xbuf(0x100000, false)}, []*uapi.Command{compute(0, 1, n, 2000)}, s2)
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("reference compute did not start")
	}
	clk.Advance(2 * time.Second)
	waitSync(t, x, s2)
	if got := readBO(t, x, dst, n); !bytes.Equal(got, readBO(t, x, ref, n)) || bytes.Equal(got, make([]byte, n)) {
		t.Fatal("the preempted job's result differs from an uninterrupted run")
	}
}

// TestXeQueueTeardownWithJobsInFlight: an exec queue destroyed while its
// job runs and another waits behind it: both fences signal ECANCELED,
// and they outlive the queue's scheduler in the BO's reservation object
// and the syncobj; nothing is left once the file goes.
func TestXeQueueTeardownWithJobsInFlight(t *testing.T) {
	env, clk := manualEnv(t, slow(xeDev()))
	base := takeCensus(env.Kernel)
	x := env.Open(t, 129)
	const n = 1 << 20
	h := must(x.BOCreate(n, gtt, 0, 0))
	vm := must(x.XeVMCreate(0))
	ok(t, x.XeBind(vm, h, 0, 0x100000, n))
	q := must(x.XeExecQueueCreate(vm, 0))
	s1, s2 := must(x.SyncobjCreate(false)), must(x.SyncobjCreate(false))
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x100000, true)}, []*uapi.Command{fill(0, 0, n, 1)}, s1)
	xeExec(t, x, q, []*uapi.XeExecBuffer{xbuf(0x100000, true)}, []*uapi.Command{fill(0, 0, n, 2)}, s2)
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("the first job did not start")
	}
	ok(t, x.XeExecQueueDestroy(q))
	for _, s := range []uint32{s1, s2} {
		if st := waitSync(t, x, s); st.errno != -int32(syscall.ECANCELED) {
			t.Fatalf("syncobj %d after teardown: %+v", s, st)
		}
	}
	if busy := must(x.WaitIdle(h, true, 20*time.Second)); busy {
		t.Fatal("BO still busy after its queue was destroyed")
	}
	// The queue's fences are still there, signalled.
	if signaled, _ := resvTimelines(env, must(x.BOInfo(h)).BoId); len(signaled) == 0 {
		t.Fatal("the finished fence is gone from the BO")
	}
	x.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestXeCheckpointRestore: an xe file with a long-running VM preempted
// half-way through a compute, a regular VM with a split binding and a
// binding whose handle was closed, and a syncobj holding the preempted
// job's fence, is checkpointed, killed and restored: the bindings are
// back, the job resumes where it stopped, and its result is the one of
// an uninterrupted run.
func TestXeCheckpointRestore(t *testing.T) {
	env, clk := lrEnv(t)
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	x := env.Open(t, 129)
	const n = 64 << 10
	src, dst := must(x.BOCreate(n, gtt, 0, 0)), must(x.BOCreate(n, gtt, 0, 0))
	ok(t, x.Write(src, 0, pattern(n, 0xc0ffee00)))
	lr := must(x.XeVMCreate(uapi.XeVmCreateFlagLRMode))
	ok(t, x.XeBind(lr, src, 0, 0x100000, n))
	ok(t, x.XeBind(lr, dst, 0, 0x200000, n))
	qlr := must(x.XeExecQueueCreate(lr, 0))
	reg := must(x.XeVMCreate(0))
	only := must(x.BOCreate(4*page, gtt, 0, 0))
	ok(t, x.XeBind(reg, only, 0, 0x400000, 4*page))
	ok(t, x.XeUnbind(reg, 0x401000, 2*page))
	ok(t, x.BOClose(only))
	qreg := must(x.XeExecQueueCreate(reg, 3))
	s := must(x.SyncobjCreate(false))
	xeExec(t, x, qlr, []*uapi.XeExecBuffer{xbuf(0x200000, true), xbuf(0x100000, false)}, []*uapi.Command{compute(0, 1, n, 1000)}, s)
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("compute did not start")
	}
	clk.Advance(400 * time.Millisecond)

	xIno := inode(t, x.FD())
	img, ids := checkpoint(t, c, []*libdrm.Device{x}, nil)
	var priv uapi.XeDriverPrivate
	ok(t, proto.Unmarshal(img.file(xIno).DriverPrivate, &priv))
	if len(priv.Vms) != 2 || len(priv.Vms[1].Bindings) != 2 || len(priv.ExecQueues) != 2 || len(img.bos) != 3 {
		t.Fatalf("checkpoint: %v, %d BOs", &priv, len(img.bos))
	}
	kill(t, c, ids, []*libdrm.Device{x}, nil)
	backToBaseline(t, env.Kernel, base)

	ss := openSession(t, env, c, img)
	rx := ss.claim(xIno)
	ss.resume()
	ss.close(false)
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("the restored job did not resume")
	}
	clk.Advance(600 * time.Millisecond)
	if st := waitSync(t, rx, s); st.errno != 0 {
		t.Fatalf("restored long-running job: %+v", st)
	}
	got := readBO(t, rx, dst, n)
	// The split binding is back: page 3 of the handle-less BO at 0x403000.
	s2 := must(rx.SyncobjCreate(false))
	xeExec(t, rx, qreg, []*uapi.XeExecBuffer{xbuf(0x403000, true)}, []*uapi.Command{fill(0, 0, page, 5)}, s2)
	waitSync(t, rx, s2)
	_, err := rx.XeExec(&uapi.XeExecRequest{ExecQueueId: qreg, Buffers: []*uapi.XeExecBuffer{xbuf(0x401000, true)}, Commands: []*uapi.Command{fill(0, 0, page, 5)}})
	wantErrno(t, err, syscall.EFAULT)
	wantErrno(t, rx.XeVMDestroy(lr), syscall.EBUSY)

	// An uninterrupted run of the same compute.
	ref := must(rx.BOCreate(n, gtt, 0, 0))
	ok(t, rx.XeBind(lr, ref, 0, 0x300000, n))
	xeExec(t, rx, qlr, []*uapi.XeExecBuffer{xbuf(0x300000, true), xbuf(0x100000, false)}, []*uapi.Command{compute(0, 1, n, 1000)}, s)
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("reference compute did not start")
	}
	clk.Advance(time.Second)
	waitSync(t, rx, s)
	if !bytes.Equal(got, readBO(t, rx, ref, n)) {
		t.Fatal("the restored job's result differs from an uninterrupted run")
	}
}

// FuzzXeOps runs an arbitrary sequence of xe requests on a fresh xe file
// (each 8 bytes of input: an op and its arguments, over a few VMs, exec
// queues and BOs), checks that every refusal is an errno with a message,
// that the kernel stays sound (an uninterrupted bystander's BO keeps its
// contents) and that everything goes with the file. The seed corpus runs
// as a normal test.
func FuzzXeOps(f *testing.F) {
	f.Add([]byte{})
	// VM, bind, split, queue, exec, destroy queue with the job in flight.
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 1, 0, 0, 4, 0, 3, 0, 0, 1, 1, 0, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 9, 200, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0})
	env := ksimtest.Start(f, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev()), instant(xeDev())}})
	by := env.Open(f, 129)
	bh := must(by.BOCreate(4096, gtt, 0, 0))
	ok(f, by.Write(bh, 0, pattern(4096, 0xc0ffee)))
	base := takeCensus(env.Kernel)

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 8*64 {
			in = in[:8*64]
		}
		x := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 129)))
		bos := []uint32{must(x.BOCreate(4*page, gtt, 0, 0)), must(x.BOCreate(page, vram, 0, 0))}
		var vms, queues []uint32
		pick := func(ids []uint32, b byte) uint32 {
			if len(ids) == 0 || b >= 200 {
				return uint32(b) // an id that may not exist
			}
			return ids[int(b)%len(ids)]
		}
		check := func(err error) {
			if err == nil {
				return
			}
			var e *uapi.Error
			if !errors.As(err, &e) || e.Msg == "" || e.Errno == 0 {
				t.Fatalf("refusal without errno and message: %v", err)
			}
		}
		for len(in) >= 8 {
			a := in[:8]
			in = in[8:]
			va := uint64(a[3])<<20 | uint64(a[4]&7)<<12
			rng := uint64(a[5]&7) << 12
			switch a[0] % 8 {
			case 0, 1:
				id, err := x.XeVMCreate(uint32(a[0]%2) * uapi.XeVmCreateFlagLRMode)
				check(err)
				if err == nil {
					vms = append(vms, id)
				}
			case 2:
				check(x.XeBind(pick(vms, a[1]), pick(bos, a[2]), uint64(a[6]&3)<<12, va, rng))
			case 3:
				check(x.XeUnbind(pick(vms, a[1]), va, rng))
			case 4:
				id, err := x.XeExecQueueCreate(pick(vms, a[1]), int32(int8(a[2])))
				check(err)
				if err == nil {
					queues = append(queues, id)
				}
			case 5:
				_, err := x.XeExec(&uapi.XeExecRequest{ExecQueueId: pick(queues, a[1]), Buffers: []*uapi.XeExecBuffer{{Va: va, Write: a[2]&1 != 0}, {Va: uint64(a[6]) << 12}},
					Commands: []*uapi.Command{{Op: uint32(a[7] % 8), Dst: int32(a[2] % 3), Src: int32(a[6]%3) - 1, Len: uint64(a[5]) << 8, Iterations: uint64(a[4])}}})
				check(err)
			case 6:
				check(x.XeExecQueueDestroy(pick(queues, a[1])))
			case 7:
				check(x.XeVMDestroy(pick(vms, a[1])))
			}
		}
		x.Close()
		eventually(t, "the fuzzed file's objects to go", func() bool {
			now := takeCensus(env.Kernel)
			return now.Files == base.Files && now.BOs == base.BOs && now.Jobs == base.Jobs
		})
		if got := readBO(t, by, bh, 4096); !bytes.Equal(got, pattern(4096, 0xc0ffee)) {
			t.Fatalf("bystander's BO changed")
		}
	})
}
