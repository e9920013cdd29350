package plugin

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
)

// criu's log levels (criu/include/log.h): a line shows when its level is
// at most criu's current one (-v0 .. -v4).
const (
	levelMsg   = 0 // always, to criu's stdout
	levelError = 1
	levelWarn  = 2
	levelInfo  = 3
	levelDebug = 4
)

// maxPending bounds the log lines kept while no hook runs.
const maxPending = 1000

// relay is the helper's drmcore.Logger and the only writer of the
// channel. While a hook runs, criu's side reads the channel, so lines go
// out at once and the C part prints them through criu's print_on_level.
// Lines logged between hooks (by work that goes on in the background) wait
// for the next hook.
type relay struct {
	conn *net.UnixConn

	mu      sync.Mutex
	level   uint32 // criu's log level
	inHook  bool
	pending [][]byte // LOG payloads logged between hooks
	dropped int
	err     error // first write error: the channel is broken
}

func newRelay(c *net.UnixConn) *relay { return &relay{conn: c, level: levelInfo} }

func (r *relay) setLevel(l uint32) {
	r.mu.Lock()
	r.level = l
	r.mu.Unlock()
}

// begin starts a hook: lines logged meanwhile go out first.
func (r *relay) begin() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inHook = true
	if r.dropped > 0 {
		r.pending = append(r.pending, logPayload(levelWarn, fmt.Sprintf("(%d log lines dropped between hooks)", r.dropped)))
		r.dropped = 0
	}
	for _, p := range r.pending {
		r.writeLocked(frameLog, p)
	}
	r.pending = nil
}

// end finishes a hook with its result.
func (r *relay) end(rc int32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeLocked(frameResult, u32(uint32(rc)))
	r.inHook = false
	return r.err
}

// frame sends a frame within a hook.
func (r *relay) frame(typ uint32, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeLocked(typ, payload)
	return r.err
}

func (r *relay) writeLocked(typ uint32, payload []byte) {
	if r.err == nil {
		r.err = writeFrame(r.conn, typ, payload)
	}
}

func logPayload(level uint32, line string) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, level), line...)
}

func (r *relay) logf(level uint32, format string, args []any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if level > r.level {
		return // not shown at criu's level: do not even format
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	for line := range strings.SplitSeq(msg, "\n") {
		p := logPayload(level, line)
		switch {
		case r.inHook:
			r.writeLocked(frameLog, p)
		case len(r.pending) < maxPending:
			r.pending = append(r.pending, p)
		default:
			r.dropped++
		}
	}
}

// Summaryf logs at criu's default level (-v2), the level of its warnings,
// so that a run's summary shows without -v.
func (r *relay) Summaryf(format string, args ...any) { r.logf(levelWarn, format, args) }
func (r *relay) Errorf(format string, args ...any)   { r.logf(levelError, format, args) }
func (r *relay) Warnf(format string, args ...any)    { r.logf(levelWarn, format, args) }
func (r *relay) Infof(format string, args ...any)    { r.logf(levelInfo, format, args) }
func (r *relay) Debugf(format string, args ...any)   { r.logf(levelDebug, format, args) }
