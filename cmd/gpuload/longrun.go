package main

import (
	"fmt"
)

// longrun: one process; Src is filled on the GPU, then each step submits a
// long-running job (SubmitRequest.LongRunning) whose OpCompute runs
// -iterations iterations over Src into Out and copies the result back into
// Src (so each step depends on the previous), and waits for it on an
// out-syncobj with an unbounded SyncobjWait. With the default device
// (IterTime 100µs) the default 40000 iterations take 4 s: a dump preempts
// the job mid-loop and a restore must resume it from its progress.
// Output: Out, Src.

const (
	lrSrc bufID = iota
	lrOut
)

const lrOutSize = 4096

func longrunInit(p *params) *job {
	return newJob("init", lrSrc).randfill(lrSrc, 0, p.size, stepSeed(p.seed, 0, 8))
}

func longrunStep(p *params, i int) *job {
	slot := 8 * uint64(i%512)
	j := newJob(fmt.Sprintf("compute-%d", i), lrSrc, lrOut).
		compute(lrOut, slot, lrSrc, 0, p.size, p.iterations).
		copy(lrSrc, 8*uint64(i%int(p.size/8)), lrOut, slot, 8)
	j.longRunning = true
	return j
}

func longrunExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(lrSrc, p.size)
	ex.alloc(lrOut, lrOutSize)
	if err := ex.run(longrunInit(p)); err != nil {
		return nil, err
	}
	if err := runPlan(ex, p.steps, func(i int) []*job { return []*job{longrunStep(p, i)} }); err != nil {
		return nil, err
	}
	return concat(ex, lrOut, lrSrc), nil
}

func longrunRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(lrSrc, p.size), gtt(lrOut, lrOutSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	if err := g.submit(ctx, longrunInit(p)); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	done, err := g.newSyncobj()
	if err != nil {
		return nil, err
	}
	err = r.runSteps(func(i int) error {
		return g.submitSync(ctx, longrunStep(p, i), nil, []uint32{done})
	}, func(int) error {
		return g.awaitJob(done, "long-running job")
	})
	if err != nil {
		return nil, err
	}
	return g.readAll(lrOut, lrSrc)
}

func init() {
	register(&scenario{
		name:   "longrun",
		order:  5,
		desc:   "long-running compute job (preemptible, no timeout) per step, waited for with a syncobj; default 1 step of 40000 iterations (4 s)",
		steps:  1,
		expect: longrunExpect,
		run:    longrunRun,
	})
}
