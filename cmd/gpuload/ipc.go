package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parent and children exchange small messages over a SOCK_SEQPACKET
// socketpair with blocking sendmsg/recvmsg: one byte of kind, a LE u32
// step, then data; dma-buf fds travel as SCM_RIGHTS.

type msgKind uint8

const (
	msgShare     msgKind = iota + 1 // parent → child: a dma-buf fd
	msgReady                        // child → parent: set up (imported, ...)
	msgStep                         // parent → child: do step
	msgAck                          // child → parent: step submitted
	msgFinish                       // parent → child: send your output
	msgOutput                       // child → parent: a chunk of output
	msgOutputEnd                    // child → parent: output complete
	msgGiveBack                     // parent → child: send the dma-buf fd back
	msgReturnFD                     // child → parent: the dma-buf fd
	msgStepDone                     // child → parent: step's GPU work complete
)

func (k msgKind) String() string {
	names := [...]string{"?", "share", "ready", "step", "ack", "finish", "output", "output-end", "give-back", "return-fd", "step-done"}
	if int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("msg(%d)", uint8(k))
}

const (
	msgHeader   = 5
	outputChunk = 32 << 10
	maxMsg      = msgHeader + outputChunk
)

type message struct {
	kind msgKind
	step uint32
	data []byte
	fds  []int
}

// peer is our end of a socketpair to another process of the run.
type peer struct {
	fd   int
	name string // the other side: "parent", "consumer", ...
}

// childPeer is a child's end: fd 3, put there by spawn.
func childPeer() *peer { return &peer{fd: 3, name: "parent"} }

func (p *peer) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

func (p *peer) send(kind msgKind, step int, data []byte, fds ...int) error {
	buf := make([]byte, msgHeader+len(data))
	buf[0] = byte(kind)
	binary.LittleEndian.PutUint32(buf[1:], uint32(step))
	copy(buf[msgHeader:], data)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err := unix.Sendmsg(p.fd, buf, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("send %v to %s: %w", kind, p.name, err)
		}
		return nil
	}
}

// errPeerClosed is the end of file on a socketpair: the other process
// exited.
var errPeerClosed = errors.New("connection closed")

func (p *peer) recv() (message, error) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(p.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return message{}, fmt.Errorf("receive from %s: %w", p.name, err)
		}
		var fds []int
		if oobn > 0 {
			cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil {
				for _, c := range cmsgs {
					if r, err := unix.ParseUnixRights(&c); err == nil {
						fds = append(fds, r...)
					}
				}
			}
		}
		if n == 0 && len(fds) == 0 {
			return message{}, fmt.Errorf("receive from %s: %w", p.name, errPeerClosed)
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n < msgHeader {
			closeFDs(fds)
			return message{}, fmt.Errorf("receive from %s: malformed message (%d bytes, flags %#x)", p.name, n, flags)
		}
		return message{
			kind: msgKind(buf[0]),
			step: binary.LittleEndian.Uint32(buf[1:]),
			data: append([]byte(nil), buf[msgHeader:n]...),
			fds:  fds,
		}, nil
	}
}

// expect receives a message of the given kind and step (-1: any step).
func (p *peer) expect(kind msgKind, step int) (message, error) {
	m, err := p.recv()
	if err != nil {
		return m, err
	}
	if m.kind != kind || (step >= 0 && m.step != uint32(step)) {
		closeFDs(m.fds)
		return m, fmt.Errorf("protocol: got %v %d from %s, want %v %d", m.kind, m.step, p.name, kind, step)
	}
	return m, nil
}

// expectFD receives a message of the given kind carrying exactly one fd.
func (p *peer) expectFD(kind msgKind) (int, error) {
	m, err := p.expect(kind, -1)
	if err != nil {
		return -1, err
	}
	if len(m.fds) != 1 {
		closeFDs(m.fds)
		return -1, fmt.Errorf("protocol: %v from %s carried %d fds, want 1", kind, p.name, len(m.fds))
	}
	return m.fds[0], nil
}

// sendOutput sends a process's output bytes in chunks.
func (p *peer) sendOutput(out []byte) error {
	for len(out) > 0 {
		n := min(len(out), outputChunk)
		if err := p.send(msgOutput, 0, out[:n]); err != nil {
			return err
		}
		out = out[n:]
	}
	return p.send(msgOutputEnd, 0, nil)
}

// recvOutput collects what sendOutput sent.
func (p *peer) recvOutput() ([]byte, error) {
	var out []byte
	for {
		m, err := p.recv()
		if err != nil {
			return nil, err
		}
		closeFDs(m.fds)
		switch m.kind {
		case msgOutput:
			out = append(out, m.data...)
		case msgOutputEnd:
			return out, nil
		default:
			return nil, fmt.Errorf("protocol: got %v from %s while collecting output", m.kind, p.name)
		}
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// child is a process of the run started by spawn.
type child struct {
	role string
	pid  int
	peer *peer
	done bool
}

// spawn re-executes this program in a child role, with one end of a new
// socketpair as its fd 3, stdin on /dev/null and our stdout and stderr;
// inherit are the descriptors it gets as fd 4, 5, ... (as fork shares them).
// It uses fork+exec directly (os.StartProcess would keep a pidfd, one
// more kind of file for the checkpoint to handle) and the child is reaped
// by wait.
func (r *runner) spawn(role string, inherit ...int) (*child, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("spawn %s: socketpair: %w", role, err)
	}
	devnull, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("spawn %s: %w", role, err)
	}
	argv := append([]string{os.Args[0]}, r.p.childArgs(role)...)
	attr := &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{uintptr(devnull), 1, 2, uintptr(fds[1])},
	}
	for _, fd := range inherit { // fd 4 on: as fork would leave them
		attr.Files = append(attr.Files, uintptr(fd))
	}
	pid, err := syscall.ForkExec("/proc/self/exe", argv, attr)
	unix.Close(devnull)
	unix.Close(fds[1])
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("spawn %s: %w", role, err)
	}
	c := &child{role: role, pid: pid, peer: &peer{fd: fds[0], name: role}}
	r.children = append(r.children, c)
	return c, nil
}

// wait reaps the child and reports how it ended.
func (c *child) wait() error {
	if c.done {
		return nil
	}
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(c.pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for %s (pid %d): %w", c.role, c.pid, err)
		}
		break
	}
	c.done = true
	c.peer.close()
	return exitError(c, ws)
}

func exitError(c *child, ws syscall.WaitStatus) error {
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return fmt.Errorf("%s (pid %d) exited with status %d", c.role, c.pid, ws.ExitStatus())
	case ws.Signaled():
		return fmt.Errorf("%s (pid %d) killed by %s", c.role, c.pid, unix.SignalName(ws.Signal()))
	}
	return fmt.Errorf("%s (pid %d) ended with wait status %#x", c.role, c.pid, uint32(ws))
}

// finishChildren waits for every child; it is the success path.
func (r *runner) finishChildren() error {
	var first error
	for _, c := range r.children {
		if err := c.wait(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// abortChildren is the failure path: close the sockets (a child blocked
// on its parent then sees end of file and exits), give the children a
// moment, kill those still running, and reap them all. It returns err
// with the first child's failure added, which usually says more.
func (r *runner) abortChildren(err error) error {
	for _, c := range r.children {
		c.peer.close()
	}
	deadline := time.Now().Add(5 * time.Second)
	var why error
	for _, c := range r.children {
		for !c.done {
			var ws syscall.WaitStatus
			pid, werr := syscall.Wait4(c.pid, &ws, syscall.WNOHANG, nil)
			if werr == syscall.EINTR {
				continue
			}
			if werr != nil {
				c.done = true
				break
			}
			if pid == c.pid {
				c.done = true
				if e := exitError(c, ws); e != nil && why == nil {
					why = e
				}
				break
			}
			if time.Now().After(deadline) {
				syscall.Kill(c.pid, syscall.SIGKILL)
				deadline = time.Now().Add(5 * time.Second)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if why != nil && (errors.Is(err, errPeerClosed) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)) {
		return fmt.Errorf("%w (%v)", err, why)
	}
	return err
}

// The run's messages, by who sends them. The parent shares a dma-buf with
// a child at setup (sendDmaBuf → recvDmaBuf), the child sets up and
// reports ready (awaitReady), then every step is a handshake (step →
// stepServer: msgStep, msgAck, and in pipeline and handoff msgStepDone), and at the
// end the parent collects the child's output (collectOutput → sendBuffers)
// or, in dmabuf-only, gets the fd back.

// abortChildrenOnError wraps a multi-process scenario's run: when it fails,
// the children are aborted (see abortChildren).
func abortChildrenOnError(run func(r *runner) ([]byte, error)) func(r *runner) ([]byte, error) {
	return func(r *runner) ([]byte, error) {
		out, err := run(r)
		if err != nil {
			return nil, r.abortChildren(err)
		}
		return out, nil
	}
}

// spawnWithDmaBuf spawns a child in role and passes it a dma-buf fd
// (msgShare); our fd stays open.
func (r *runner) spawnWithDmaBuf(role string, fd int) (*child, error) {
	c, err := r.spawn(role)
	if err != nil {
		return nil, err
	}
	if err := c.peer.send(msgShare, 0, nil, fd); err != nil {
		return nil, err
	}
	return c, nil
}

// shareWithChild exports buffer id as a dma-buf, spawns a child in role,
// passes it the fd, closes our copy of the fd (we keep the GEM handle) and
// waits until the child is ready.
func (r *runner) shareWithChild(g *gpuProc, id bufID, role string) (*child, error) {
	fd, err := g.exportDmaBuf(id)
	if err != nil {
		return nil, err
	}
	c, err := r.spawnWithDmaBuf(role, fd)
	closeFDs([]int{fd})
	if err != nil {
		return nil, err
	}
	if err := c.awaitReady(); err != nil {
		return nil, err
	}
	return c, nil
}

// awaitReady waits for the child's msgReady: it has set up.
func (c *child) awaitReady() error {
	if _, err := c.peer.expect(msgReady, -1); err != nil {
		return fmt.Errorf("%s setup: %w", c.role, err)
	}
	return nil
}

// step is the parent's side of the per-step handshake: it tells the child
// to do step i (0-based) and waits until the child has submitted it.
func (c *child) step(i int) error {
	if err := c.peer.send(msgStep, i, nil); err != nil {
		return err
	}
	_, err := c.peer.expect(msgAck, i)
	return err
}

// awaitStepDone waits for the child's report that step i's GPU work is
// complete (reportStepDone).
func (c *child) awaitStepDone(i int) error {
	_, err := c.peer.expect(msgStepDone, i)
	return err
}

// collectOutput asks the child for its output (msgFinish) and receives it.
func (c *child) collectOutput() ([]byte, error) {
	if err := c.peer.send(msgFinish, 0, nil); err != nil {
		return nil, err
	}
	out, err := c.peer.recvOutput()
	if err != nil {
		return nil, fmt.Errorf("collect %s output: %w", c.role, err)
	}
	return out, nil
}

// recvDmaBuf is a child's first receive: the dma-buf fd the parent shares.
func (p *peer) recvDmaBuf() (int, error) {
	fd, err := p.expectFD(msgShare)
	if err != nil {
		return -1, fmt.Errorf("setup: %w", err)
	}
	return fd, nil
}

// reportStepDone tells the parent that step i's GPU work is complete.
func (p *peer) reportStepDone(i int) error { return p.send(msgStepDone, i, nil) }

// stepServer is a child's side of a run once it has set up: it reports
// ready, then answers the parent's steps in order until the parent sends
// the end message.
type stepServer struct {
	// submit does step i's (0-based) work up to the point where the step
	// counts as submitted; the parent is acknowledged after it. nil: no
	// work.
	submit func(i int) error
	// afterAck, when set, runs after the acknowledgement.
	afterAck func(i int) error
	// end is the message that ends the run (msgFinish, msgGiveBack);
	// onEnd answers it and its error is the child's result.
	end   msgKind
	onEnd func() error
}

func (s *stepServer) serve(parent *peer) error {
	if err := parent.send(msgReady, 0, nil); err != nil {
		return err
	}
	for next := 0; ; next++ {
		m, err := parent.recv()
		if err != nil {
			return fmt.Errorf("step %d: %w", next+1, err)
		}
		closeFDs(m.fds)
		switch m.kind {
		case msgStep:
			if int(m.step) != next {
				return fmt.Errorf("protocol: step %d announced, expected %d", m.step+1, next+1)
			}
			if err := s.step(parent, next); err != nil {
				return fmt.Errorf("step %d: %w", next+1, err)
			}
		case s.end:
			return s.onEnd()
		default:
			return fmt.Errorf("protocol: unexpected %v", m.kind)
		}
	}
}

func (s *stepServer) step(parent *peer, i int) error {
	if s.submit != nil {
		if err := s.submit(i); err != nil {
			return err
		}
	}
	if err := parent.send(msgAck, i, nil); err != nil {
		return err
	}
	if s.afterAck != nil {
		return s.afterAck(i)
	}
	return nil
}

// sendBuffers reads buffers back and sends them to the parent as this
// child's output.
func (g *gpuProc) sendBuffers(parent *peer, ids ...bufID) error {
	out, err := g.readAll(ids...)
	if err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	return parent.sendOutput(out)
}
