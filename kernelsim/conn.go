package kernelsim

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

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
type conn struct {
	s         *Server
	fd        int
	wake      int // eventfd that stops a hang-up watcher (see connBlocker)
	dev       *Device
	owner     Cred
	clientIno uint64

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
}

func newConn(s *Server, fd int, d *Device, owner Cred, clientIno uint64) (*conn, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	c := &conn{s: s, fd: fd, wake: wake, dev: d, owner: owner, clientIno: clientIno}
	c.cond = sync.NewCond(&c.mu)
	c.f = d.Open(owner)
	c.f.attachIO(c, clientIno)
	return c, nil
}

func (c *conn) serve() {
	defer func() {
		c.mu.Lock()
		f := c.f
		c.dead = true
		c.mu.Unlock()
		f.Close()
		unix.Close(c.fd)
		unix.Close(c.wake)
	}()
	buf := make([]byte, uapi.MaxMessage)
	pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
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

		// Wait for a request without holding the lock, so a checkpoint
		// finds the request still queued in the socket.
		pfd[0].Revents = 0
		if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
			return
		}
		c.mu.Lock()
		if c.frozen || c.replay != nil || c.dead {
			c.mu.Unlock()
			continue
		}
		n, fds, err := recvRequest(c.fd, buf, unix.MSG_DONTWAIT)
		var bad *Error
		switch {
		case err == unix.EAGAIN:
			c.mu.Unlock()
			continue
		case errors.As(err, &bad):
			c.replyError(nil, bad)
			c.mu.Unlock()
			continue
		case err != nil:
			c.mu.Unlock()
			return
		}
		c.handle(append([]byte(nil), buf[:n]...), fds)
		c.mu.Unlock()
	}
}

// recvRequest reads one request packet. A packet the kernel must answer
// with an error (too large, too many descriptors, empty) gives an *Error;
// the end of the connection gives io.EOF.
func recvRequest(fd int, buf []byte, flags int) (int, []int, error) {
	n, fds, err := uapi.Recv(fd, buf, flags)
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = WithBlocker(ctx, &connBlocker{c: c, hangup: cancel})
	reply, replyFD, db, err := c.dispatch(ctx, h, req[uapi.HeaderSize:], fds)
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
	var err error
	if fd >= 0 {
		err = uapi.Send(c.fd, pkt, fd)
	} else {
		err = uapi.Send(c.fd, pkt)
	}
	if err != nil {
		return // the client is gone; serve() notices
	}
	c.lastReply = pkt
	c.lastDmaBuf = 0
	if db != nil {
		c.lastDmaBuf = db.ino
	}
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
// pinning the file and the goroutine serving it.
type connBlocker struct {
	c       *conn
	hangup  context.CancelFunc
	watched chan struct{} // closed when the watcher is gone
}

func (b *connBlocker) Release() {
	c := b.c
	c.blocked = true
	b.watched = make(chan struct{})
	go func() {
		defer close(b.watched)
		if c.watchHangup() {
			b.hangup()
		}
	}()
	c.mu.Unlock()
}

func (b *connBlocker) Reacquire() {
	c := b.c
	// Stop the watcher; it has returned already if it saw a hang-up.
	unix.Write(c.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-b.watched
	var drain [8]byte
	unix.Read(c.wake, drain[:])
	c.mu.Lock()
	for c.frozen && !c.dead {
		c.cond.Wait()
	}
	c.blocked = false
}

// watchHangup waits until the client hangs up or the connection is shut
// down, which it reports, or until Reacquire wakes it through c.wake.
func (c *conn) watchHangup() bool {
	pfd := []unix.PollFd{
		{Fd: int32(c.fd), Events: unix.POLLRDHUP},
		{Fd: int32(c.wake), Events: unix.POLLIN},
	}
	for {
		pfd[0].Revents, pfd[1].Revents = 0, 0
		_, err := unix.Poll(pfd, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		if pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return true
		}
		if pfd[1].Revents != 0 {
			return false
		}
	}
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
	inq, err := unix.IoctlGetInt(c.fd, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCINQ: %w", err)
	}
	if inq > 0 {
		if pending.Request != nil {
			return nil, errnof(syscall.EPROTO, "pid %d sent a request while another is pending: pipelined requests cannot be checkpointed", c.owner.PID)
		}
		buf := make([]byte, uapi.MaxMessage)
		n, fds, err := uapi.Recv(c.fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		uapi.CloseFDs(fds)
		if err != nil {
			return nil, fmt.Errorf("peek request: %w", err)
		}
		if len(fds) > 0 {
			return nil, errnof(syscall.EAGAIN, "a request carrying a file descriptor is in flight; retry the checkpoint")
		}
		if n < inq {
			return nil, errnof(syscall.EPROTO, "pid %d has pipelined requests: cannot be checkpointed", c.owner.PID)
		}
		pending.Request = append([]byte(nil), buf[:n]...)
	}
	outq, err := unix.IoctlGetInt(c.fd, unix.SIOCOUTQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCOUTQ: %w", err)
	}
	if outq > 0 && c.lastReply != nil {
		pending.UnreadReply = c.lastReply
		pending.UnreadReplyDmabufInode = c.lastDmaBuf
	}
	c.frozen = true
	return pending, nil
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
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
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
	f, err := s.ClaimFile(c.dev, req.Inode, c.owner)
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
				if fd, db, err = s.ClaimDmaBuf(io.UnreadReplyDmabufInode); err != nil {
					return
				}
			}
			c.send(io.UnreadReply, fd, db)
		}
	}
	return nil
}
