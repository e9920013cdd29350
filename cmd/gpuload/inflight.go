package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// inflight: one process P works on Sh and Pa. At the half-way point P
// exports Sh as a dma-buf, sends the fd into a unix socketpair of its own
// (the mailbox) with SCM_RIGHTS, and closes both its dma-buf fd and its
// handle of Sh: from then on the BO exists only as a file in flight in
// the mailbox's receive queue, held by no task's fd table, while P keeps
// working on Pa. At the end P receives the fd from the mailbox, imports it
// and reads Sh back. Output: Sh, Pa. A checkpoint of the second half
// must restore the dma-buf into the queue.

const (
	ifShared bufID = iota
	ifPa
)

const ifPaSize = 4096

func inflightSplit(p *params) int { return (p.steps + 1) / 2 }

func inflightStep(p *params, i int) *job {
	s := stepSeed(p.seed, i, 11)
	if i < inflightSplit(p) {
		part := p.size / 8
		r := uint64(i%8) * part
		return newJob(fmt.Sprintf("shared-%d", i), ifShared, ifPa).
			randfill(ifShared, r, part, s).
			checksum(ifPa, 8*uint64(i%256), ifShared, 0, p.size)
	}
	return newJob(fmt.Sprintf("private-%d", i), ifPa).
		addCounter(ifPa, 2048+8*uint64(i%64), s).
		checksum(ifPa, 2560+8*uint64(i%192), ifPa, 0, 2048)
}

func inflightExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(ifShared, p.size)
	ex.alloc(ifPa, ifPaSize)
	if err := ex.write(ifShared, 0, initPattern(p.seed, p.size)); err != nil {
		return nil, err
	}
	if err := runPlan(ex, p.steps, func(i int) []*job { return []*job{inflightStep(p, i)} }); err != nil {
		return nil, err
	}
	return concat(ex, ifShared, ifPa), nil
}

func inflightRun(r *runner) ([]byte, error) {
	p := r.p
	g, err := r.openGPU(vram(ifShared, p.size), gtt(ifPa, ifPaSize))
	if err != nil {
		return nil, err
	}
	defer g.close()
	if err := g.dev.Write(g.handles[ifShared], 0, initPattern(p.seed, p.size)); err != nil {
		return nil, fmt.Errorf("write initial data: %w", err)
	}
	ctx, err := g.newContext(0)
	if err != nil {
		return nil, err
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mailbox: %w", err)
	}
	in, out := &peer{fd: sp[0], name: "mailbox"}, &peer{fd: sp[1], name: "mailbox"}
	defer in.close()
	defer out.close()
	posted := false
	post := func() error {
		fd, err := g.exportDmaBuf(ifShared)
		if err != nil {
			return err
		}
		err = out.send(msgShare, 0, nil, fd)
		closeFDs([]int{fd})
		if err != nil {
			return err
		}
		if err := g.release(ifShared); err != nil {
			return err
		}
		posted = true
		r.infof("the shared buffer is now only a dma-buf in flight in the mailbox")
		return nil
	}
	split := inflightSplit(p)
	err = r.runSteps(func(i int) error {
		if i == split {
			if err := post(); err != nil {
				return err
			}
		}
		return g.submit(ctx, inflightStep(p, i))
	}, nil)
	if err != nil {
		return nil, err
	}
	if !posted {
		if err := post(); err != nil {
			return nil, err
		}
	}
	fd, err := in.expectFD(msgShare)
	if err != nil {
		return nil, fmt.Errorf("take the dma-buf out of the mailbox: %w", err)
	}
	err = g.importBuf(ifShared, fd, p.size)
	closeFDs([]int{fd})
	if err != nil {
		return nil, fmt.Errorf("re-import: %w", err)
	}
	return g.readAll(ifShared, ifPa)
}

func init() {
	register(&scenario{
		name:   "inflight",
		order:  9,
		desc:   "half-way the process sends a BO's dma-buf into a unix socket of its own and closes every handle and fd of it: the BO exists only as an fd in flight until the end",
		steps:  40,
		delay:  100 * time.Millisecond,
		expect: inflightExpect,
		run:    inflightRun,
	})
}
