package main

import (
	"fmt"
	"time"
)

// stuck: a client that cannot drain. Step 1 fills Buf, then submits a job
// that depends on point 1 of the client's own sw_sync timeline (through a
// syncobj in InSyncobjs) and only advances the timeline -stuck-for later.
// During that window the context has queued work that cannot run, so a
// checkpoint (which must drain the context) times out and fails; the
// client carries on, signals, runs steps 2..N and finishes normally.
// Output: Buf, Out.

const (
	stBuf bufID = iota
	stOut
)

const stOutSize = 4096

func stuckFill(p *params) *job {
	return newJob("fill", stBuf).randfill(stBuf, 0, p.size, stepSeed(p.seed, 0, 9))
}

func stuckBlocked(p *params) *job {
	return newJob("blocked", stBuf, stOut).
		checksum(stOut, 0, stBuf, 0, p.size).
		addCounter(stOut, 8, stepSeed(p.seed, 0, 10)).
		copy(stOut, 1024, stBuf, 0, 1024)
}

// stuckStep is the job of step i >= 1 (0-based), after the signal.
func stuckStep(p *params, i int) *job {
	s := stepSeed(p.seed, i, 11)
	part := p.size / 8
	r := uint64(i%8) * part
	return newJob(fmt.Sprintf("after-%d", i), stBuf, stOut).
		randfill(stBuf, r, part, s).
		checksum(stOut, 2048+8*uint64(i%256), stBuf, 0, p.size)
}

// stuckJobs are step i's jobs in program order: step 1 (i == 0) fills Buf
// and queues the blocked job, every later step has one job.
func stuckJobs(p *params, i int) []*job {
	if i == 0 {
		return []*job{stuckFill(p), stuckBlocked(p)}
	}
	return []*job{stuckStep(p, i)}
}

func stuckExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(stBuf, p.size)
	ex.alloc(stOut, stOutSize)
	if err := runPlan(ex, p.steps, func(i int) []*job { return stuckJobs(p, i) }); err != nil {
		return nil, err
	}
	return concat(ex, stBuf, stOut), nil
}

func stuckRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(stBuf, p.size), gtt(stOut, stOutSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	tl, err := g.dev.SwSyncCreate()
	if err != nil {
		return nil, fmt.Errorf("create sw_sync timeline: %w", err)
	}
	in, err := g.newSyncobj()
	if err != nil {
		return nil, err
	}
	out, err := g.newSyncobj()
	if err != nil {
		return nil, err
	}
	err = r.runSteps(func(i int) error {
		if i > 0 {
			return g.submit(ctx, stuckStep(p, i))
		}
		if err := g.submit(ctx, stuckFill(p)); err != nil {
			return err
		}
		if err := g.dev.SwSyncFence(tl, 1, in); err != nil {
			return fmt.Errorf("sw_sync fence: %w", err)
		}
		return g.submitSync(ctx, stuckBlocked(p), []uint32{in}, []uint32{out})
	}, func(i int) error {
		if i > 0 {
			return nil
		}
		r.infof("job queued behind sw_sync point 1; signalling in %v", p.stuckFor)
		time.Sleep(p.stuckFor)
		if err := g.dev.SwSyncInc(tl, 1); err != nil {
			return fmt.Errorf("signal sw_sync: %w", err)
		}
		r.infof("sw_sync timeline signalled")
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := g.awaitJob(out, "blocked job"); err != nil {
		return nil, err
	}
	return g.readAll(stBuf, stOut)
}

func init() {
	register(&scenario{
		name:   "stuck",
		order:  6,
		desc:   "a job waits on the client's own sw_sync fence, signalled only after -stuck-for (default 30s): a dump in that window must time out",
		steps:  3,
		delay:  100 * time.Millisecond,
		expect: stuckExpect,
		run:    stuckRun,
	})
}
