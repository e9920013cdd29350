package main

import (
	"fmt"
	"time"
)

// single: one process, three buffers, two contexts. Each step the first
// context regenerates A and stamps a pattern into B, the second copies part
// of A into B and accumulates checksums and counters into C; every third
// step the first context copies part of C back into B. The contexts are
// ordered only by implicit sync through the shared buffers.

const (
	singleA bufID = iota
	singleB
	singleC
)

const singleCSize = 4096

// singleCtxJob is a job and the context (0 or 1) it is submitted on.
type singleCtxJob struct {
	ctx int
	j   *job
}

func singleStep(p *params, i int) []singleCtxJob {
	s := stepSeed(p.seed, i, 1)
	S := p.size
	L := S / 4
	o1 := (s >> 8) % (S - L)
	o2 := (s >> 24) % (S - L)
	o3 := (s >> 40) % (S - L)
	out := []singleCtxJob{
		{0, newJob(fmt.Sprintf("produce-%d", i), singleA, singleB).
			randfill(singleA, 0, S, s).
			fill(singleB, o1, L, uint32(s>>7))},
		{1, newJob(fmt.Sprintf("consume-%d", i), singleA, singleB, singleC).
			copy(singleB, o3, singleA, o2, L).
			checksum(singleC, 8*uint64(i%256), singleB, 0, S).
			checksum(singleC, 2048+8*uint64(i%128), singleA, o2, L).
			addCounter(singleC, 3072+8*uint64(i%16), s)},
	}
	if i%3 == 2 {
		o4 := (s % ((S - 1024) / 8)) * 8
		out = append(out, singleCtxJob{0, newJob(fmt.Sprintf("feedback-%d", i), singleC, singleB).
			copy(singleB, o4, singleC, 0, 1024).
			addCounter(singleB, o4, uint64(i))})
	}
	return out
}

func singleExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(singleA, p.size)
	ex.alloc(singleB, p.size)
	ex.alloc(singleC, singleCSize)
	if err := ex.write(singleB, 0, initPattern(p.seed, p.size)); err != nil {
		return nil, err
	}
	err := runPlan(ex, p.steps, func(i int) []*job {
		var jobs []*job
		for _, cj := range singleStep(p, i) {
			jobs = append(jobs, cj.j)
		}
		return jobs
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, singleA, singleB, singleC), nil
}

func singleRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(singleA, p.size), vram(singleB, p.size), gtt(singleC, singleCSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	if err := g.dev.Write(g.handles[singleB], 0, initPattern(p.seed, p.size)); err != nil {
		return nil, fmt.Errorf("write initial data: %w", err)
	}
	var ctxs [2]uint32
	for k := range ctxs {
		if ctxs[k], err = g.newContext(int32(k)); err != nil {
			return nil, err
		}
	}
	err = r.runSteps(func(i int) error {
		for _, cj := range singleStep(p, i) {
			if err := g.submit(ctxs[cj.ctx], cj.j); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return g.readAll(singleA, singleB, singleC)
}

func init() {
	register(&scenario{
		name:   "single",
		order:  1,
		desc:   "one process, 3 buffers, 2 contexts: randfill/fill/copy/checksum/addcounter jobs ordered by implicit sync",
		steps:  40,
		delay:  100 * time.Millisecond,
		expect: singleExpect,
		run:    singleRun,
	})
}
