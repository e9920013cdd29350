package main

import (
	"fmt"
	"time"
)

// dmabuf-only: the parent P creates Sh and Pa, exports Sh and sends the
// dma-buf fd to the holder child H, then closes its own fd copy. H never
// opens a render node: it holds only the dma-buf fd and answers pings.
// In the first half of the steps P writes Sh and checksums it into Pa; at
// the half-way point P closes its handle of Sh, so from then on the BO is
// alive only through H's dma-buf fd, while P keeps working on Pa. At the
// end H passes its fd back with SCM_RIGHTS and exits; P imports it (a new
// handle) and reads Sh back. Output: Sh, Pa.

const (
	doShared bufID = iota
	doPa
)

const doPaSize = 4096

// dmabufOnlySplit is the first step (0-based) after P closed its handle.
func dmabufOnlySplit(p *params) int { return (p.steps + 1) / 2 }

func dmabufOnlyStep(p *params, i int) *job {
	s := stepSeed(p.seed, i, 7)
	if i < dmabufOnlySplit(p) {
		part := p.size / 8
		r := uint64(i%8) * part
		return newJob(fmt.Sprintf("shared-%d", i), doShared, doPa).
			randfill(doShared, r, part, s).
			addCounter(doShared, (r+part-8)&^7, s>>3).
			checksum(doPa, 8*uint64(i%256), doShared, 0, p.size)
	}
	return newJob(fmt.Sprintf("private-%d", i), doPa).
		addCounter(doPa, 2048+8*uint64(i%64), s).
		checksum(doPa, 2560+8*uint64(i%192), doPa, 0, 2048)
}

func dmabufOnlyExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(doShared, p.size)
	ex.alloc(doPa, doPaSize)
	if err := ex.write(doShared, 0, initPattern(p.seed, p.size)); err != nil {
		return nil, err
	}
	if err := runPlan(ex, p.steps, func(i int) []*job { return []*job{dmabufOnlyStep(p, i)} }); err != nil {
		return nil, err
	}
	return concat(ex, doShared, doPa), nil
}

func dmabufOnlyRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(doShared, p.size), gtt(doPa, doPaSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	if err := g.dev.Write(g.handles[doShared], 0, initPattern(p.seed, p.size)); err != nil {
		return nil, fmt.Errorf("write initial data: %w", err)
	}
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	h, err := r.shareWithChild(g, doShared, "holder")
	if err != nil {
		return nil, err
	}
	split := dmabufOnlySplit(p)
	err = r.runSteps(func(i int) error {
		if i == split {
			if err := g.release(doShared); err != nil {
				return err
			}
			r.infof("closed the handle of the shared buffer; only the holder's dma-buf fd keeps it")
		}
		if err := g.submit(ctx, dmabufOnlyStep(p, i)); err != nil {
			return err
		}
		return h.step(i)
	}, nil)
	if err != nil {
		return nil, err
	}
	if split >= p.steps {
		// Too few steps to reach the split: release now.
		if err := g.release(doShared); err != nil {
			return nil, err
		}
	}
	if err := h.peer.send(msgGiveBack, 0, nil); err != nil {
		return nil, err
	}
	back, err := h.peer.expectFD(msgReturnFD)
	if err != nil {
		return nil, fmt.Errorf("get the dma-buf back: %w", err)
	}
	err = g.importBuf(doShared, back, p.size)
	closeFDs([]int{back})
	if err != nil {
		return nil, fmt.Errorf("re-import: %w", err)
	}
	if err := r.finishChildren(); err != nil {
		return nil, err
	}
	return g.readAll(doShared, doPa)
}

// dmabufOnlyHolder holds the dma-buf fd and nothing else of kernelsim.
func dmabufOnlyHolder(r *runner, parent *peer) error {
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	defer closeFDs([]int{fd})
	s := &stepServer{
		end:   msgGiveBack,
		onEnd: func() error { return parent.send(msgReturnFD, 0, nil, fd) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:   "dmabuf-only",
		order:  4,
		desc:   "a child holds only a dma-buf fd (no drm file); the BO's creator drops its handle half-way; the fd comes back and is re-imported",
		steps:  40,
		delay:  100 * time.Millisecond,
		expect: dmabufOnlyExpect,
		run:    abortChildrenOnError(dmabufOnlyRun),
		roles:  map[string]func(*runner, *peer) error{"holder": dmabufOnlyHolder},
	})
}
