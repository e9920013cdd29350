package ktime

import (
	"sync"
	"time"
)

type realClock struct{ start time.Time }

var (
	realOnce sync.Once
	realInst *realClock
)

// Real returns the process-wide real clock. It counts from its first use,
// so all callers share one time base.
func Real() Clock {
	realOnce.Do(func() { realInst = &realClock{start: time.Now()} })
	return realInst
}

func (c *realClock) Now() time.Duration { return time.Since(c.start) }

func (c *realClock) After(d time.Duration) (<-chan struct{}, func() bool) {
	ch := make(chan struct{})
	// AfterFunc rather than time.After: no goroutine or channel lingers
	// once the timer is stopped.
	t := time.AfterFunc(d, func() { close(ch) })
	return ch, t.Stop
}
