// Package ktime provides the clocks kernelsim runs on: the real monotonic
// clock, and a manual clock that only moves when a test says so. Everything
// time-dependent in the simulation (GPU execution cost, scheduler timeouts,
// fence timestamps) reads one of these, which is what makes tests
// deterministic.
package ktime

import (
	"context"
	"time"
)

// Clock is a monotonic time source with one-shot timers.
type Clock interface {
	// Now is the time elapsed since the clock started.
	Now() time.Duration
	// After returns a channel closed once d has passed on this clock, and a
	// stop function that returns true if it stopped the timer before it
	// fired.
	After(d time.Duration) (<-chan struct{}, func() bool)
}

// Sleep waits until d has passed on clk or ctx is done, whichever is first.
func Sleep(ctx context.Context, clk Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	ch, stop := clk.After(d)
	defer stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
