package kernelsim

import (
	"log"
	"sync"
	"time"
)

// Rate of the kernel's log (refusals): a burst of logBurst lines, then
// logPerSecond lines a second, so that a client flooding the daemon with
// refused requests cannot fill the disk. Lines over the rate are counted
// and the count is logged with the next line that passes, like the
// kernel's printk_ratelimit "callbacks suppressed".
const (
	logBurst     = 20
	logPerSecond = 2
)

// rateLog is a token-bucket rate-limited logger.
type rateLog struct {
	l   *log.Logger
	now func() time.Time

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

func newRateLog(l *log.Logger) *rateLog {
	if l == nil {
		l = log.Default()
	}
	return &rateLog{l: l, now: time.Now, tokens: logBurst}
}

// Printf logs a line unless the rate is exceeded.
func (r *rateLog) Printf(format string, args ...any) {
	r.mu.Lock()
	now := r.now()
	if !r.last.IsZero() {
		r.tokens = min(logBurst, r.tokens+now.Sub(r.last).Seconds()*logPerSecond)
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	r.tokens--
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.l.Printf("%d similar lines suppressed", n)
	}
	r.l.Printf(format, args...)
}
