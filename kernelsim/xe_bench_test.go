package kernelsim_test

import (
	"slices"
	"testing"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// interleave measures a path and its baseline in alternating batches of
// batch ops (after warm of each), so that both see the same load, and
// reports both per op, as "<name>-ns/op" and "<baseName>-ns/op", and the
// median of the batches' ratios path/baseline, which a burst of load on
// this shared machine moves less than a ratio of totals.
func interleave(b *testing.B, warm, batch int, name string, path func(), baseName string, baseline func()) {
	for range warm {
		path()
		baseline()
	}
	var tPath, tBase time.Duration
	var ratios []float64
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		t0 := time.Now()
		for range n {
			path()
		}
		t1 := time.Now()
		for range n {
			baseline()
		}
		t2 := time.Now()
		tPath += t1.Sub(t0)
		tBase += t2.Sub(t1)
		ratios = append(ratios, float64(t1.Sub(t0))/float64(t2.Sub(t1)))
		done += n
	}
	b.StopTimer()
	slices.Sort(ratios)
	b.ReportMetric(float64(tPath.Nanoseconds())/float64(b.N), name+"-ns/op")
	b.ReportMetric(float64(tBase.Nanoseconds())/float64(b.N), baseName+"-ns/op")
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
}

// BenchmarkXeExecRoundTrip: an XE_EXEC of a 4 KiB fill through a VM
// binding, waited for on a syncobj, against its baseline, the same job
// through amdgpu's SUBMIT on a context.
func BenchmarkXeExecRoundTrip(b *testing.B) {
	env := ksimtest.Start(b, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev()), instant(xeDev())}})
	a, x := env.Open(b, 128), env.Open(b, 129)
	ha, hx := must(a.BOCreate(4096, gtt, 0, 0)), must(x.BOCreate(4096, gtt, 0, 0))
	ctx := must(a.CtxCreate(0))
	vm := must(x.XeVMCreate(0))
	ok(b, x.XeBind(vm, hx, 0, 0x100000, 4096))
	q := must(x.XeExecQueueCreate(vm, 0))
	sa, sx := must(a.SyncobjCreate(false)), must(x.SyncobjCreate(false))
	wait := func(d *libdrm.Device, s uint32) {
		if _, err := d.SyncobjWait([]uint32{s}, 10*time.Second, true, true); err != nil {
			b.Fatal(err)
		}
	}
	interleave(b, 20, 50, "xe", func() {
		must(x.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: []*uapi.XeExecBuffer{{Va: 0x100000, Write: true}},
			Commands: []*uapi.Command{fill(0, 0, 4096, 1)}, OutSyncobjs: []uint32{sx}}))
		wait(x, sx)
	}, "amdgpu", func() {
		must(a.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(ha, true)},
			Commands: []*uapi.Command{fill(0, 0, 4096, 1)}, OutSyncobjs: []uint32{sa}}))
		wait(a, sa)
	})
}

// BenchmarkXePreemptResume: PAUSE and RESUME of a file whose long-running
// xe job is preempted through its queue's preempt fence (and re-armed),
// against its baseline, an amdgpu file's long-running job preempted by
// the scheduler.
func BenchmarkXePreemptResume(b *testing.B) {
	amd, xe := amdgpuDev(), xeDev()
	for _, d := range []*kernelsim.DeviceConfig{&amd, &xe} {
		d.Bandwidth, d.IterTime, d.JobTimeout = 0, time.Millisecond, 0
	}
	env := ksimtest.Start(b, kernelsim.Config{Devices: []kernelsim.DeviceConfig{amd, xe}})
	c := ctlClient(b, env)
	a, x := env.Open(b, 128), env.Open(b, 129)
	const n = 4096
	srcA, dstA := must(a.BOCreate(n, gtt, 0, 0)), must(a.BOCreate(n, gtt, 0, 0))
	srcX, dstX := must(x.BOCreate(n, gtt, 0, 0)), must(x.BOCreate(n, gtt, 0, 0))
	ctx := must(a.CtxCreate(0))
	must(a.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(dstA, true), bo(srcA, false)},
		Commands: []*uapi.Command{compute(0, 1, n, 1<<32)}, LongRunning: true}))
	vm := must(x.XeVMCreate(uapi.XeVmCreateFlagLRMode))
	ok(b, x.XeBind(vm, srcX, 0, 0x100000, n))
	ok(b, x.XeBind(vm, dstX, 0, 0x200000, n))
	q := must(x.XeExecQueueCreate(vm, 0))
	must(x.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: []*uapi.XeExecBuffer{{Va: 0x200000, Write: true}, {Va: 0x100000}},
		Commands: []*uapi.Command{compute(0, 1, n, 1<<32)}}))
	ida, idx := fileID(b, c, a), fileID(b, c, x)
	cycle := func(id uint64) func() {
		return func() {
			ok(b, c.Pause([]uint64{id}, 10*time.Second))
			ok(b, c.Resume([]uint64{id}))
		}
	}
	interleave(b, 20, 50, "xe", cycle(idx), "amdgpu", cycle(ida))
	x.Close()
	a.Close()
}
