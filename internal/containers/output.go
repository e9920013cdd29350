package containers

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Output collects what a detached runc container writes to its stdout and
// stderr. A detached container inherits runc's stdio; the harness gives it
// pipes, the only stdio runc can checkpoint and restore (runc records them
// in descriptors.json and has criu reconnect the restored tasks to the pipes
// that `runc restore` gets).
type Output struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed chan struct{}
}

// stdio makes the pipes for a container: stdin (with no writer: reads see
// end of file) and one pipe for stdout and stderr, collected into an
// Output. The caller passes the returned files to runc and then calls
// release, which closes the harness's copies of the container's ends.
func stdio() (in, out *os.File, o *Output, release func(), err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, nil, nil, fmt.Errorf("stdout pipe: %w", err)
	}
	inW.Close()
	o = &Output{closed: make(chan struct{})}
	go o.collect(outR)
	return inR, outW, o, func() { inR.Close(); outW.Close() }, nil
}

func (o *Output) collect(r *os.File) {
	defer close(o.closed)
	defer r.Close()
	b := make([]byte, 32<<10)
	for {
		n, err := r.Read(b)
		o.mu.Lock()
		o.buf.Write(b[:n])
		o.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// String returns everything collected so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Lines returns the complete lines collected so far.
func (o *Output) Lines() []string {
	s := o.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(s[:i], "\n")
}

// WaitClosed waits until every writer of the output is gone (the
// container's processes and runc), or timeout passes.
func (o *Output) WaitClosed(timeout time.Duration) bool {
	select {
	case <-o.closed:
		return true
	case <-time.After(timeout):
		return false
	}
}
