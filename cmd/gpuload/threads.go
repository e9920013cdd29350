package main

import (
	"fmt"
	"time"
)

// threads: one process, one drm file, -threads threads (goroutines, on
// as many OS threads as the runtime likes) using it at once, as a
// multi-threaded GPU driver does. Each worker thread k owns buffer T_k and
// a context; each step i it waits, without a time limit and with
// WAIT_FOR_SUBMIT, until the coordinator's step i-1 job has been submitted
// and has finished (syncobj Comb_{i-1}), then submits its own job on T_k
// (a refill of part of T_k and a compute over all of it), whose finished
// fence goes into syncobj Thr_{i,k}. The coordinator thread waits with
// WAIT_FOR_SUBMIT for all of Thr_{i,*} at once (typically before the
// workers have submitted: the wait for submission and the submits run
// concurrently on one fd), then submits its combine job, which checksums
// every T_k into its buffer Acc, into Comb_i, and reports the step. So at
// any moment some threads wait in the kernel while others submit, and a
// dump catches several requests in flight on the one file. Every job
// touches only its own buffers or reads them after the waits above, so the
// result is the program order of the plan: for each step, the workers'
// jobs, then the combine job. Output: T_0..T_{n-1}, Acc.

// thAcc is the coordinator's buffer; T_k is bufID(1+k).
const thAcc bufID = 0

const (
	thAccSize    = 4096
	thIterations = 100 // 10 ms per worker job at the default device's 100µs per iteration
)

// thBuf is worker k's buffer.
func thBuf(k int) bufID { return bufID(1 + k) }

// thSize is each worker's buffer: a quarter of -size, in whole pages.
func thSize(p *params) uint64 { return max(p.size/4&^4095, 4096) }

func threadsWorker(p *params, i, k int) *job {
	n := thSize(p)
	part := n / 4
	off := (uint64(i) % 4) * part
	return newJob(fmt.Sprintf("worker-%d-%d", k, i), thBuf(k)).
		randfill(thBuf(k), off, part, stepSeed(p.seed, i, 20+uint64(k))).
		compute(thBuf(k), 8*uint64(i%int(n/8)), thBuf(k), 0, n, p.iterations)
}

func threadsCombine(p *params, i int) *job {
	ids := []bufID{thAcc}
	for k := range p.threads {
		ids = append(ids, thBuf(k))
	}
	j := newJob(fmt.Sprintf("combine-%d", i), ids...)
	for k := range p.threads {
		j.checksum(thAcc, 8*uint64((i*p.threads+k)%(thAccSize/8)), thBuf(k), 0, thSize(p))
	}
	return j
}

func threadsExpect(p *params, ex executor) ([]byte, error) {
	ex.alloc(thAcc, thAccSize)
	ids := []bufID{}
	for k := range p.threads {
		ex.alloc(thBuf(k), thSize(p))
		ids = append(ids, thBuf(k))
	}
	err := runPlan(ex, p.steps, func(i int) []*job {
		var jobs []*job
		for k := range p.threads {
			jobs = append(jobs, threadsWorker(p, i, k))
		}
		return append(jobs, threadsCombine(p, i))
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, append(ids, thAcc)...), nil
}

func threadsRun(r *runner) ([]byte, error) {
	p := r.p
	bufs := []newBuf{gtt(thAcc, thAccSize)}
	ids := []bufID{}
	for k := range p.threads {
		bufs = append(bufs, gtt(thBuf(k), thSize(p)))
		ids = append(ids, thBuf(k))
	}
	g, err := r.openGPU(bufs...)
	if err != nil {
		return nil, err
	}
	defer g.close()
	// Every syncobj up front, empty: a WAIT_FOR_SUBMIT on one waits for
	// the job that will fill it.
	thr := make([][]uint32, p.steps)
	comb := make([]uint32, p.steps)
	for i := range p.steps {
		for range p.threads {
			so, err := g.newSyncobj()
			if err != nil {
				return nil, err
			}
			thr[i] = append(thr[i], so)
		}
		if comb[i], err = g.newSyncobj(); err != nil {
			return nil, err
		}
	}
	ctxs := make([]uint32, p.threads+1)
	for k := range ctxs {
		if ctxs[k], err = g.newContext(0); err != nil {
			return nil, err
		}
	}
	r.setupDone()

	errs := make(chan error, p.threads+1)
	for k := range p.threads {
		go func() {
			errs <- func() error {
				for i := range p.steps {
					if i > 0 {
						if _, err := g.dev.SyncobjWait(comb[i-1:i], -1, true, true); err != nil {
							return fmt.Errorf("worker %d step %d: wait for the combine job: %w", k, i+1, err)
						}
					}
					if err := g.submitSync(ctxs[k], threadsWorker(p, i, k), nil, thr[i][k:k+1]); err != nil {
						return fmt.Errorf("worker %d step %d: %w", k, i+1, err)
					}
				}
				return nil
			}()
		}()
	}
	go func() {
		errs <- func() error {
			for i := range p.steps {
				if _, err := g.dev.SyncobjWait(thr[i], -1, true, true); err != nil {
					return fmt.Errorf("step %d: wait for the workers: %w", i+1, err)
				}
				if err := g.submitSync(ctxs[p.threads], threadsCombine(p, i), nil, comb[i:i+1]); err != nil {
					return fmt.Errorf("step %d: %w", i+1, err)
				}
				r.progress(i + 1)
				r.stepDelay(i + 1)
			}
			return g.awaitJob(comb[p.steps-1], "last combine job")
		}()
	}()
	for range p.threads + 1 {
		if err := <-errs; err != nil {
			return nil, err // the other threads die with the process
		}
	}
	return g.readAll(append(ids, thAcc)...)
}

func init() {
	register(&scenario{
		name:       "threads",
		order:      10,
		desc:       "-threads threads share one drm file: workers submit while the coordinator waits for their submissions (WAIT_FOR_SUBMIT) and they wait for its combine job; requests in flight from several threads at any time",
		steps:      30,
		delay:      100 * time.Millisecond,
		iterations: thIterations,
		expect:     threadsExpect,
		run:        threadsRun,
	})
}
