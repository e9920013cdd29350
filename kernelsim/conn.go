package kernelsim

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/uapi"
)

// conn serves one render-node connection, which is one drm file.
//
// The protocol is synchronous per drm file: a client sends one request and
// reads its reply before sending the next (the client library enforces
// this). That is what lets a checkpoint capture the traffic in flight
// exactly: at most one request received and not yet answered, or one
// reply sent and not yet read.
//
// The socket is non-blocking and waited on through Go's netpoller: a
// connection waiting for its client holds a parked goroutine, no thread.
type conn struct {
	s         *Server
	sock      *os.File // the accepted socket
	rc        syscall.RawConn
	diag      *diagSock // sock_diag of the client's network namespace
	dev       *Device
	owner     Cred
	clientIno uint64
	ctx       context.Context // of every request: it carries blocker
	blocker   connBlocker

	// mu is held while a request is handled, except in replayable
	// blocking waits (see Blocker); a checkpoint takes it to freeze the
	// connection at a request boundary.
	mu         sync.Mutex
	cond       *sync.Cond
	f          *File
	frozen     bool
	dead       bool
	requests   uint64
	cur        []byte // the request being handled, while in a blocking wait
	blocked    bool
	replay     []byte // a request to handle before reading the socket again
	lastReply  []byte
	lastDmaBuf uint64 // inode of the dma-buf lastReply carried
	afterReply func() // runs once the current reply is sent

	// Used by serve() alone, made once per connection.
	rx      received
	tryRead func(fd uintptr) bool
	out     packetOut
}

// newConn serves the accepted non-blocking socket fd, which it owns from
// then on, as a new drm file of d.
func newConn(s *Server, fd int, d *Device, owner Cred, clientIno uint64, diag *diagSock) (*conn, error) {
	sock := os.NewFile(uintptr(fd), "render-node")
	rc, err := sock.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("render-node socket: %w", err)
	}
	c := &conn{s: s, sock: sock, rc: rc, diag: diag, dev: d, owner: owner, clientIno: clientIno}
	c.cond = sync.NewCond(&c.mu)
	c.blocker.c = c
	c.ctx = WithBlocker(context.Background(), &c.blocker)
	c.tryRead = c.read
	c.f = d.Open(owner)
	c.f.attachIO(c, clientIno)
	return c, nil
}

// release frees what the connection holds once nobody serves it.
func (c *conn) release() {
	c.mu.Lock()
	f := c.f
	c.dead = true
	c.mu.Unlock()
	f.Close()
	c.sock.Close()
	c.s.diag.release(c.diag)
	c.s.k.acct.unchargeConn(c.owner.UID)
}

// bufs holds request buffers: a connection needs one only while it reads.
var bufs = sync.Pool{New: func() any { b := make([]byte, uapi.MaxMessage); return &b }}

func (c *conn) serve() {
	defer c.release()
	for {
		c.mu.Lock()
		for c.frozen && !c.dead {
			c.cond.Wait()
		}
		if c.dead {
			c.mu.Unlock()
			return
		}
		if req := c.replay; req != nil {
			c.replay = nil
			c.handle(req, nil)
			c.mu.Unlock()
			continue
		}
		c.mu.Unlock()

		if err := c.next(); err != nil {
			return // the socket was closed
		}
		if !c.rx.ok {
			continue // the connection's state changed
		}
		// c.mu is held.
		req, fds, err := c.rx.req, c.rx.fds, c.rx.err
		c.rx = received{}
		if err == nil {
			c.handle(req, fds)
		} else if bad := (*Error)(nil); errors.As(err, &bad) {
			c.replyError(nil, bad)
		} else {
			c.mu.Unlock()
			return // the client hung up
		}
		c.mu.Unlock()
	}
}

// received is a request read from the socket, or what went wrong.
type received struct {
	ok  bool
	req []byte
	fds []int
	err error
}

// next waits without c.mu until the socket holds a request, which it
// leaves in c.rx with c.mu held, or until the connection is frozen, has a
// request to replay or is killed. It waits without the lock so that a
// checkpoint finds a request still queued in the socket.
func (c *conn) next() error { return c.rc.Read(c.tryRead) }

// read is next's attempt at reading.
func (c *conn) read(fd uintptr) bool {
	c.mu.Lock()
	if c.frozen || c.replay != nil || c.dead {
		c.mu.Unlock()
		return true
	}
	buf := bufs.Get().(*[]byte)
	n, fds, err := recvRequest(int(fd), *buf)
	if err == unix.EAGAIN {
		bufs.Put(buf)
		c.mu.Unlock()
		return false
	}
	c.rx = received{ok: true, fds: fds, err: err}
	if err == nil {
		c.rx.req = append([]byte(nil), (*buf)[:n]...)
	}
	bufs.Put(buf)
	return true // with c.mu held
}

// recvRequest reads one request packet. A packet the kernel must answer
// with an error (too large, too many descriptors, empty) gives an *Error;
// the end of the connection gives io.EOF.
func recvRequest(fd int, buf []byte) (int, []int, error) {
	n, fds, err := uapi.RecvNonblock(fd, buf, 0)
	switch {
	case errors.Is(err, uapi.ErrTruncated):
		return 0, nil, errnof(syscall.EMSGSIZE, "request exceeds %d bytes", uapi.MaxMessage)
	case errors.Is(err, syscall.EMSGSIZE):
		return 0, nil, errnof(syscall.EMSGSIZE, "request carries more than %d file descriptors", uapi.MaxFDs)
	case err != nil:
		return 0, nil, err
	case n > 0:
		return n, fds, nil
	}
	// recvmsg returns 0 both at the end of the connection and for an
	// empty packet: only a peer that hung up means the former.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	if _, perr := unix.Poll(pfd, 0); perr == nil && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) == 0 {
		uapi.CloseFDs(fds)
		return 0, nil, errnof(syscall.EPROTO, "bad request: empty packet")
	}
	uapi.CloseFDs(fds)
	return 0, nil, io.EOF
}

// handle runs one request and sends its reply. Called with c.mu held.
func (c *conn) handle(req []byte, fds []int) {
	c.requests++
	h, err := uapi.ParseHeader(req)
	if err != nil {
		uapi.CloseFDs(fds)
		c.replyError(nil, errnof(syscall.EPROTO, "bad request: %v", err))
		return
	}
	c.cur = req
	reply, replyFD, db, err := c.dispatch(c.ctx, h, req[uapi.HeaderSize:], fds)
	c.cur = nil
	if err != nil {
		c.replyError(&h, err)
		return
	}
	pkt, err := uapi.Marshal(uapi.Header{Op: h.Op, Seq: h.Seq}, reply)
	if err != nil {
		c.replyError(&h, errnof(syscall.EOVERFLOW, "%v", err))
		return
	}
	c.send(pkt, replyFD, db)
	if c.afterReply != nil {
		c.afterReply()
		c.afterReply = nil
	}
}

func (c *conn) send(pkt []byte, fd int, db *DmaBuf) {
	if c.out.sendPacket(c.rc, pkt, fd) != nil {
		return // the client is gone; serve() notices
	}
	c.lastReply = pkt
	c.lastDmaBuf = 0
	if db != nil {
		c.lastDmaBuf = db.ino
	}
}

// packetOut sends packets on a non-blocking socket; while the peer's
// receive queue is full it waits in the netpoller, not in a thread. It is
// reused from packet to packet, so that sending allocates nothing.
type packetOut struct {
	send func(fd uintptr) bool // trySend, made once
	pkt  []byte
	fd   int
	err  error
}

func (o *packetOut) sendPacket(rc syscall.RawConn, pkt []byte, fd int) error {
	if o.send == nil {
		o.send = o.trySend
	}
	o.pkt, o.fd = pkt, fd
	err := rc.Write(o.send)
	if err == nil {
		err = o.err
	}
	o.pkt, o.err = nil, nil
	return err
}

func (o *packetOut) trySend(fd uintptr) bool {
	if o.fd >= 0 {
		o.err = uapi.SendNonblock(int(fd), o.pkt, o.fd)
	} else {
		o.err = uapi.SendNonblock(int(fd), o.pkt)
	}
	return o.err != unix.EAGAIN
}

func (c *conn) replyError(h *uapi.Header, err error) {
	hdr := uapi.Header{}
	if h != nil {
		hdr.Op, hdr.Seq = h.Op, h.Seq
	}
	hdr.Status = -int32(ErrnoOf(err))
	pkt, merr := uapi.Marshal(hdr, &uapi.ErrorReply{Message: truncate(err.Error(), 4096)})
	if merr != nil {
		return
	}
	c.send(pkt, -1, nil)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// connBlocker releases the connection during replayable waits. While a
// wait lasts it watches the socket: a client that hangs up (or is killed,
// or the connection is killed) cancels the wait, as a fatal signal
// interrupts an ioctl on Linux, so its file is released at once instead of
// pinning the file and the goroutine serving it. The watcher waits in the
// netpoller; Reacquire stops it with a read deadline in the past.
//
// A connection handles one request at a time, so it has one connBlocker,
// used under c.mu.
type connBlocker struct {
	c       *conn
	watched chan struct{} // closed when the watcher is gone
}

func (b *connBlocker) Release(hangup context.CancelFunc) {
	c := b.c
	c.blocked = true
	watched := make(chan struct{})
	b.watched = watched
	go func() {
		defer close(watched)
		if c.watchHangup() {
			hangup()
		}
	}()
	c.mu.Unlock()
}

// stopWatch is a read deadline that has passed: it wakes the watcher.
var stopWatch = time.Unix(1, 0)

func (b *connBlocker) Reacquire() {
	c := b.c
	// Stop the watcher; it has returned already if it saw a hang-up.
	c.sock.SetReadDeadline(stopWatch)
	<-b.watched
	c.sock.SetReadDeadline(time.Time{})
	c.mu.Lock()
	for c.frozen && !c.dead {
		c.cond.Wait()
	}
	c.blocked = false
}

// watchHangup waits until the client hangs up or the connection is shut
// down, which it reports, or until Reacquire stops it.
func (c *conn) watchHangup() bool {
	hup := false
	err := c.rc.Read(func(fd uintptr) bool {
		hup = hungUp(int(fd))
		return hup
	})
	return hup || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded))
}

// hungUp reports whether the peer of socket fd hung up, or the socket was
// shut down.
func hungUp(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return err != unix.EINTR
	}
	return pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
}

// Freeze implements IO: it stops the connection at a request boundary and
// returns the traffic caught in flight.
func (c *conn) Freeze() (*uapi.PendingIO, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen {
		return nil, errnof(syscall.EBUSY, "connection already frozen by a checkpoint")
	}
	pending := &uapi.PendingIO{}
	switch {
	case c.cur != nil:
		pending.Request = c.cur // a request blocked before taking effect
	case c.replay != nil:
		pending.Request = c.replay
	}
	var ferr error
	if err := c.rc.Control(func(fd uintptr) { ferr = c.pending(int(fd), pending) }); err != nil {
		return nil, errnof(syscall.ECONNRESET, "pid %d's connection is closed: %v", c.owner.PID, err)
	}
	if ferr != nil {
		return nil, ferr
	}
	c.frozen = true
	return pending, nil
}

// pending adds the request queued in socket fd, and the reply the client
// has not read, to p. Called with c.mu held.
func (c *conn) pending(fd int, p *uapi.PendingIO) error {
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return fmt.Errorf("SIOCINQ: %w", err)
	}
	if inq > 0 {
		if p.Request != nil {
			return errnof(syscall.EPROTO, "pid %d sent a request while another is pending: pipelined requests cannot be checkpointed", c.owner.PID)
		}
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		n, fds, err := uapi.Recv(fd, *buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		uapi.CloseFDs(fds)
		if err != nil {
			return fmt.Errorf("peek request: %w", err)
		}
		if len(fds) > 0 {
			return errnof(syscall.EAGAIN, "a request carrying a file descriptor is in flight; retry the checkpoint")
		}
		if n < inq {
			return errnof(syscall.EPROTO, "pid %d has pipelined requests: cannot be checkpointed", c.owner.PID)
		}
		p.Request = append([]byte(nil), (*buf)[:n]...)
	}
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return fmt.Errorf("SIOCOUTQ: %w", err)
	}
	if outq > 0 && c.lastReply != nil {
		p.UnreadReply = c.lastReply
		p.UnreadReplyDmabufInode = c.lastDmaBuf
	}
	return nil
}

// Thaw implements IO.
func (c *conn) Thaw() {
	c.mu.Lock()
	c.frozen = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Kill disconnects the client: its file is closed by serve().
func (c *conn) Kill() {
	c.mu.Lock()
	c.dead = true
	c.cond.Broadcast()
	c.mu.Unlock()
	// Wakes serve() or a hang-up watcher waiting on the socket.
	c.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// claimFile binds the connection to a restored file. Called with c.mu held,
// as the first request of the connection.
func (c *conn) claimFile(req *uapi.ClaimFileRequest) error {
	if c.requests != 1 {
		return errnof(syscall.EINVAL, "CLAIM_FILE must be the first request of a connection")
	}
	s, err := c.s.k.Session(hex.EncodeToString(req.Token))
	if err != nil {
		return err
	}
	f, err := s.ClaimFile(c.dev, req.Inode, c.owner, c)
	if err != nil {
		return err
	}
	old := c.f
	c.f = f
	f.attachIO(c, c.clientIno)
	old.Close()

	k := c.s.k
	k.mu.Lock()
	st := s.fileState(f)
	k.mu.Unlock()
	c.frozen = true // until the session resumes the task
	if st.Io != nil && len(st.Io.Request) > 0 {
		c.replay = st.Io.Request
	}
	if st.Io != nil && len(st.Io.UnreadReply) > 0 {
		// The reply the task had not read yet goes right behind the
		// claim's reply, which the plugin reads in the task.
		io := st.Io
		c.afterReply = func() {
			fd, db := -1, (*DmaBuf)(nil)
			if io.UnreadReplyDmabufInode != 0 {
				var err error
				if fd, db, err = s.ClaimDmaBuf(io.UnreadReplyDmabufInode, c); err != nil {
					return
				}
			}
			c.send(io.UnreadReply, fd, db)
		}
	}
	return nil
}

// socketpair implements socketMaker: a new dma-buf's file is made in the
// network namespace of the client exporting or claiming it.
func (c *conn) socketpair() ([2]int, error) {
	fds, err := [2]int{-1, -1}, error(nil)
	if cerr := c.rc.Control(func(fd uintptr) { fds, err = c.s.diag.socketpairLike(int(fd)) }); cerr != nil {
		return fds, cerr
	}
	return fds, err
}
