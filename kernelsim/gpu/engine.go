package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/sched"
)

// ErrPreempted is returned by Execute when it stopped at a preemption
// point; the Progress says where to resume. It is sched.ErrPreempted, so a
// hardware fence carrying it tells the scheduler to requeue the job.
var ErrPreempted = sched.ErrPreempted

// EngineConfig sets an engine's speed.
type EngineConfig struct {
	Clock     ktime.Clock   // nil means ktime.Real()
	Bandwidth uint64        // bytes per second; 0 = instantaneous
	IterTime  time.Duration // per Compute iteration; 0 = instantaneous
}

// Engine executes command lists. It holds no per-job state: any number of
// Execute calls may run at once (one per firmware queue); serialising a
// ring is the Backend's job.
type Engine struct {
	cfg EngineConfig
}

// NewEngine returns an engine with cfg.
func NewEngine(cfg EngineConfig) *Engine {
	if cfg.Clock == nil {
		cfg.Clock = ktime.Real()
	}
	if cfg.IterTime < 0 {
		cfg.IterTime = 0
	}
	return &Engine{cfg: cfg}
}

// Clock is the engine's clock.
func (e *Engine) Clock() ktime.Clock { return e.cfg.Clock }

// Cost is the clock time cmd takes on this engine (saturating).
func (e *Engine) Cost(c Command) time.Duration {
	switch c.Op {
	case OpCompute:
		hi, lo := bits.Mul64(c.Iterations, uint64(e.cfg.IterTime))
		if hi != 0 || lo > math.MaxInt64 {
			return math.MaxInt64
		}
		return time.Duration(lo)
	case OpHang:
		return math.MaxInt64
	case OpAddCounter:
		return e.bytesCost(8)
	}
	return e.bytesCost(c.Len)
}

func (e *Engine) bytesCost(n uint64) time.Duration {
	if e.cfg.Bandwidth == 0 || n == 0 {
		return 0
	}
	hi, lo := bits.Mul64(n, uint64(time.Second))
	if hi >= e.cfg.Bandwidth {
		return math.MaxInt64
	}
	q, r := bits.Div64(hi, lo, e.cfg.Bandwidth)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(q)
}

// Execute runs cmds on bufs from p, starting now. See ExecuteAt.
func (e *Engine) Execute(ctx context.Context, cmds []Command, bufs []Buffer, p *Progress, preempt <-chan struct{}) error {
	_, err := e.ExecuteAt(ctx, e.cfg.Clock.Now(), cmds, bufs, p, preempt)
	return err
}

// ExecuteAt runs cmds on bufs from p, charging time from start (the end of
// the work before it on the same queue, or now). It returns the clock time
// the work ended at and nil when done, ErrPreempted when preempt was closed
// (p saved at a preemption point), or ctx's error when killed. Bad input
// gives an ErrInvalid error before anything runs.
func (e *Engine) ExecuteAt(ctx context.Context, start time.Duration, cmds []Command, bufs []Buffer, p *Progress, preempt <-chan struct{}) (time.Duration, error) {
	if p == nil {
		return start, fmt.Errorf("gpu: nil progress: %w", ErrInvalid)
	}
	sizes := make([]uint64, len(bufs))
	for i, b := range bufs {
		if b == nil {
			return start, fmt.Errorf("gpu: buffer %d is nil: %w", i, ErrInvalid)
		}
		sizes[i] = b.Size()
	}
	if err := Validate(cmds, len(bufs), sizes); err != nil {
		return start, err
	}
	if err := CheckProgress(cmds, *p); err != nil {
		return start, err
	}
	t := start
	for p.Cmd < len(cmds) {
		if err := stopRequested(ctx, preempt); err != nil {
			return e.cfg.Clock.Now(), err
		}
		c := cmds[p.Cmd]
		switch c.Op {
		case OpHang:
			<-ctx.Done()
			return e.cfg.Clock.Now(), ctx.Err()
		case OpCompute:
			end, err := e.compute(ctx, t, c, bufs, p, preempt)
			if err != nil {
				return end, err
			}
			t = end
		default:
			end := addSat(t, e.Cost(c))
			if err := e.waitUntil(ctx, end, preempt); err != nil {
				return e.cfg.Clock.Now(), err // not started: p unchanged
			}
			if err := apply(c, bufs); err != nil {
				return e.cfg.Clock.Now(), fmt.Errorf("gpu: command %d (%v): %w", p.Cmd, c.Op, err)
			}
			t = end
		}
		p.Cmd++
		p.Iter, p.Acc = 0, 0
	}
	return t, nil
}

func (e *Engine) compute(ctx context.Context, t time.Duration, c Command, bufs []Buffer, p *Progress, preempt <-chan struct{}) (time.Duration, error) {
	src := make([]byte, c.Len)
	if err := bufs[c.Src].ReadAt(src, c.SrcOff); err != nil {
		return e.cfg.Clock.Now(), fmt.Errorf("gpu: command %d (compute): read src: %w", p.Cmd, err)
	}
	if p.Iter == 0 {
		p.Acc = ComputeInit
	}
	if e.cfg.IterTime == 0 {
		// Instantaneous: poll for preemption every few iterations.
		for p.Iter < c.Iterations {
			if err := stopRequested(ctx, preempt); err != nil {
				return e.cfg.Clock.Now(), err
			}
			runIters(src, p, min(c.Iterations-p.Iter, 64))
		}
	} else {
		rest := c.Iterations - p.Iter
		end := addSat(t, mulSat(e.cfg.IterTime, rest))
		if err := e.waitUntil(ctx, end, preempt); err != nil {
			if errors.Is(err, ErrPreempted) {
				// Keep the iterations whose time has passed.
				elapsed := max(e.cfg.Clock.Now()-t, 0)
				runIters(src, p, min(uint64(elapsed/e.cfg.IterTime), rest))
			}
			return e.cfg.Clock.Now(), err
		}
		runIters(src, p, rest)
		t = end
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], p.Acc)
	if err := bufs[c.Dst].WriteAt(b[:], c.DstOff); err != nil {
		return e.cfg.Clock.Now(), fmt.Errorf("gpu: command %d (compute): write result: %w", p.Cmd, err)
	}
	return t, nil
}

// waitUntil sleeps until the clock reaches deadline, returning early with
// ctx's error or ErrPreempted.
func (e *Engine) waitUntil(ctx context.Context, deadline time.Duration, preempt <-chan struct{}) error {
	now := e.cfg.Clock.Now()
	if now >= deadline {
		return nil
	}
	ch, stop := e.cfg.Clock.After(deadline - now)
	defer stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-preempt:
		return ErrPreempted
	}
}

// stopRequested is the preemption/kill check at a preemption point; a kill
// wins over a preemption.
func stopRequested(ctx context.Context, preempt <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-preempt:
		return ErrPreempted
	default:
		return nil
	}
}

func addSat(a, b time.Duration) time.Duration {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func mulSat(d time.Duration, n uint64) time.Duration {
	hi, lo := bits.Mul64(uint64(d), n)
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(lo)
}
