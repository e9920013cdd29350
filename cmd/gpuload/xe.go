package main

import (
	"fmt"
	"time"
)

// Scenarios of the xe uAPI (VM_BIND, exec queues, long-running VMs), and
// one across an xe and an amdgpu device.

// requireDriver checks that the render node of minor is of driver want.
func (r *runner) requireDriver(minor uint32, want string) error {
	g, err := r.openGPUOn(minor)
	if err != nil {
		return err
	}
	defer g.close()
	if g.driver != want {
		return usagef("scenario %s needs an %s device at renderD%d, which is %s", r.sc.name, want, minor, g.driver)
	}
	return nil
}

// xe-lr: longrun's plan on an xe long-running VM: each step is one
// compute job on an exec queue of the LR VM (no timeout; a checkpoint
// preempts the queue through its preempt fence and a restore resumes the
// job where it stopped), waited for on a syncobj.
func xeLRRun(r *runner) ([]byte, error) {
	p := r.p
	if err := r.requireDriver(p.minor, "xe"); err != nil {
		return nil, err
	}
	g, err := r.openGPU(vram(lrSrc, p.size), gtt(lrOut, lrOutSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	q, err := g.xeQueue(0, true)
	if err != nil {
		return nil, err
	}
	done, err := g.newSyncobj()
	if err != nil {
		return nil, err
	}
	if err := g.xeExec(q, longrunInit(p), nil, []uint32{done}); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if err := g.awaitJob(done, "setup job"); err != nil {
		return nil, err
	}
	err = r.runSteps(func(i int) error {
		return g.xeExec(q, longrunStep(p, i), nil, []uint32{done})
	}, func(int) error {
		return g.awaitJob(done, "long-running job")
	})
	if err != nil {
		return nil, err
	}
	return g.readAll(lrOut, lrSrc)
}

// xe-ooo: two exec queues of one VM, each with its own scheduler. Each
// step queue 0 regenerates the large buffer A and checksums it into OA,
// queue 1 stamps the small buffer B and checksums it into OB; the step
// waits for queue 1's job first, which completes while queue 0's, queued
// before it, still runs (out-of-order completion across queues). The
// queues share no buffer, so the result does not depend on the order.

const (
	oooA bufID = iota
	oooB
	oooOA
	oooOB
)

const oooSmall = 4096

func oooJobs(p *params, i int) (*job, *job) {
	s := stepSeed(p.seed, i, 13)
	a := newJob(fmt.Sprintf("big-%d", i), oooA, oooOA).
		randfill(oooA, 0, p.size, s).
		checksum(oooOA, 8*uint64(i%512), oooA, 0, p.size)
	b := newJob(fmt.Sprintf("small-%d", i), oooB, oooOB).
		fill(oooB, 8*uint64(i%512), 8, uint32(s>>9)).
		checksum(oooOB, 8*uint64(i%512), oooB, 0, oooSmall)
	return a, b
}

func oooExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(oooA, p.size)
	ex.alloc(oooB, oooSmall)
	ex.alloc(oooOA, oooSmall)
	ex.alloc(oooOB, oooSmall)
	if err := runPlan(ex, p.steps, func(i int) []*job {
		a, b := oooJobs(p, i)
		return []*job{a, b}
	}); err != nil {
		return nil, err
	}
	return concat(ex, oooOA, oooOB, oooB), nil
}

func oooRun(r *runner) ([]byte, error) {
	p := r.p
	if err := r.requireDriver(p.minor, "xe"); err != nil {
		return nil, err
	}
	g, err := r.openGPU(vram(oooA, p.size), gtt(oooB, oooSmall), gtt(oooOA, oooSmall), gtt(oooOB, oooSmall))
	if err != nil {
		return nil, err
	}
	defer g.close()
	var qs [2]uint32
	var done [2]uint32
	for k := range qs {
		if qs[k], err = g.xeQueue(0, false); err != nil {
			return nil, err
		}
		if done[k], err = g.newSyncobj(); err != nil {
			return nil, err
		}
	}
	err = r.runSteps(func(i int) error {
		a, b := oooJobs(p, i)
		if err := g.xeExec(qs[0], a, nil, []uint32{done[0]}); err != nil {
			return err
		}
		return g.xeExec(qs[1], b, nil, []uint32{done[1]})
	}, func(int) error {
		if err := g.awaitJob(done[1], "small job"); err != nil {
			return err
		}
		return g.awaitJob(done[0], "big job")
	})
	if err != nil {
		return nil, err
	}
	return g.readAll(oooOA, oooOB, oooB)
}

// xcross: crossdev with the two devices of different drivers: the
// producer on -minor shares a BO of its device with a consumer on
// -minor2, which imports it into a file of the other driver (an import
// attachment, not the exporter's GEM object). Run it with an xe and an
// amdgpu device either way round.
func xcrossRun(r *runner) ([]byte, error) {
	a, err := libdrmDriver(r, r.p.minor)
	if err != nil {
		return nil, err
	}
	b, err := libdrmDriver(r, r.p.minor2)
	if err != nil {
		return nil, err
	}
	if a == b {
		return nil, usagef("scenario xcross needs devices of two drivers, renderD%d and renderD%d are both %s", r.p.minor, r.p.minor2, a)
	}
	return prodconsRun(r)
}

func libdrmDriver(r *runner, minor uint32) (string, error) {
	g, err := r.openGPUOn(minor)
	if err != nil {
		return "", err
	}
	defer g.close()
	return g.driver, nil
}

func init() {
	register(&scenario{
		name:    "xe-lr",
		order:   30,
		drivers: "xe",
		desc:    "longrun on an xe long-running VM: each step a compute on an exec queue of the LR VM (no timeout, preempted through its preempt fence), waited for on a syncobj; default 1 step of 40000 iterations (4 s)",
		steps:   1,
		expect:  longrunExpect,
		run:     xeLRRun,
	})
	register(&scenario{
		name:    "xe-ooo",
		order:   31,
		drivers: "xe",
		desc:    "two exec queues of one xe VM: per step a large job on queue 0 and a small one on queue 1, which completes first",
		steps:   20,
		delay:   100 * time.Millisecond,
		expect:  oooExpect,
		run:     oooRun,
	})
	register(&scenario{
		name:    "xcross",
		order:   32,
		drivers: "xe+amdgpu",
		desc:    "crossdev between devices of two drivers (-minor and -minor2, xe and amdgpu either way round): the consumer imports the producer's BO as an import attachment on its own device",
		steps:   40,
		delay:   100 * time.Millisecond,
		expect:  prodconsExpect,
		run:     abortChildrenOnError(xcrossRun),
		roles: map[string]func(*runner, *peer) error{"consumer": func(r *runner, parent *peer) error {
			return prodconsConsume(r, parent, r.p.minor2)
		}},
	})
}
