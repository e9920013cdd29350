package main

import (
	"fmt"
	"time"

	"drmcr/kernelsim/uapi"
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

func stuckExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(stBuf, p.size)
	ex.alloc(stOut, stOutSize)
	jobs := []*job{stuckFill(p), stuckBlocked(p)}
	for i := 1; i < p.steps; i++ {
		jobs = append(jobs, stuckStep(p, i))
	}
	for _, j := range jobs {
		if err := ex.run(j); err != nil {
			return nil, err
		}
	}
	return concat(ex, stBuf, stOut), nil
}

func stuckRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU()
	if err != nil {
		return nil, err
	}
	defer g.close()
	if err := g.create(stBuf, p.size, uapi.Domain_DOMAIN_VRAM); err != nil {
		return nil, err
	}
	if err := g.create(stOut, stOutSize, uapi.Domain_DOMAIN_GTT); err != nil {
		return nil, err
	}
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
	r.setupDone()

	if err := g.submit(ctx, stuckFill(p)); err != nil {
		return nil, fmt.Errorf("step 1: %w", err)
	}
	if err := g.dev.SwSyncFence(tl, 1, in); err != nil {
		return nil, fmt.Errorf("step 1: sw_sync fence: %w", err)
	}
	if err := g.submitSync(ctx, stuckBlocked(p), []uint32{in}, []uint32{out}); err != nil {
		return nil, fmt.Errorf("step 1: %w", err)
	}
	r.progress(1)
	r.infof("job queued behind sw_sync point 1; signalling in %v", p.stuckFor)
	time.Sleep(p.stuckFor)
	if err := g.dev.SwSyncInc(tl, 1); err != nil {
		return nil, fmt.Errorf("step 1: signal sw_sync: %w", err)
	}
	r.infof("sw_sync timeline signalled")
	r.stepDelay(1)
	for i := 1; i < p.steps; i++ {
		if err := g.submit(ctx, stuckStep(p, i)); err != nil {
			return nil, fmt.Errorf("step %d: %w", i+1, err)
		}
		r.progress(i + 1)
		r.stepDelay(i + 1)
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
