package main

import "fmt"

// pipeline: prodcons's sharing with longrun's job, so that one checkpoint
// mid-run holds both a dma-buf shared between two processes and a
// long-running job using it. The producer (parent) owns buffer Sh, exports
// it and sends the dma-buf fd to the consumer child (then closes its own
// copy, keeping its GEM handle). Each step the producer submits a job
// refilling Sh (randfill, per-step seed) and tells the consumer, which
// (importing Sh on the first step) submits a long-running job over Sh into
// its own buffer Out: it copies the previous step's result into Sh's first
// word (feeding it forward, as longrun does), checksums Sh into Out, and
// runs -iterations OpCompute iterations over Sh into Out's step slot. The
// consumer acknowledges the submission (the producer then reports the
// step), waits for the job on an out-syncobj with an unbounded
// SyncobjWait, and reports completion; only then does the producer start
// the next step. The consumer's job is ordered after the producer's write,
// and the next write after the job, by implicit sync on Sh (and by the
// handshake). With the default device (IterTime 100µs) and the defaults (4
// steps of 15000 iterations, no step delay) each job runs 1.5 s and the
// whole run about 6 s, nearly all of it inside a compute job: a dump at any
// time after "step 1/N" preempts one mid-loop. Output: Out, Sh (as the
// consumer reads them back at the end).

const (
	plShared bufID = iota
	plOut
)

const (
	plOutSize          = 4096
	pipelineIterations = 15000 // 1.5 s at the default device's 100µs per iteration
)

// pipelineSlot is where step i's compute result goes in Out.
func pipelineSlot(i int) uint64 { return 8 * uint64(i%256) }

func pipelineProducer(p *params, i int) *job {
	return newJob(fmt.Sprintf("produce-%d", i), plShared).
		randfill(plShared, 0, p.size, stepSeed(p.seed, i, 12))
}

func pipelineConsumer(p *params, i int) *job {
	j := newJob(fmt.Sprintf("compute-%d", i), plShared, plOut)
	if i > 0 {
		j.copy(plShared, 0, plOut, pipelineSlot(i-1), 8)
	}
	j.checksum(plOut, 2048+pipelineSlot(i), plShared, 0, p.size).
		compute(plOut, pipelineSlot(i), plShared, 0, p.size, p.iterations)
	j.longRunning = true
	return j
}

func pipelineExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(plShared, p.size)
	ex.alloc(plOut, plOutSize)
	err := runPlan(ex, p.steps, func(i int) []*job {
		return []*job{pipelineProducer(p, i), pipelineConsumer(p, i)}
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, plOut, plShared), nil
}

func pipelineRun(r *runner) ([]byte, error) {
	return runProducer(r, plShared, pipelineProducer, true)
}

// pipelineConsumerRole submits each step's long-running job, acknowledges
// the submission, waits for the job and reports its completion.
func pipelineConsumerRole(r *runner, parent *peer) error {
	p := r.p
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	defer closeFDs([]int{fd})
	g, err := r.openGPU(gtt(plOut, plOutSize))
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
				if err := g.importBuf(plShared, fd, p.size); err != nil {
					return err
				}
			}
			return g.submitSync(ctx, pipelineConsumer(p, i), nil, []uint32{done})
		},
		afterAck: func(i int) error {
			if err := g.awaitJob(done, "long-running job"); err != nil {
				return err
			}
			return parent.reportStepDone(i)
		},
		end:   msgFinish,
		onEnd: func() error { return g.sendBuffers(parent, plOut, plShared) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:       "pipeline",
		order:      7,
		desc:       "prodcons + longrun: a consumer child imports the producer's dma-buf and runs a long-running compute job over it per step; default 4 steps of 15000 iterations (1.5 s each, ~6 s)",
		steps:      4,
		iterations: pipelineIterations,
		expect:     pipelineExpect,
		run:        abortChildrenOnError(pipelineRun),
		roles:      map[string]func(*runner, *peer) error{"consumer": pipelineConsumerRole},
	})
}
