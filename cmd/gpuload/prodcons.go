package main

import (
	"fmt"
	"time"
)

// prodcons: the producer (parent) owns buffer Sh, exports it and sends the
// dma-buf fd to the consumer child (then closes its own copy). Each step
// the producer submits a job rewriting Sh and, without waiting for it,
// tells the consumer, which (importing Sh on the first step) submits a job
// reading Sh into its own buffers Acc and T and acknowledges. Nobody waits
// for the GPU between steps: the consumer's read is ordered after the
// producer's write, and the producer's next write after the consumer's
// read, only by implicit sync on the shared BO. The output is the
// consumer's Acc and T, which the consumer reads back and sends to the
// parent at the end.

const (
	pcShared bufID = iota
	pcAcc
	pcT
)

const pcAccSize = 8192

func prodconsProducer(p *params, i int) *job {
	s := stepSeed(p.seed, i, 2)
	return newJob(fmt.Sprintf("produce-%d", i), pcShared).
		randfill(pcShared, 0, p.size, s).
		fill(pcShared, 0, 16, uint32(i+1))
}

func prodconsConsumer(p *params, i int) *job {
	s := stepSeed(p.seed, i, 3)
	S := p.size
	part := S / 8
	o := (s >> 16) % (S - part)
	return newJob(fmt.Sprintf("consume-%d", i), pcShared, pcAcc, pcT).
		checksum(pcAcc, 8*uint64(i%512), pcShared, 0, S).
		copy(pcT, uint64(i%8)*part, pcShared, o, part).
		addCounter(pcAcc, 4096+8*uint64(i%64), s).
		checksum(pcAcc, 4608+8*uint64(i%448), pcT, 0, S)
}

func prodconsExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(pcShared, p.size)
	ex.alloc(pcAcc, pcAccSize)
	ex.alloc(pcT, p.size)
	err := runPlan(ex, p.steps, func(i int) []*job {
		return []*job{prodconsProducer(p, i), prodconsConsumer(p, i)}
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, pcAcc, pcT), nil
}

func prodconsRun(r *runner) ([]byte, error) {
	return runProducer(r, pcShared, prodconsProducer, false)
}

// runProducer is the parent of prodcons, pipeline and handoff: it creates the
// shared buffer and shares it with a "consumer" child; each step it
// submits producer(i) and hands the step to the consumer (and with
// awaitConsumer waits until the consumer reports the step's GPU work
// complete). The output is the consumer's.
func runProducer(r *runner, shared bufID, producer func(p *params, i int) *job, awaitConsumer bool) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(shared, p.size))
	if err != nil {
		return nil, err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	c, err := r.shareWithChild(g, shared, "consumer")
	if err != nil {
		return nil, err
	}
	var complete func(i int) error
	if awaitConsumer {
		complete = c.awaitStepDone
	}
	err = r.runSteps(func(i int) error {
		if err := g.submit(ctx, producer(p, i)); err != nil {
			return err
		}
		return c.step(i)
	}, complete)
	if err != nil {
		return nil, err
	}
	out, err := c.collectOutput()
	if err != nil {
		return nil, err
	}
	if err := r.finishChildren(); err != nil {
		return nil, err
	}
	return out, nil
}

func prodconsConsumerRole(r *runner, parent *peer) error {
	return prodconsConsume(r, parent, r.p.minor)
}

// prodconsConsume is the consumer, on the render node of minor.
func prodconsConsume(r *runner, parent *peer, minor uint32) error {
	p := r.p
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	defer closeFDs([]int{fd})
	g, err := r.openGPUOn(minor, gtt(pcAcc, pcAccSize), vram(pcT, p.size))
	if err != nil {
		return err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return err
	}
	s := &stepServer{
		submit: func(i int) error {
			if i == 0 {
				if err := g.importBuf(pcShared, fd, p.size); err != nil {
					return err
				}
			}
			return g.submit(ctx, prodconsConsumer(p, i))
		},
		end:   msgFinish,
		onEnd: func() error { return g.sendBuffers(parent, pcAcc, pcT) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:   "prodcons",
		order:  2,
		desc:   "producer shares a dma-buf with a consumer child; per step write → handshake → import/read, ordered by implicit sync",
		steps:  40,
		delay:  100 * time.Millisecond,
		expect: prodconsExpect,
		run:    abortChildrenOnError(prodconsRun),
		roles:  map[string]func(*runner, *peer) error{"consumer": prodconsConsumerRole},
	})
}
