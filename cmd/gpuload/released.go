package main

import (
	"fmt"
	"time"

	"drmcr/kernelsim/uapi"
)

// released: the creator-released case. The parent A creates Sh, fills it
// on the GPU, exports it and sends the dma-buf to two children, the writer
// B and the reader C, which import it and close their fds. A then closes
// its GEM handle and its dma-buf fd: from then on Sh exists only as
// imported handles in B and C (no exporter handle, no dma-buf fd in any
// process). Each step A tells B to write a slice of Sh (and checksum all
// of it into its own Bo), then tells C to read Sh into its own Co; A also
// runs a small job of its own on W. Output: Sh (read back by B), Bo, Co, W.

const (
	relShared bufID = iota
	relBo
	relCo
	relW
)

const (
	relBoSize = 4096
	relWSize  = 4096
)

func relCoSize(p *params) uint64 { return 4096 + p.size }

func releasedInit(p *params) *job {
	return newJob("init", relShared).randfill(relShared, 0, p.size, stepSeed(p.seed, 0, 4))
}

func releasedWriter(p *params, i int) *job {
	s := stepSeed(p.seed, i, 5)
	part := p.size / 8
	r := uint64(i%8) * part
	return newJob(fmt.Sprintf("write-%d", i), relShared, relBo).
		randfill(relShared, r, part, s).
		addCounter(relShared, (r+part/2)&^7, uint64(i)+1).
		checksum(relBo, 8*uint64(i%512), relShared, 0, p.size)
}

func releasedReader(p *params, i int) *job {
	part := p.size / 8
	r := uint64(i%8) * part
	return newJob(fmt.Sprintf("read-%d", i), relShared, relCo).
		checksum(relCo, 8*uint64(i%512), relShared, 0, p.size).
		copy(relCo, 4096+r, relShared, r, part)
}

func releasedOwn(p *params, i int) *job {
	s := stepSeed(p.seed, i, 6)
	return newJob(fmt.Sprintf("own-%d", i), relW).
		addCounter(relW, 8*uint64(i%256), s).
		checksum(relW, 2048+8*uint64(i%256), relW, 0, 2048)
}

func releasedExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(relShared, p.size)
	ex.alloc(relBo, relBoSize)
	ex.alloc(relCo, relCoSize(p))
	ex.alloc(relW, relWSize)
	if err := ex.run(releasedInit(p)); err != nil {
		return nil, err
	}
	err := runPlan(ex, p.steps, func(i int) []*job {
		return []*job{releasedWriter(p, i), releasedReader(p, i), releasedOwn(p, i)}
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, relShared, relBo, relCo, relW), nil
}

func releasedRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(relShared, p.size), gtt(relW, relWSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	if err := g.submit(ctx, releasedInit(p)); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	// Unlike shareWithChild, keep our fd until both children have
	// imported the buffer.
	fd, err := g.exportDmaBuf(relShared)
	if err != nil {
		return nil, err
	}
	kids, err := func() ([]*child, error) {
		defer closeFDs([]int{fd})
		var kids []*child
		for _, role := range []string{"writer", "reader"} {
			c, err := r.spawnWithDmaBuf(role, fd)
			if err != nil {
				return nil, err
			}
			kids = append(kids, c)
		}
		for _, c := range kids {
			if err := c.awaitReady(); err != nil {
				return nil, err
			}
		}
		return kids, nil
	}()
	if err != nil {
		return nil, err
	}
	// The creator lets go of the BO: no handle, no dma-buf fd.
	if err := g.release(relShared); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	r.infof("creator released the shared buffer; writer and reader hold imported handles only")
	err = r.runSteps(func(i int) error {
		for _, c := range kids { // writer, then reader
			if err := c.step(i); err != nil {
				return err
			}
		}
		return g.submit(ctx, releasedOwn(p, i))
	}, nil)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, c := range kids { // writer (Sh, Bo), then reader (Co)
		part, err := c.collectOutput()
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	w, err := g.readBack(relW)
	if err != nil {
		return nil, err
	}
	out = append(out, w...)
	if err := r.finishChildren(); err != nil {
		return nil, err
	}
	return out, nil
}

// releasedChild is B ("writer": Sh and Bo) or C ("reader": Co).
func releasedChild(r *runner, parent *peer) error {
	p := r.p
	writer := r.role == "writer"
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	g, err := r.openGPU()
	if err != nil {
		closeFDs([]int{fd})
		return err
	}
	defer g.close()
	err = g.importBuf(relShared, fd, p.size)
	closeFDs([]int{fd}) // the import holds the dma-buf; we keep only the handle
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	own, size := relCo, relCoSize(p)
	if writer {
		own, size = relBo, relBoSize
	}
	if err := g.create(own, size, uapi.Domain_DOMAIN_VRAM); err != nil {
		return err
	}
	ctx, err := g.newContext(0)
	if err != nil {
		return err
	}
	stepJob, output := releasedReader, []bufID{relCo}
	if writer {
		stepJob, output = releasedWriter, []bufID{relShared, relBo}
	}
	s := &stepServer{
		submit: func(i int) error { return g.submit(ctx, stepJob(p, i)) },
		end:    msgFinish,
		onEnd:  func() error { return g.sendBuffers(parent, output...) },
	}
	return s.serve(parent)
}

func init() {
	register(&scenario{
		name:   "released",
		order:  3,
		desc:   "creator exports a BO to writer and reader children, then closes its handle and fd; the children share it by import only",
		steps:  40,
		delay:  100 * time.Millisecond,
		expect: releasedExpect,
		run:    abortChildrenOnError(releasedRun),
		roles: map[string]func(*runner, *peer) error{
			"writer": releasedChild,
			"reader": releasedChild,
		},
	})
}
