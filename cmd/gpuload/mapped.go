package main

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/libdrm"
)

// mapped: pipeline's shape with the CPU reading and writing BO memory
// through mappings (GEM_MMAP and a dma-buf's mmap) while GPU jobs run,
// ordered through fences only.
//
// The producer (parent) maps its input buffer In and the shared buffer Sh
// (read-only), and a Notes buffer whose GEM handle it then closes: only
// its mapping keeps that BO. It exports Sh and sends the dma-buf fd to a
// consumer child (closing its own copy). The consumer maps Sh through
// the dma-buf (read-only) and its own accumulator Acc.
//
// Step i: the producer has written step i's input into In through its
// mapping; it submits P_i (Sh = In with the step number in its first 16
// bytes) and tells the consumer, which waits for P_i's write (implicit
// sync on Sh), submits C_i, a long-running compute job over Sh into Out,
// and while C_i runs reads Sh through its mapping, folding it into Acc's
// slot i through Acc's mapping; it acknowledges, waits for C_i and
// reports the step done. Meanwhile the producer, once P_i has read In,
// writes step i+1's input into In; once the step is done it waits for Sh
// to be idle for reads and copies Sh's first 16 bytes into Notes slot i
// through its mappings. With the defaults (4 steps of 15000 iterations)
// each C_i runs 1.5 s: a dump any time after "step 1/N" preempts one
// mid-loop, with the BOs mapped by both processes. Output: Out, Acc (as
// the consumer reads them back), Notes (as the producer's mapping holds
// it).

const (
	mpIn bufID = iota
	mpShared
	mpOut
	mpAcc
	mpNotes
)

const (
	mpOutSize   = 4096
	mpAccSize   = 8192
	mpNotesSize = 64 << 10
)

func mappedInput(p *params, i int) []byte { return initPattern(stepSeed(p.seed, i, 20), p.size) }

func mappedProducer(p *params, i int) *job {
	return newJob(fmt.Sprintf("produce-%d", i), mpShared, mpIn).
		copy(mpShared, 0, mpIn, 0, p.size).
		fill(mpShared, 0, 16, uint32(i+1))
}

func mappedConsumer(p *params, i int) *job {
	slot := 8 * uint64(i%256)
	j := newJob(fmt.Sprintf("compute-%d", i), mpOut, mpShared).
		compute(mpOut, slot, mpShared, 0, p.size, p.iterations).
		checksum(mpOut, 2048+slot, mpShared, 0, p.size)
	j.longRunning = true
	return j
}

// mappedFold is what the consumer's CPU makes of Sh in step i: a 64-bit
// fold of its words, for Acc's slot i.
func mappedFold(sh []byte, i int) (off uint64, val []byte) {
	acc := uint64(i) + 0x6a09e667f3bcc908
	for k := 0; k+8 <= len(sh); k += 8 {
		acc = mix64(acc ^ binary.LittleEndian.Uint64(sh[k:]))
	}
	val = binary.LittleEndian.AppendUint64(nil, acc)
	return 8 * uint64(i%(mpAccSize/8)), val
}

// mappedNote is where Sh's first 16 bytes go in Notes after step i.
func mappedNote(i int) uint64 { return 16 * uint64(i%(mpNotesSize/16)) }

func mappedExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(mpIn, p.size)
	ex.alloc(mpShared, p.size)
	ex.alloc(mpOut, mpOutSize)
	ex.alloc(mpAcc, mpAccSize)
	ex.alloc(mpNotes, mpNotesSize)
	for i := range p.steps {
		if err := ex.write(mpIn, 0, mappedInput(p, i)); err != nil {
			return nil, err
		}
		for _, j := range []*job{mappedProducer(p, i), mappedConsumer(p, i)} {
			if err := ex.run(j); err != nil {
				return nil, fmt.Errorf("step %d: %w", i+1, err)
			}
		}
		sh := ex.bytes(mpShared)
		off, val := mappedFold(sh, i)
		if err := ex.write(mpAcc, off, val); err != nil {
			return nil, err
		}
		if err := ex.write(mpNotes, mappedNote(i), sh[:16]); err != nil {
			return nil, err
		}
	}
	return concat(ex, mpOut, mpAcc, mpNotes), nil
}

// mapBuf maps a buffer of the process, for the run's lifetime.
func (g *gpuProc) mapBuf(id bufID, prot int) (*libdrm.Mapping, error) {
	m, err := g.dev.Map(g.handles[id], 0, 0, prot)
	if err != nil {
		return nil, fmt.Errorf("map buffer %d: %w", id, err)
	}
	return m, nil
}

// idle waits until an access of the given kind to a buffer would not have
// to wait for the GPU: what a CPU access through a mapping must do first.
func (g *gpuProc) idle(id bufID, write bool) error {
	if _, err := g.dev.WaitIdle(g.handles[id], write, -1); err != nil {
		return fmt.Errorf("wait for buffer %d: %w", id, err)
	}
	return nil
}

func mappedRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(gtt(mpIn, p.size), vram(mpShared, p.size), gtt(mpNotes, mpNotesSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	in, err := g.mapBuf(mpIn, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return nil, err
	}
	sh, err := g.mapBuf(mpShared, unix.PROT_READ)
	if err != nil {
		return nil, err
	}
	notes, err := g.mapBuf(mpNotes, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return nil, err
	}
	// Only the mapping keeps Notes from now on.
	if err := g.release(mpNotes); err != nil {
		return nil, err
	}
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	copy(in.Data, mappedInput(p, 0))
	c, err := r.shareWithChild(g, mpShared, "consumer")
	if err != nil {
		return nil, err
	}
	err = r.runSteps(func(i int) error {
		if err := g.submit(ctx, mappedProducer(p, i)); err != nil {
			return err
		}
		return c.step(i)
	}, func(i int) error {
		// C_i runs: prepare the next input once P_i has read In.
		if i+1 < p.steps {
			if err := g.idle(mpIn, true); err != nil {
				return err
			}
			copy(in.Data, mappedInput(p, i+1))
		}
		if err := c.awaitStepDone(i); err != nil {
			return err
		}
		if err := g.idle(mpShared, false); err != nil {
			return err
		}
		copy(notes.Data[mappedNote(i):], sh.Data[:16])
		return nil
	})
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
	return append(out, notes.Data...), nil
}

func mappedConsumerRole(r *runner, parent *peer) error {
	p := r.p
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	defer closeFDs([]int{fd})
	sh, err := libdrm.MapDmaBuf(fd, 0, 0, unix.PROT_READ)
	if err != nil {
		return fmt.Errorf("map the shared dma-buf: %w", err)
	}
	g, err := r.openGPU(gtt(mpOut, mpOutSize), gtt(mpAcc, mpAccSize))
	if err != nil {
		return err
	}
	defer g.close()
	acc, err := g.mapBuf(mpAcc, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return err
	}
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
				if err := g.importBuf(mpShared, fd, p.size); err != nil {
					return err
				}
			}
			// P_i's write must be done before the CPU reads Sh; C_i only
			// reads it, so the CPU reads it while C_i runs.
			if err := g.idle(mpShared, false); err != nil {
				return err
			}
			if err := g.submitSync(ctx, mappedConsumer(p, i), nil, []uint32{done}); err != nil {
				return err
			}
			off, val := mappedFold(sh.Data, i)
			copy(acc.Data[off:], val)
			return nil
		},
		afterAck: func(i int) error {
			if err := g.awaitJob(done, "long-running job"); err != nil {
				return err
			}
			return parent.reportStepDone(i)
		},
		end:   msgFinish,
		onEnd: func() error { return g.sendBuffers(parent, mpOut, mpAcc) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:       "mapped",
		order:      13,
		desc:       "pipeline through CPU mappings: the producer writes its input through a mapping and keeps a BO by its mapping alone, the consumer reads the shared dma-buf through its own mapping while its long-running job runs; default 4 steps of 15000 iterations (~6 s)",
		steps:      4,
		iterations: pipelineIterations,
		expect:     mappedExpect,
		run:        abortChildrenOnError(mappedRun),
		roles:      map[string]func(*runner, *peer) error{"consumer": mappedConsumerRole},
	})
}
