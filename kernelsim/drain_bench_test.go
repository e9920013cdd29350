package kernelsim_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

// BenchmarkPauseBesideABusyNeighbour measures how long PAUSE takes to
// return after the paused file's own last job finished, alone on the
// device ("alone", the baseline) and with another process keeping the
// shared ring full of 60 ms jobs ("busy-neighbour"). The metric
// ms-after-own-job is the median over the iterations; the target is at
// most 20 ms, however busy the neighbour.
func BenchmarkPauseBesideABusyNeighbour(b *testing.B) {
	for _, busy := range []bool{false, true} {
		name := "alone"
		if busy {
			name = "busy-neighbour"
		}
		b.Run(name, func(b *testing.B) {
			dev := amdgpuDev()
			dev.Bandwidth = 64 << 20 // a 4 MiB fill takes about 60 ms
			dev.JobTimeout = 0
			k := must(kernelsim.New(kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}}))
			defer k.Shutdown()
			bg := context.Background()
			ctx, stop := context.WithCancel(bg)
			var wg sync.WaitGroup
			if busy {
				nb := k.Device(128).Open(kernelsim.Cred{PID: 1})
				h := must(nb.GemCreate(4<<20, vram, 0, 0))
				c := must(nb.CtxCreate(0))
				so := must(nb.SyncobjCreate(false))
				req := &uapi.SubmitRequest{CtxId: c, Bos: []*uapi.SubmitBo{bo(h, true)},
					Commands: []*uapi.Command{fill(0, 0, 4<<20, 1)}, OutSyncobjs: []uint32{so}}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						// Keep about 6 jobs ahead on the ring.
						for range 6 {
							if _, err := nb.Submit(ctx, req); err != nil {
								return
							}
						}
						nb.SyncobjWait(ctx, []uint32{so}, -1, true, false)
					}
				}()
				time.Sleep(100 * time.Millisecond)
			}
			f := k.Device(128).Open(kernelsim.Cred{PID: 2})
			h := must(f.GemCreate(64<<10, vram, 0, 0))
			c := must(f.CtxCreate(0))
			so := must(f.SyncobjCreate(false))
			req := &uapi.SubmitRequest{CtxId: c, Bos: []*uapi.SubmitBo{bo(h, true)},
				Commands: []*uapi.Command{fill(0, 0, 64<<10, 2)}, OutSyncobjs: []uint32{so}}
			var after []time.Duration
			for b.Loop() {
				must(f.Submit(bg, req))
				finished := make(chan time.Time, 1)
				go func() {
					f.SyncobjWait(bg, []uint32{so}, -1, true, false)
					finished <- time.Now()
				}()
				ok(b, k.Pause([]uint64{f.ID()}, time.Minute))
				returned := time.Now()
				after = append(after, returned.Sub(<-finished))
				k.Resume([]uint64{f.ID()})
			}
			stop()
			f.Close()
			wg.Wait()
			sort.Slice(after, func(i, j int) bool { return after[i] < after[j] })
			b.ReportMetric(float64(after[len(after)/2])/float64(time.Millisecond), "ms-after-own-job")
			b.ReportMetric(float64(after[len(after)-1])/float64(time.Millisecond), "ms-after-own-job-max")
		})
	}
}
