package main

// A relay is the shape pipeline and handoff share: the producer (parent)
// owns buffer Sh, exports it and sends the dma-buf fd to a consumer child
// (then closes its own copy, keeping its GEM handle). Each step the
// producer submits its job on Sh and tells the consumer, which (importing
// Sh on the first step) submits its job reading Sh into its own buffer Out,
// acknowledges the submission (the producer then reports the step), waits
// for its job on an out-syncobj with an unbounded SyncobjWait and reports
// completion; only then does the producer start the next step. Output:
// Out, Sh (as the consumer reads them back at the end). The scenarios
// differ only in their two jobs.
type relay struct {
	producer, consumer func(p *params, i int) *job
	consumerJob        string // what the consumer waits for, in errors
}

const (
	relayShared bufID = iota // Sh
	relayOut                 // Out
)

const relayOutSize = 4096

func (rl relay) expect(p *params, ex executor) ([]byte, error) {
	ex.alloc(relayShared, p.size)
	ex.alloc(relayOut, relayOutSize)
	err := runPlan(ex, p.steps, func(i int) []*job {
		return []*job{rl.producer(p, i), rl.consumer(p, i)}
	})
	if err != nil {
		return nil, err
	}
	return concat(ex, relayOut, relayShared), nil
}

func (rl relay) run(r *runner) ([]byte, error) {
	return runProducer(r, relayShared, rl.producer, true)
}

// consumerRole submits each step's job, acknowledges the submission, waits
// for the job and reports its completion.
func (rl relay) consumerRole(r *runner, parent *peer) error {
	p := r.p
	fd, err := parent.recvDmaBuf()
	if err != nil {
		return err
	}
	defer closeFDs([]int{fd})
	g, err := r.openGPU(gtt(relayOut, relayOutSize))
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
				if err := g.importBuf(relayShared, fd, p.size); err != nil {
					return err
				}
			}
			return g.submitSync(ctx, rl.consumer(p, i), nil, []uint32{done})
		},
		afterAck: func(i int) error {
			if err := g.awaitJob(done, rl.consumerJob); err != nil {
				return err
			}
			return parent.reportStepDone(i)
		},
		end:   msgFinish,
		onEnd: func() error { return g.sendBuffers(parent, relayOut, relayShared) },
	}
	return s.serve(parent)
}

// scenario fills in the relay's entry points.
func (rl relay) scenario(sc *scenario) *scenario {
	sc.expect = rl.expect
	sc.run = abortChildrenOnError(rl.run)
	sc.roles = map[string]func(*runner, *peer) error{"consumer": rl.consumerRole}
	return sc
}
