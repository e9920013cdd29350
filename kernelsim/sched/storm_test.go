package sched_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/sched"
)

// countingBackend counts FreeJob calls per job.
type countingBackend struct {
	*gpu.Backend
	mu    sync.Mutex
	frees map[uint64]int
}

func (c *countingBackend) FreeJob(j *sched.Job) {
	c.mu.Lock()
	c.frees[j.ID()]++
	c.mu.Unlock()
	c.Backend.FreeJob(j)
}

// TestDestroyAtRandomInstants tears entities and schedulers down at random
// moments while jobs are queued, waiting on dependencies, running, hung,
// preempted or paused, and checks the invariants: every finished fence
// signals, every job is freed exactly once, and jobs, fences and
// goroutines return to their baselines.
func TestDestroyAtRandomInstants(t *testing.T) {
	leakCheck(t)
	iters := 150
	if testing.Short() {
		iters = 30
	}
	for it := range iters {
		stormOnce(t, uint64(it))
		if t.Failed() {
			t.Fatalf("failed at iteration %d", it)
		}
	}
}

func stormOnce(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	jobsBase := sched.LiveJobs()
	clk := ktime.NewManual()
	eng := gpu.NewEngine(gpu.EngineConfig{Clock: clk, Bandwidth: 1000, IterTime: time.Millisecond})
	var timeout time.Duration
	if rng.IntN(2) == 0 {
		timeout = 30 * time.Millisecond
	}
	firmware := rng.IntN(2) == 0
	var backends []*countingBackend
	var scheds []*sched.Scheduler
	newSched := func(name string) *sched.Scheduler {
		cb := &countingBackend{Backend: gpu.NewBackend(eng, name), frees: make(map[uint64]int)}
		mode := sched.Classic
		if firmware {
			mode = sched.Firmware
		}
		s := sched.New(sched.Config{Name: name, Credits: 1 + rng.IntN(4), Timeout: timeout, Clock: clk, Mode: mode}, cb)
		backends = append(backends, cb)
		scheds = append(scheds, s)
		return s
	}
	var ents []*sched.Entity
	for i := range 3 {
		if firmware || i == 0 {
			newSched("s")
		}
		ents = append(ents, scheds[len(scheds)-1].NewEntity("e"))
	}
	tl := dma.NewSwSyncTimeline("storm")
	buf := newBuf(256)
	var fins []*dma.Fence
	var ids []uint64

	mkJob := func(e *sched.Entity) {
		var deps []*dma.Fence
		switch rng.IntN(4) {
		case 0:
			deps = append(deps, tl.CreateFence(1+rng.Uint64N(4)))
		case 1:
			if len(fins) > 0 {
				deps = append(deps, fins[rng.IntN(len(fins))].Get())
			}
		}
		lr := false
		var p *gpu.JobPayload
		switch k := rng.IntN(10); {
		case k < 6:
			p = fill(buf, 1+rng.Uint64N(40), rng.Uint64N(1<<32))
		case k < 9:
			lr = true
			p = &gpu.JobPayload{Cmds: []gpu.Command{{Op: gpu.OpCompute, Src: 0, Len: 64, Dst: 0, DstOff: 128, Iterations: 5 + rng.Uint64N(60)}}, Bufs: []gpu.Buffer{buf}}
		default:
			p = &gpu.JobPayload{Cmds: []gpu.Command{{Op: gpu.OpHang}}}
		}
		j, err := e.NewJob(deps, p, lr)
		if err != nil {
			return // entity already destroyed: deps were consumed
		}
		fins = append(fins, j.Finished().Get())
		ids = append(ids, j.ID())
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		e.Push(ctx, j) // may fail (paused, guilty, destroyed): consumed either way
	}
	for range 4 + rng.IntN(10) {
		mkJob(ents[rng.IntN(len(ents))])
	}

	// The clock runs concurrently with everything below.
	stop := make(chan struct{})
	var drv sync.WaitGroup
	drv.Go(func() {
		r := rand.New(rand.NewPCG(seed, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(time.Duration(r.IntN(8)) * time.Millisecond)
			runtime.Gosched()
		}
	})
	alive := append([]*sched.Entity(nil), ents...)
	for len(alive) > 0 {
		e := alive[rng.IntN(len(alive))]
		switch rng.IntN(7) {
		case 0:
			tl.Inc(1)
		case 1:
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(300))*time.Microsecond)
			e.Pause(ctx)
			cancel()
		case 2:
			e.Resume()
		case 3:
			mkJob(e)
		case 4, 5:
			for range rng.IntN(50) {
				runtime.Gosched()
			}
		case 6:
			e.Destroy()
			for i, x := range alive {
				if x == e {
					alive = append(alive[:i], alive[i+1:]...)
					break
				}
			}
			if rng.IntN(2) == 0 {
				mkJob(e) // after destroy: refused and freed
			}
		}
	}
	for _, s := range scheds {
		s.Fini()
	}
	close(stop)
	drv.Wait()
	tl.Release() // cancelled jobs waiting on its points can now complete

	for _, f := range fins {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f.Wait(ctx)
		cancel()
		if err != nil {
			t.Fatalf("seed %d: finished %v never signalled", seed, f)
		}
		f.Put()
	}
	total := map[uint64]int{}
	for _, cb := range backends {
		cb.mu.Lock()
		for id, n := range cb.frees {
			total[id] += n
		}
		cb.mu.Unlock()
	}
	for _, id := range ids {
		if total[id] != 1 {
			t.Errorf("seed %d: job %d freed %d times", seed, id, total[id])
		}
	}
	if got := sched.LiveJobs(); got != jobsBase {
		t.Errorf("seed %d: live jobs %d, want %d", seed, got, jobsBase)
	}
}
