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

const pipelineIterations = 15000 // 1.5 s at the default device's 100µs per iteration

// pipelineSlot is where step i's compute result goes in Out.
func pipelineSlot(i int) uint64 { return 8 * uint64(i%256) }

func pipelineProducer(p *params, i int) *job {
	return newJob(fmt.Sprintf("produce-%d", i), relayShared).
		randfill(relayShared, 0, p.size, stepSeed(p.seed, i, 12))
}

func pipelineConsumer(p *params, i int) *job {
	j := newJob(fmt.Sprintf("compute-%d", i), relayShared, relayOut)
	if i > 0 {
		j.copy(relayShared, 0, relayOut, pipelineSlot(i-1), 8)
	}
	j.checksum(relayOut, 2048+pipelineSlot(i), relayShared, 0, p.size).
		compute(relayOut, pipelineSlot(i), relayShared, 0, p.size, p.iterations)
	j.longRunning = true
	return j
}

func init() {
	register(relay{producer: pipelineProducer, consumer: pipelineConsumer, consumerJob: "long-running job"}.scenario(&scenario{
		name:       "pipeline",
		order:      7,
		desc:       "prodcons + longrun: a consumer child imports the producer's dma-buf and runs a long-running compute job over it per step; default 4 steps of 15000 iterations (1.5 s each, ~6 s)",
		steps:      4,
		iterations: pipelineIterations,
	}))
}
