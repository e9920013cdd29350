package main

import (
	"encoding/binary"
	"fmt"
	"time"

	"drmcr/kernelsim/libdrm"
)

// forked: a parent and a child process share one drm file, the child
// having inherited the parent's render-node fd as fork leaves it (its fd
// 4), both using it at the same time. The parent creates the buffers S,
// P and C in the file and tells the child their handles, which are the
// child's too (one file, one handle table); the child uses the fd through
// libdrm.FromSharedFD, whose replies come on a reply channel of its own.
// Each step the parent submits a job that refills part of S and computes
// over S into P, and tells the child, which submits a job reading S and P
// into C (ordered after the parent's by implicit sync on the shared BOs)
// and acknowledges; then each waits for its own job without a time limit
// (the parent on its socket, the child on its channel) and the parent
// starts the next step once the child reports its job done. Output: S and
// P as the parent reads them, C as the child reads it.

const (
	fkS bufID = iota
	fkP
	fkC
)

const fkOutSize = 4096

// fkDrmFD is where the child finds the inherited drm file.
const fkDrmFD = 4

func forkedProducer(p *params, i int) *job {
	part := p.size / 4
	return newJob(fmt.Sprintf("produce-%d", i), fkS, fkP).
		randfill(fkS, (uint64(i)%4)*part, part, stepSeed(p.seed, i, 30)).
		compute(fkP, 8*uint64(i%(fkOutSize/8)), fkS, 0, p.size, p.iterations)
}

func forkedConsumer(p *params, i int) *job {
	k := 8 * uint64(i%(fkOutSize/16))
	return newJob(fmt.Sprintf("consume-%d", i), fkS, fkP, fkC).
		checksum(fkC, k, fkS, 0, p.size).
		copy(fkC, fkOutSize/2+k, fkP, 8*uint64(i%(fkOutSize/8)), 8)
}

func forkedExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(fkS, p.size)
	ex.alloc(fkP, fkOutSize)
	ex.alloc(fkC, fkOutSize)
	err := runPlan(ex, p.steps, func(i int) []*job {
		return []*job{forkedProducer(p, i), forkedConsumer(p, i)}
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, fkS, fkP, fkC), nil
}

func forkedRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(fkS, p.size), gtt(fkP, fkOutSize), gtt(fkC, fkOutSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	done, err := g.newSyncobj()
	if err != nil {
		return nil, err
	}
	c, err := r.spawn("sharer", g.dev.FD())
	if err != nil {
		return nil, err
	}
	var hs []byte
	for _, id := range []bufID{fkS, fkP, fkC} {
		hs = binary.LittleEndian.AppendUint32(hs, g.handles[id])
	}
	if err := c.peer.send(msgShare, 0, hs); err != nil {
		return nil, err
	}
	if err := c.awaitReady(); err != nil {
		return nil, err
	}
	err = r.runSteps(func(i int) error {
		if err := g.submitSync(ctx, forkedProducer(p, i), nil, []uint32{done}); err != nil {
			return err
		}
		return c.step(i)
	}, func(i int) error {
		if err := g.awaitJob(done, "parent's job"); err != nil {
			return err
		}
		return c.awaitStepDone(i)
	})
	if err != nil {
		return nil, err
	}
	childC, err := c.collectOutput()
	if err != nil {
		return nil, err
	}
	if err := r.finishChildren(); err != nil {
		return nil, err
	}
	out, err := g.readAll(fkS, fkP)
	if err != nil {
		return nil, err
	}
	return append(out, childC...), nil
}

// forkedChild uses the drm file it inherited (fd 4) with the parent's
// handles.
func forkedChild(r *runner, parent *peer) error {
	p := r.p
	m, err := parent.expect(msgShare, -1)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	closeFDs(m.fds)
	if len(m.data) != 12 {
		return fmt.Errorf("setup: %d bytes of handles, want 12", len(m.data))
	}
	g := &gpuProc{dev: libdrm.FromSharedFD(fkDrmFD), handles: map[bufID]uint32{}, sizes: map[bufID]uint64{}, vas: map[bufID]uint64{}}
	defer g.close()
	for i, id := range []bufID{fkS, fkP, fkC} {
		g.handles[id] = binary.LittleEndian.Uint32(m.data[4*i:])
	}
	g.sizes[fkS], g.sizes[fkP], g.sizes[fkC] = p.size, fkOutSize, fkOutSize
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
			return g.submitSync(ctx, forkedConsumer(p, i), nil, []uint32{done})
		},
		afterAck: func(i int) error {
			if err := g.awaitJob(done, "child's job"); err != nil {
				return err
			}
			return parent.reportStepDone(i)
		},
		end:   msgFinish,
		onEnd: func() error { return g.sendBuffers(parent, fkC) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:       "forked",
		order:      11,
		desc:       "a child inherits the parent's drm fd (as fork leaves it) and both use the one drm file at once, the child through a reply channel of its own; each waits for its jobs while the other submits",
		steps:      30,
		delay:      100 * time.Millisecond,
		iterations: thIterations,
		expect:     forkedExpect,
		run:        abortChildrenOnError(forkedRun),
		roles:      map[string]func(*runner, *peer) error{"sharer": forkedChild},
	})
}
