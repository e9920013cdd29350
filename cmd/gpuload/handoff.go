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
	hoHeader          = 4096  // Sh's first page holds the step results
	handoffIterations = 15000 // 1.5 s at the default device's 100µs per iteration
)

// handoffSlot is where step i's compute result goes in Sh's first page.
func handoffSlot(i int) uint64 { return 8 * uint64(i%(hoHeader/8)) }

func handoffProducer(p *params, i int) *job {
	j := newJob(fmt.Sprintf("compute-%d", i), relayShared).
		randfill(relayShared, hoHeader, p.size-hoHeader, stepSeed(p.seed, i, 14))
	if i > 0 {
		j.copy(relayShared, hoHeader, relayShared, handoffSlot(i-1), 8)
	}
	j.compute(relayShared, handoffSlot(i), relayShared, hoHeader, p.size-hoHeader, p.iterations)
	j.longRunning = true
	return j
}

func handoffConsumer(p *params, i int) *job {
	k := 8 * uint64(i%128)
	return newJob(fmt.Sprintf("consume-%d", i), relayShared, relayOut).
		checksum(relayOut, k, relayShared, 0, p.size).
		copy(relayOut, 1024+k, relayShared, handoffSlot(i), 8).
		addCounter(relayOut, 2048+k, stepSeed(p.seed, i, 15))
}

func init() {
	register(relay{producer: handoffProducer, consumer: handoffConsumer, consumerJob: "consumer job"}.scenario(&scenario{
		name:       "handoff",
		order:      8,
		desc:       "pipeline reversed: the producer runs a long-running compute job into the shared dma-buf per step and a consumer child's regular job reading it queues behind it (implicit sync); default 3 steps of 15000 iterations (1.5 s each, ~4.5 s)",
		steps:      3,
		iterations: handoffIterations,
	}))
}
