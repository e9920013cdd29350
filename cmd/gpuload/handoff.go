package main

import "fmt"

// handoff: pipeline turned around, so that a checkpoint finds a regular job
// queued behind another process's long-running job. The producer (parent)
// owns buffer Sh, exports it and sends the dma-buf fd to the consumer child
// (then closes its own copy, keeping its GEM handle). Each step the
// producer submits a long-running job that refills Sh past its first page
// (randfill, per-step seed), copies the previous step's result into the
// first word of that range (so each step depends on the previous) and runs
// -iterations OpCompute iterations over it into the step's slot in Sh's
// first page; it does not wait for the job. It tells the consumer, which
// (importing Sh on the first step) submits a regular job reading Sh into
// its own buffer Out (a checksum of Sh, a copy of the step's compute result
// and an add-counter), ordered after the producer's job only by implicit
// sync on Sh, acknowledges the submission (the producer then reports the
// step), waits for its job on an out-syncobj with an unbounded SyncobjWait
// and reports completion; only then does the producer start the next step
// (whose write is ordered after the consumer's read by implicit sync too).
// With the default device (IterTime 100µs) and the defaults (3 steps of
// 15000 iterations, no step delay) each step's compute runs 1.5 s and the
// whole run about 4.5 s, nearly all of it with the consumer's job queued
// behind the producer's: a dump at any time after "step 1/N" preempts the
// producer's job mid-loop and finds the consumer's waiting on it. Output:
// Out, Sh (as the consumer reads them back at the end).

const (
	hoShared bufID = iota
	hoOut
)

const (
	hoOutSize         = 4096
	hoHeader          = 4096  // Sh's first page holds the step results
	handoffIterations = 15000 // 1.5 s at the default device's 100µs per iteration
)

// handoffSlot is where step i's compute result goes in Sh's first page.
func handoffSlot(i int) uint64 { return 8 * uint64(i%(hoHeader/8)) }

func handoffProducer(p *params, i int) *job {
	j := newJob(fmt.Sprintf("compute-%d", i), hoShared).
		randfill(hoShared, hoHeader, p.size-hoHeader, stepSeed(p.seed, i, 14))
	if i > 0 {
		j.copy(hoShared, hoHeader, hoShared, handoffSlot(i-1), 8)
	}
	j.compute(hoShared, handoffSlot(i), hoShared, hoHeader, p.size-hoHeader, p.iterations)
	j.longRunning = true
	return j
}

func handoffConsumer(p *params, i int) *job {
	k := 8 * uint64(i%128)
	return newJob(fmt.Sprintf("consume-%d", i), hoShared, hoOut).
		checksum(hoOut, k, hoShared, 0, p.size).
		copy(hoOut, 1024+k, hoShared, handoffSlot(i), 8).
		addCounter(hoOut, 2048+k, stepSeed(p.seed, i, 15))
}

func handoffExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(hoShared, p.size)
	ex.alloc(hoOut, hoOutSize)
	err := runPlan(ex, p.steps, func(i int) []*job {
		return []*job{handoffProducer(p, i), handoffConsumer(p, i)}
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, hoOut, hoShared), nil
}

func handoffRun(r *runner) ([]byte, error) {
	return runProducer(r, hoShared, handoffProducer, true)
}

// handoffConsumerRole submits each step's job behind the producer's
// long-running job, acknowledges the submission, waits for the job and
// reports its completion.
func handoffConsumerRole(r *runner, parent *peer) error {
	p := r.p
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	defer closeFDs([]int{fd})
	g, err := r.openGPU(gtt(hoOut, hoOutSize))
	if err != nil {
		return err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return err
	}
	done, err := g.newSyncobj()
	if err != nil {
		return err
	}
	s := &stepServer{
		submit: func(i int) error {
			if i == 0 {
				if err := g.importBuf(hoShared, fd, p.size); err != nil {
					return err
				}
			}
			return g.submitSync(ctx, handoffConsumer(p, i), nil, []uint32{done})
		},
		afterAck: func(i int) error {
			if err := g.awaitJob(done, "consumer job"); err != nil {
				return err
			}
			return parent.reportStepDone(i)
		},
		end:   msgFinish,
		onEnd: func() error { return g.sendBuffers(parent, hoOut, hoShared) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:       "handoff",
		order:      8,
		desc:       "pipeline reversed: the producer runs a long-running compute job into the shared dma-buf per step and a consumer child's regular job reading it queues behind it (implicit sync); default 3 steps of 15000 iterations (1.5 s each, ~4.5 s)",
		steps:      3,
		iterations: handoffIterations,
		expect:     handoffExpect,
		run:        abortChildrenOnError(handoffRun),
		roles:      map[string]func(*runner, *peer) error{"consumer": handoffConsumerRole},
	})
}
