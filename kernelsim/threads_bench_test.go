package kernelsim_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// BenchmarkThreadsOneFile: N threads share one drm file of a kernelsimd
// process; each, in a loop, submits a job of 1 ms of GPU time (one compute
// iteration) on a context of its own and waits for it (SUBMIT, then an
// unbounded SYNCOBJ_WAIT on its out-syncobj). Devices:
//
//   - xe: firmware scheduling, a queue per context: the device runs the N
//     threads' jobs at once, so its capacity grows with N;
//   - amdgpu: one ring, one job at a time.
//
// The baseline of each device, in the same run, is its capacity: one
// context kept full by a submitter that never waits ("pipelined": jobs
// back to back, a wait for the last one only); on xe that is the capacity
// of one queue, N of which run at once. Each sub-benchmark reports jobs/s,
// ratio (over 1 thread on the same device) and capacity-ratio (over the
// device's capacity for N contexts: N queues on xe, the ring on amdgpu).
// "serialised" runs the same threads with a lock held across each
// request, as a client library allowing one request in flight per drm
// file does (kernelsim's before requests ran concurrently): a thread's
// wait holds up the others' submits.
func BenchmarkThreadsOneFile(b *testing.B) {
	const iter = time.Millisecond
	env := ksimtest.StartDaemon(b, kernelsimd(b),
		fmt.Sprintf("-device=driver=amdgpu,minor=128,iter=%v,timeout=10s", iter),
		fmt.Sprintf("-device=driver=xe,minor=129,iter=%v,timeout=10s", iter))
	for _, dev := range []struct {
		name   string
		minor  uint32
		queues bool // a queue per context
	}{{"xe", 129, true}, {"amdgpu", 128, false}} {
		var capacity, one float64 // jobs/s: pipelined; 1 thread
		b.Run(dev.name+"/pipelined", func(b *testing.B) {
			capacity = runPipelined(b, env, dev.minor)
			b.ReportMetric(capacity, "jobs/s")
		})
		for _, mode := range []string{"concurrent", "serialised"} {
			for _, n := range []int{1, 2, 4, 8, 16} {
				if mode == "serialised" && n > 4 {
					continue
				}
				b.Run(fmt.Sprintf("%s/%s/threads=%d", dev.name, mode, n), func(b *testing.B) {
					rate := runThreads(b, env, dev.minor, n, mode == "serialised")
					if mode == "concurrent" && n == 1 {
						one = rate
					}
					b.ReportMetric(rate, "jobs/s")
					if one > 0 {
						b.ReportMetric(rate/one, "ratio")
					}
					queues := 1 // the jobs the device runs at once
					if dev.queues {
						queues = n
					}
					if capacity > 0 {
						b.ReportMetric(rate/(capacity*float64(queues)), "capacity-ratio")
					}
				})
			}
		}
	}
}

// job is the benchmark's job: one compute iteration (1 ms of GPU time).
func benchJob(d *libdrm.Device) *uapi.SubmitRequest {
	return &uapi.SubmitRequest{CtxId: must(d.CtxCreate(0)),
		Bos:      []*uapi.SubmitBo{bo(must(d.BOCreate(4096, gtt, 0, 0)), true), bo(must(d.BOCreate(4096, gtt, 0, 0)), false)},
		Commands: []*uapi.Command{compute(0, 1, 4096, 1)}}
}

// runPipelined submits b.N jobs back to back on one context and waits for
// the last: the device (or its queue) never idles.
func runPipelined(b *testing.B, env *ksimtest.Env, minor uint32) float64 {
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, minor)))
	defer d.Close()
	req := benchJob(d)
	so := must(d.SyncobjCreate(false))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		req.OutSyncobjs = nil
		if i == b.N-1 {
			req.OutSyncobjs = []uint32{so}
		}
		if _, err := d.Submit(req); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := d.SyncobjWait([]uint32{so}, -1, true, false); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	return float64(b.N) / elapsed.Seconds()
}

// runThreads runs b.N jobs over n threads sharing one drm file, each
// waiting for its job before the next, and returns the jobs per second.
func runThreads(b *testing.B, env *ksimtest.Env, minor uint32, n int, serialised bool) float64 {
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, minor)))
	defer d.Close()
	reqs := make([]*uapi.SubmitRequest, n)
	for i := range reqs {
		reqs[i] = benchJob(d)
		reqs[i].OutSyncobjs = []uint32{must(d.SyncobjCreate(false))}
	}
	var lock sync.Mutex
	call := func(f func() error) error {
		if serialised {
			lock.Lock()
			defer lock.Unlock()
		}
		return f()
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ResetTimer()
	start := time.Now()
	for i, req := range reqs {
		jobs := b.N / n
		if i < b.N%n {
			jobs++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := call(func() error { _, err := d.Submit(req); return err }); err != nil {
					errs <- err
					return
				}
				if err := call(func() error { _, err := d.SyncobjWait(req.OutSyncobjs, -1, true, false); return err }); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(b.N) / elapsed.Seconds()
}
