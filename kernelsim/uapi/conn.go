package uapi

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Error is a failed request: the errno the kernel returned and its message.
type Error struct {
	Op    Op
	Errno syscall.Errno
	Msg   string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("%v: %v", e.Op, e.Errno)
	}
	return fmt.Sprintf("%v: %s", e.Op, e.Msg)
}

// Unwrap makes errors.Is(err, syscall.ENOENT) work.
func (e *Error) Unwrap() error { return e.Errno }

// Conn is the client side of a kernelsim socket. It is safe for concurrent
// use: any number of calls may be in flight at once, from any goroutines,
// as ioctls on one fd run concurrently on Linux. Each request carries a
// sequence number that its reply echoes; whichever caller is reading the
// socket hands each reply to the caller that waits for it (there is no
// reader goroutine: a lone caller sends and reads, as a synchronous client
// would).
//
// The kernel answers a request on the socket it came on, and a reply read
// by the wrong process could not reach its caller. A Conn made by Dial or
// NewConn reads its socket itself: the process must be the only one using
// that socket. A Conn made by NewSharedConn, for a socket other processes
// may hold and use too (inherited across fork, received over a socket),
// sends its requests on a reply channel of its own, a connection attached
// to the same drm file on first use (see AttachRequest).
type Conn struct {
	fd int // the socket: a drm file, or the control socket

	// ch is where requests go and replies come from: fd, or the reply
	// channel of a shared Conn (-1 until attached).
	ch       atomic.Int32
	dial     func() (int, error) // connects to the same render node (shared Conns)
	attachMu sync.Mutex

	mu      sync.Mutex
	seq     uint32
	solo    *call            // the one call in flight, when there is one
	pending map[uint32]*call // the others, by sequence number
	free    []*call          // calls to reuse
	reading bool             // a caller is reading ch
	broken  func(Op) error   // set once the connection is unusable
	buf     []byte           // the reader's
}

// call is one request waiting for its reply.
type call struct {
	seq   uint32
	op    Op
	reply proto.Message
	fds   []int
	err   error
	done  bool
	wake  chan struct{} // a reply arrived, or the reader's turn passed here
	out   []byte        // the request packet, reused
}

// getLocked returns a call to use. Called with c.mu held.
func (c *Conn) getLocked() *call {
	if n := len(c.free); n > 0 {
		cl := c.free[n-1]
		c.free = c.free[:n-1]
		return cl
	}
	return &call{wake: make(chan struct{}, 1)}
}

// putLocked keeps a finished call for reuse. Called with c.mu held.
func (c *Conn) putLocked(cl *call) {
	select { // a stale wake-up
	case <-cl.wake:
	default:
	}
	out := cl.out
	if cap(out) > 4<<10 { // keep small buffers only
		out = nil
	}
	*cl = call{wake: cl.wake, out: out[:0]}
	if len(c.free) < 64 {
		c.free = append(c.free, cl)
	}
}

// addLocked registers a call in flight. Called with c.mu held.
func (c *Conn) addLocked(cl *call) {
	if c.solo == nil && len(c.pending) == 0 {
		c.solo = cl
		return
	}
	c.pending[cl.seq] = cl
}

// inFlightLocked reports whether a call with seq is in flight. Called
// with c.mu held.
func (c *Conn) inFlightLocked(seq uint32) bool {
	return (c.solo != nil && c.solo.seq == seq) || c.pending[seq] != nil
}

// removeLocked unregisters the call with seq and returns it (nil if
// none). Called with c.mu held.
func (c *Conn) removeLocked(seq uint32) *call {
	if c.solo != nil && c.solo.seq == seq {
		cl := c.solo
		c.solo = nil
		return cl
	}
	cl := c.pending[seq]
	delete(c.pending, seq)
	return cl
}

// wakeOneLocked wakes a call in flight, so that it takes over reading.
// Called with c.mu held, after the reader gave up its role.
func (c *Conn) wakeOneLocked() {
	if c.solo != nil {
		wake(c.solo)
		return
	}
	for _, cl := range c.pending {
		wake(cl)
		return
	}
}

// Dial connects to a kernelsim socket.
func Dial(path string) (*Conn, error) {
	fd, err := DialSocket(path)
	if err != nil {
		return nil, err
	}
	return NewConn(fd), nil
}

// DialSocket connects a new SOCK_SEQPACKET socket to path.
func DialSocket(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", path, err)
	}
	return fd, nil
}

// NewConn wraps a connected socket that this process alone uses (one it
// connected, or its restored copy).
func NewConn(fd int) *Conn {
	c := &Conn{fd: fd, pending: map[uint32]*call{}, buf: make([]byte, MaxMessage)}
	c.ch.Store(int32(fd))
	return c
}

// NewSharedConn wraps a render-node socket that other processes may hold
// and use too. Its requests go on a reply channel of this Conn's own,
// which dial connects to the same render node and the Conn attaches to
// the drm file on first use; Close closes both.
func NewSharedConn(fd int, dial func() (int, error)) *Conn {
	c := NewConn(fd)
	c.ch.Store(-1)
	c.dial = dial
	return c
}

// FD returns the socket (the drm file).
func (c *Conn) FD() int { return c.fd }

// Close closes the socket, and the reply channel if there is one.
func (c *Conn) Close() error {
	if ch := int(c.ch.Load()); ch >= 0 && ch != c.fd {
		unix.Close(ch)
	}
	return unix.Close(c.fd)
}

// channel returns the socket requests go on, attaching the reply channel
// of a shared Conn first.
func (c *Conn) channel() (int, error) {
	if ch := c.ch.Load(); ch >= 0 {
		return int(ch), nil
	}
	c.attachMu.Lock()
	defer c.attachMu.Unlock()
	if ch := c.ch.Load(); ch >= 0 {
		return int(ch), nil
	}
	// A drm file being checkpointed takes no channel (EAGAIN) until the
	// checkpoint is done: try again.
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 100*time.Millisecond) {
		ch, err := c.dial()
		if err != nil {
			return -1, fmt.Errorf("%v: reply channel: %w", OpAttach, err)
		}
		err = attach(ch, c.fd)
		if err == nil {
			c.ch.Store(int32(ch))
			return ch, nil
		}
		unix.Close(ch)
		if !errors.Is(err, syscall.EAGAIN) {
			return -1, err
		}
		time.Sleep(backoff)
	}
}

// attach makes ch, a new connection to the render node of drm file fd, a
// reply channel of that file. Nobody else reads ch yet.
func attach(ch, fd int) error {
	pkt, err := Marshal(Header{Op: OpAttach, Seq: 1}, &AttachRequest{})
	if err != nil {
		return err
	}
	if err := Send(ch, pkt, fd); err != nil {
		return fmt.Errorf("%v: send: %w", OpAttach, err)
	}
	buf := make([]byte, 4096)
	n, fds, err := Recv(ch, buf, 0)
	CloseFDs(fds)
	if err != nil {
		return fmt.Errorf("%v: receive: %w", OpAttach, err)
	}
	h, err := ParseHeader(buf[:n])
	if err != nil {
		return fmt.Errorf("%v: reply: %w", OpAttach, err)
	}
	if h.Status < 0 {
		return errorReply(OpAttach, h, buf[HeaderSize:n])
	}
	return nil
}

// Call sends req (with sendFDs) and decodes the reply into reply (which may
// be nil). It returns the file descriptors the reply carried. Calls may be
// made concurrently.
//
// A kernel that refuses the connection answers with an error reply of
// sequence number 0 (or of the first request's) and hangs up: Call
// returns that error, with the kernel's reason, whether the refusal
// arrived before or after the request was sent, and so does every later
// call.
//
// A request or reply too large for a packet travels out of line (see
// OpOutOfLine); only the control socket accepts such requests.
func (c *Conn) Call(op Op, req, reply proto.Message, sendFDs ...int) ([]int, error) {
	ch, err := c.channel()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.broken != nil {
		err := c.broken(op)
		c.mu.Unlock()
		return nil, err
	}
	if c.seq++; c.seq == 0 { // 0 is the kernel's for refusals
		c.seq++
	}
	for c.inFlightLocked(c.seq) { // a call 2^32 requests old still waits
		c.seq++
	}
	cl := c.getLocked()
	cl.seq, cl.op, cl.reply = c.seq, op, reply
	c.addLocked(cl)
	reader := !c.reading // a lone caller reads its reply itself
	c.reading = true
	c.mu.Unlock()

	pkt, oolFD, err := marshalOutOfLineAppend(cl.out[:0], Header{Op: op, Seq: cl.seq}, req)
	if err == nil {
		if oolFD >= 0 {
			sendFDs = append([]int{oolFD}, sendFDs...)
			defer unix.Close(oolFD)
		} else {
			cl.out = pkt
		}
		err = Send(ch, pkt, sendFDs...)
		if err == unix.EPIPE || err == unix.ECONNRESET {
			// The kernel hung up: the reason it left queued, or the end
			// of the connection, answers every call.
			err = nil
		} else if err != nil {
			err = fmt.Errorf("%v: send: %w", op, err)
		}
	}
	if err != nil { // never sent
		c.mu.Lock()
		c.removeLocked(cl.seq)
		if reader {
			c.reading = false
			c.wakeOneLocked()
		}
		c.putLocked(cl)
		c.mu.Unlock()
		return nil, err
	}
	return c.wait(cl, ch, reader)
}

// wait returns cl's answer, reading ch meanwhile whenever no other caller
// does; reader says the caller has the reader's role already.
func (c *Conn) wait(cl *call, ch int, reader bool) ([]int, error) {
	for {
		if reader {
			c.readOne(cl, ch) // gives the role up, returns with c.mu held
		} else {
			c.mu.Lock()
		}
		if cl.done {
			fds, err := cl.fds, cl.err
			c.putLocked(cl)
			c.mu.Unlock()
			return fds, err
		}
		if !c.reading {
			c.reading = true
			c.mu.Unlock()
			reader = true
			continue
		}
		c.mu.Unlock()
		<-cl.wake
		reader = false
	}
}

// readOne reads one packet from ch and hands it to its call; me is the
// reader's own call. Called as the reader (c.reading set, without c.mu);
// it gives the role up and returns with c.mu held.
func (c *Conn) readOne(me *call, ch int) {
	n, fds, err := Recv(ch, c.buf, 0)
	var (
		h    Header
		fail func(Op) error
	)
	// The failures' closures capture copies (rerr), not err itself, which
	// would then live on the heap for every reply.
	switch {
	case err != nil:
		// A kernel that hangs up with a request unread resets the
		// connection; its refusal may still be queued behind that.
		if err == unix.ECONNRESET {
			fail = c.refusal(ch)
		}
		if fail == nil {
			rerr := err
			fail = func(op Op) error { return fmt.Errorf("%v: receive: %w", op, rerr) }
		}
	case n == 0:
		fail = func(op Op) error {
			return fmt.Errorf("%v: connection closed by kernelsim: %w", op, syscall.ECONNRESET)
		}
	default:
		if h, err = ParseHeader(c.buf[:n]); err != nil {
			CloseFDs(fds)
			herr := err
			fail = func(op Op) error { return fmt.Errorf("%v: reply: %w", op, herr) }
		} else if h.Seq == 0 && h.Status < 0 {
			CloseFDs(fds)
			fail = c.refusalOf(h, c.buf[HeaderSize:n])
		}
	}
	if fail != nil {
		c.mu.Lock()
		c.reading = false
		c.breakLocked(fail)
		return
	}
	if h.Seq == me.seq {
		// The reader's own reply: nobody else can take me meanwhile.
		me.fds, me.err = decodeReply(me.op, me.reply, h, c.buf[HeaderSize:n], fds)
		c.mu.Lock()
		c.removeLocked(me.seq)
		me.done = true
		c.reading = false
		c.wakeOneLocked() // somebody else reads for the calls left
		return
	}
	c.mu.Lock()
	target := c.removeLocked(h.Seq)
	c.mu.Unlock()
	if target == nil {
		CloseFDs(fds) // a reply nobody waits for (a stale one)
	} else {
		target.fds, target.err = decodeReply(target.op, target.reply, h, c.buf[HeaderSize:n], fds)
	}
	c.mu.Lock()
	c.reading = false
	if target != nil {
		target.done = true
		wake(target)
	}
}

func wake(cl *call) {
	select {
	case cl.wake <- struct{}{}:
	default:
	}
}

// breakLocked fails every waiting call, and every later one, with fail.
// Called with c.mu held.
func (c *Conn) breakLocked(fail func(Op) error) {
	c.broken = fail
	if cl := c.solo; cl != nil {
		c.solo = nil
		cl.err = fail(cl.op)
		cl.done = true
		wake(cl)
	}
	for seq, cl := range c.pending {
		delete(c.pending, seq)
		cl.err = fail(cl.op)
		cl.done = true
		wake(cl)
	}
}

// decodeReply turns a reply packet's payload into reply, or its error.
func decodeReply(op Op, reply proto.Message, h Header, inline []byte, fds []int) ([]int, error) {
	payload, fds, err := InlinePayload(&h, inline, fds)
	if err != nil {
		return nil, fmt.Errorf("%v: reply: %w", op, err)
	}
	if h.Status < 0 {
		CloseFDs(fds)
		return nil, errorReply(op, h, payload)
	}
	if reply != nil {
		if err := proto.Unmarshal(payload, reply); err != nil {
			CloseFDs(fds)
			return nil, fmt.Errorf("%v: decode reply: %w", op, err)
		}
	}
	return fds, nil
}

// refusal returns the error reply a kernel that hung up left queued.
// Called as the reader.
func (c *Conn) refusal(ch int) func(Op) error {
	n, fds, err := Recv(ch, c.buf, unix.MSG_DONTWAIT)
	CloseFDs(fds)
	if err != nil || n == 0 {
		return nil
	}
	h, err := ParseHeader(c.buf[:n])
	if err != nil || h.Status >= 0 {
		return nil
	}
	return c.refusalOf(h, c.buf[HeaderSize:n])
}

// refusalOf is the error of a refusal reply, for any call.
func (c *Conn) refusalOf(h Header, payload []byte) func(Op) error {
	var e ErrorReply
	_ = proto.Unmarshal(payload, &e)
	errno := syscall.Errno(-h.Status)
	return func(op Op) error { return &Error{Op: op, Errno: errno, Msg: e.Message} }
}

func errorReply(op Op, h Header, payload []byte) error {
	var e ErrorReply
	_ = proto.Unmarshal(payload, &e)
	return &Error{Op: op, Errno: syscall.Errno(-h.Status), Msg: e.Message}
}

// IsErrno reports whether err is a kernelsim error with that errno.
func IsErrno(err error, errno syscall.Errno) bool { return errors.Is(err, errno) }
