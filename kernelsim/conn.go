package kernelsim

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/uapi"
)

// conn serves one render-node connection: a drm file's own socket, or a
// reply channel attached to it (see AttachRequest).
//
// Requests on a connection run concurrently, as ioctls on one fd do on
// Linux. One goroutine at a time reads the socket (the reader) and runs
// each request it reads itself, so a connection used by one thread at a
// time costs what a synchronous server would. A request that must wait
// (a submit to a paused context, a fence or syncobj wait) hands the
// reader's role to a new goroutine before it waits, and ends its own
// goroutine once answered: a connection holds a goroutine for its reader
// and one per waiting request, never a thread (every socket waits in the
// netpoller). Replies go out on the connection a request came on, in the
// order they are ready; they are matched to requests by sequence number.
//
// A checkpoint freezes a connection at request boundaries (Freeze): no
// request starts or goes on, every request is either finished (its reply
// sent or queued) or waiting before it took any effect, and no reply goes
// out. That is what lets it capture the traffic in flight exactly:
// requests waiting or not started (replayed after restore), and replies
// the client has not read (re-sent after restore), whichever threads and
// processes they belong to.
type conn struct {
	s         *Server
	sock      *os.File // the accepted socket, non-blocking
	fd        int      // sock's descriptor, open until release
	rc        syscall.RawConn
	diag      *diagSock // sock_diag of the client's network namespace
	dev       *Device
	owner     Cred
	clientIno uint64

	mu       sync.Mutex
	cond     *sync.Cond // frozen, active, outq and dead changes
	f        *File
	channel  bool // attached to f as a reply channel (else f's own socket)
	frozen   bool // requests neither start nor go on
	holding  bool // replies are not sent (a checkpoint froze the connection)
	capture  *captured
	dead     bool
	requests uint64     // received so far
	active   int        // requests running outside replayable waits
	waiting  []*request // in replayable waits, in arrival order
	held     []*request // received and not started, in arrival order
	refs     int        // goroutines serving: the reader, waiting requests, the sender
	outq     []outReply
	sending  bool
	sent     []outReply // sent and perhaps not read: a suffix of these is unread
	sentLen  int        // bytes of sent
	unpruned int        // replies sent since sent was last pruned

	// Used by the reader alone.
	rx      received
	tryRead func(fd uintptr) bool
	replied bool // (c.mu) the reader ran a request to its end and has not read since
}

// request is one request received on a connection. It is the context its
// ioctl runs under: it carries the request as the ioctl's Blocker.
type request struct {
	c        *conn
	n        uint64 // arrival number
	pkt      []byte
	fds      []int
	reader   bool               // run by the connection's reader
	detached bool               // the reader's role passed on while it waited
	charged  bool               // a wait charged to the connection's user
	cancel   context.CancelFunc // ends its wait, while it waits
	after    func()             // runs once its reply is sent (claims)
}

// outReply is a reply waiting to be sent, or sent and perhaps unread.
type outReply struct {
	pkt    []byte
	fd     int    // a descriptor it carries (owned, closed once sent), or -1
	dmabuf uint64 // inode of the dma-buf that fd is, 0 if none
	memfd  bool   // fd is a file of a BO's memory (GEM_MMAP): never re-sent
}

// captured is the traffic a checkpoint froze on a connection.
type captured struct {
	requests []*request // waiting or not started, in arrival order
	outq     []outReply // ready and not sent
	sent     []outReply // sent: a suffix of these the client has not read
}

// How many replies are sent between two prunes of conn.sent.
const pruneEvery = 64

// newConn serves the accepted non-blocking socket fd, which it owns from
// then on, as a new drm file of d.
func newConn(s *Server, fd int, d *Device, owner Cred, clientIno uint64, diag *diagSock) (*conn, error) {
	sock := os.NewFile(uintptr(fd), "render-node")
	rc, err := sock.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("render-node socket: %w", err)
	}
	c := &conn{s: s, sock: sock, fd: fd, rc: rc, diag: diag, dev: d, owner: owner, clientIno: clientIno}
	c.cond = sync.NewCond(&c.mu)
	c.tryRead = c.read
	c.f = d.Open(owner)
	s.k.mu.Lock()
	c.f.attachIO(c, clientIno, false)
	s.k.mu.Unlock()
	return c, nil
}

// start runs the connection's reader; the server's done is called once
// nothing serves the connection any more.
func (c *conn) start() {
	c.refs = 1
	go c.serve()
}

// exit ends a goroutine serving the connection; the last one out of a
// dead connection releases it. Called with c.mu held; unlocks it.
func (c *conn) exit() {
	c.refs--
	last := c.refs == 0 && c.dead
	c.mu.Unlock()
	if last {
		c.release()
	}
}

// release frees what the connection holds once nobody serves it. The
// file's own socket takes the file with it (and its channels: their
// clients see the connection reset, as the file is gone); a channel just
// leaves its file.
func (c *conn) release() {
	k := c.s.k
	k.mu.Lock()
	f := c.f
	f.detachIO(c)
	var others []IO
	if !c.channel {
		for _, e := range f.ios {
			others = append(others, e.io)
		}
	}
	k.mu.Unlock()
	for _, o := range others {
		o.Kill()
	}
	if !c.channel {
		f.Close()
	}
	c.mu.Lock()
	for _, r := range c.outq {
		closeFD(r.fd)
	}
	c.outq = nil
	for _, r := range c.held {
		uapi.CloseFDs(r.fds)
	}
	c.held = nil
	c.mu.Unlock()
	c.sock.Close()
	c.s.diag.release(c.diag)
	c.s.k.acct.unchargeConn(c.owner.UID)
	c.s.connDone(c)
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// bufs holds request buffers: a connection needs one only while it reads.
var bufs = sync.Pool{New: func() any { b := make([]byte, uapi.MaxMessage); return &b }}

// serve is the reader: it reads requests and runs them, until the
// connection dies or a request it runs waits (a new reader then goes on).
func (c *conn) serve() {
	var spare *request // the last request run here to its end
	for {
		r := c.next(spare)
		if r == nil {
			return // c.next exited
		}
		c.handle(r)
		c.mu.Lock()
		c.done()
		if r.detached {
			c.exit()
			return
		}
		c.replied = true
		c.mu.Unlock()
		spare = r // nothing refers to it any more
	}
}

// yieldToClient gives the CPU up once. The reader calls it when, right
// after a reply, it finds no next request: the reply woke the client,
// usually on this CPU (a unix socket's wake-up is a synchronous one: the
// waker is expected to sleep), and the reader, still running, would park
// in the netpoller (two epoll_pwait, and a recvmsg when it wakes) while
// the client waits for the CPU. A blocking reader, as the bare
// ping-pong's, would sleep at once instead. Yielding lets the client run
// and send its next request, which the reader then reads without
// parking. Only that idle moment yields: a reader that finds requests
// queued, as under load, never does. A raw syscall, so as not to wake the
// runtime's monitor (see pruneSentLocked).
func yieldToClient() {
	syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
}

// done accounts for a request that ran to its end. Called with c.mu held.
func (c *conn) done() {
	c.active--
	if c.active == 0 {
		c.cond.Broadcast()
	}
}

// next returns the next request to run, counted active; or it exits the
// goroutine (see exit) and returns nil once the connection is dead. A
// request read from the socket reuses spare's memory.
func (c *conn) next(spare *request) *request {
	c.mu.Lock()
	for {
		// A client that does not read its replies stops being read: what
		// the kernel holds for it stays bounded.
		for !c.dead && (c.frozen || len(c.outq) > 0) {
			c.cond.Wait()
		}
		if c.dead {
			c.exit()
			return nil
		}
		if len(c.held) > 0 {
			r := c.held[0]
			c.held = c.held[1:]
			r.reader = true
			c.active++
			c.mu.Unlock()
			return r
		}
		c.mu.Unlock()
		if err := c.rc.Read(c.tryRead); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// wakeReaderLocked: look at the state again.
				c.sock.SetReadDeadline(time.Time{})
				c.mu.Lock()
				continue
			}
			c.mu.Lock()
			c.hangupLocked() // the socket was closed
			continue
		}
		// c.mu is held.
		if !c.rx.ok {
			continue // the connection's state changed
		}
		rx := c.rx
		c.rx = received{}
		switch {
		case rx.err == nil:
			c.requests++
			r := spare
			if r == nil {
				r = &request{}
			}
			*r = request{c: c, n: c.requests, pkt: append(r.pkt[:0], rx.req...), fds: rx.fds, reader: true}
			bufs.Put(rx.buf)
			c.active++
			c.mu.Unlock()
			return r
		default:
			bufs.Put(rx.buf)
			if bad := asError(rx.err); bad != nil {
				c.mu.Unlock()
				c.replyError(nil, bad)
				c.mu.Lock()
			} else {
				c.hangupLocked() // the client hung up
			}
		}
	}
}

// received is a request read from the socket, or what went wrong.
type received struct {
	ok  bool
	req []byte
	fds []int
	err error
	buf *[]byte // the pooled buffer req is in
}

// readerHeldLocked says the reader must not read the socket now (the
// connection is frozen or dead, requests it holds come first, or replies
// wait to be sent), but look at the state again. Called with c.mu held.
func (c *conn) readerHeldLocked() bool {
	return c.frozen || c.dead || len(c.held) > 0 || len(c.outq) > 0
}

// read is next's attempt at reading a request, which it leaves in c.rx
// with c.mu held; with c.mu held and c.rx empty, it gives up waiting
// because the connection's state changed.
func (c *conn) read(fd uintptr) bool {
	c.mu.Lock()
	if c.readerHeldLocked() {
		return true
	}
	buf := bufs.Get().(*[]byte)
	n, fds, err := recvRequest(int(fd), *buf)
	if err == unix.EAGAIN && c.replied {
		c.replied = false
		c.mu.Unlock()
		yieldToClient()
		c.mu.Lock()
		if c.readerHeldLocked() {
			bufs.Put(buf)
			return true
		}
		n, fds, err = recvRequest(int(fd), *buf)
	}
	c.replied = false
	if err == unix.EAGAIN {
		bufs.Put(buf)
		c.mu.Unlock()
		return false
	}
	c.rx = received{ok: true, fds: fds, err: err, buf: buf}
	if err == nil {
		c.rx.req = (*buf)[:n] // next copies it and puts buf back
	}
	return true
}

// wakeReaderLocked makes a reader parked in the netpoller look at the
// connection's state again, once requests wait in c.held that it has not
// seen. Without it nothing would wake it: Freeze reads the requests
// queued in the socket itself (drainLocked), and when it does so before
// the netpoller has collected the socket's readiness, epoll drops that
// edge (it polls the socket again before reporting it), so the reader
// sleeps on with a request held, which its client waits for forever. A
// read deadline in the past is how Go interrupts a read; the reader
// clears it before it looks at the state. Called with c.mu held.
func (c *conn) wakeReaderLocked() {
	if len(c.held) > 0 && !c.frozen && !c.dead {
		c.sock.SetReadDeadline(time.Unix(1, 0))
	}
}

// hangupLocked marks the connection dead: the client hung up or the
// connection was killed. Waiting requests are cancelled, as a fatal signal
// interrupts an ioctl on Linux, so that the file is released at once.
// Called with c.mu held.
func (c *conn) hangupLocked() {
	if c.dead {
		return
	}
	c.dead = true
	for _, r := range c.waiting {
		if r.cancel != nil {
			r.cancel()
		}
	}
	c.cond.Broadcast()
}

// recvRequest reads one request packet. A packet the kernel must answer
// with an error (too large, too many descriptors, empty) gives an *Error;
// the end of the connection gives io.EOF.
func recvRequest(fd int, buf []byte) (int, []int, error) {
	n, fds, err := uapi.RecvNonblock(fd, buf, 0)
	switch {
	case err == nil && n > 0:
		return n, fds, nil
	case err == unix.EAGAIN: // the reader's idle path: no errors.Is
		return 0, nil, err
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

// handle runs one request and sends its reply.
func (c *conn) handle(r *request) {
	req, fds := r.pkt, r.fds
	r.fds = nil
	h, err := uapi.ParseHeader(req)
	if err != nil {
		uapi.CloseFDs(fds)
		c.replyError(nil, errnof(syscall.EPROTO, "bad request: %v", err))
		return
	}
	reply, replyFD, db, err := c.dispatch(r, h, req[uapi.HeaderSize:], fds)
	after := r.after
	if err != nil {
		closeFD(replyFD)
		c.replyError(&h, err)
		return
	}
	pkt, err := uapi.Marshal(uapi.Header{Op: h.Op, Seq: h.Seq}, reply)
	if err != nil {
		closeFD(replyFD)
		c.replyError(&h, errnof(syscall.EOVERFLOW, "%v", err))
		return
	}
	var ino uint64
	if db != nil {
		ino = db.ino
	}
	c.reply(outReply{pkt: pkt, fd: replyFD, dmabuf: ino, memfd: h.Op == uapi.OpGemMmap && replyFD >= 0})
	if after != nil {
		after()
	}
}

// reply sends r, or queues it behind the replies not sent yet: while the
// client's socket is full, or a checkpoint holds the connection. It takes
// r.fd over.
func (c *conn) reply(r outReply) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		closeFD(r.fd)
		return
	}
	if len(c.outq) == 0 && !c.holding {
		switch err := c.sendLocked(&r); err {
		case nil:
			return
		case unix.EAGAIN:
		default:
			closeFD(r.fd)
			return // the client is gone; the reader notices
		}
	}
	c.outq = append(c.outq, r)
	c.startSenderLocked()
}

// sendLocked tries to send r without waiting; a reply sent is remembered
// until it is known to be read (see pruneSentLocked). Called with c.mu
// held.
func (c *conn) sendLocked(r *outReply) error {
	var err error
	if r.fd >= 0 {
		err = uapi.SendNonblock(c.fd, r.pkt, r.fd)
	} else {
		err = uapi.SendNonblock(c.fd, r.pkt)
	}
	if err != nil {
		return err
	}
	closeFD(r.fd)
	r.fd = -1
	c.sent = append(c.sent, *r)
	c.sentLen += len(r.pkt)
	if c.unpruned++; c.unpruned >= pruneEvery || c.sentLen > 1<<20 {
		c.pruneSentLocked()
	}
	return nil
}

// pruneSentLocked forgets the sent replies the client has certainly read.
// SIOCOUTQ of the kernel's end is what the client has not read yet: the
// true sizes of those packets, each larger than its bytes, so the
// shortest suffix of sent holding that many bytes holds every unread
// reply. Called with c.mu held.
func (c *conn) pruneSentLocked() {
	c.unpruned = 0
	// A raw syscall, as sendmsg's (see uapi.SendNonblock): it cannot block.
	var outq int32
	if _, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, uintptr(c.fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&outq))); e != 0 {
		return
	}
	keep, n := len(c.sent), 0
	for keep > 0 && n < int(outq) {
		keep--
		n += len(c.sent[keep].pkt)
	}
	if keep == 0 {
		return
	}
	clear(c.sent[:keep])
	c.sent = append(c.sent[:0], c.sent[keep:]...)
	c.sentLen = n
}

// startSenderLocked starts the goroutine that sends queued replies, once
// the client's socket has room. Called with c.mu held.
func (c *conn) startSenderLocked() {
	if c.sending || c.holding || c.dead || len(c.outq) == 0 {
		return
	}
	c.sending = true
	c.refs++
	go c.sender()
}

func (c *conn) sender() {
	err := c.rc.Write(func(uintptr) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for !c.dead && !c.holding && len(c.outq) > 0 {
			r := &c.outq[0]
			switch err := c.sendLocked(r); err {
			case nil:
			case unix.EAGAIN:
				return false // wait for room
			default:
				closeFD(r.fd)
				c.hangupLocked()
				return true
			}
			c.outq[0] = outReply{}
			c.outq = c.outq[1:]
		}
		c.cond.Broadcast() // the reader waits for the queue to empty
		return true
	})
	c.mu.Lock()
	if err != nil {
		c.hangupLocked()
	}
	c.sending = false
	c.startSenderLocked() // a checkpoint let go meanwhile
	c.exit()
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
	c.reply(outReply{pkt: pkt, fd: -1})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Context of the ioctl: a request is its own context, carrying itself as
// the Blocker, so that running a request allocates no context.

func (r *request) Deadline() (time.Time, bool) { return time.Time{}, false }
func (r *request) Done() <-chan struct{}       { return nil }
func (r *request) Err() error                  { return nil }
func (r *request) Value(key any) any {
	if key == (blockerKey{}) {
		return r
	}
	return nil
}

// Release implements Blocker: the request waits without holding the
// connection, and the reader's role goes to a new goroutine so that the
// connection's other requests go on. A request that waits is charged to
// the connection's user (Limits.Waits).
func (r *request) Release(cancel context.CancelFunc) error {
	c := r.c
	if err := c.s.k.acct.chargeWait(c.owner); err != nil {
		return err
	}
	c.mu.Lock()
	c.f.waiting.Add(1)
	r.charged = true
	r.cancel = cancel
	c.active--
	c.waiting = append(c.waiting, r)
	if c.dead {
		cancel()
	}
	if r.reader {
		r.reader, r.detached = false, true
		c.refs++
		go c.serve()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

// Reacquire implements Blocker: after its wait the request goes on once
// no checkpoint holds the connection.
func (r *request) Reacquire() {
	c := r.c
	c.mu.Lock()
	for c.frozen && !c.dead {
		c.cond.Wait()
	}
	if i := slices.Index(c.waiting, r); i >= 0 {
		c.waiting = slices.Delete(c.waiting, i, i+1)
	}
	c.f.waiting.Add(-1)
	r.cancel = nil
	c.active++
	c.mu.Unlock()
	if r.charged {
		r.charged = false
		c.s.k.acct.unchargeWait(c.owner.UID)
	}
}

// ClientInode implements IO.
func (c *conn) ClientInode() uint64 { return c.clientIno }

// Channel implements IO.
func (c *conn) Channel() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channel
}

// Freeze implements IO: it stops the connection at request boundaries and
// captures the traffic in flight. It waits for the requests that are
// running outside waits to finish or to start waiting, and reads the
// requests queued in the socket.
func (c *conn) Freeze() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.capture != nil {
		return errnof(syscall.EBUSY, "connection already frozen by a checkpoint")
	}
	wasFrozen := c.frozen
	c.frozen, c.holding = true, true
	for c.active > 0 && !c.dead {
		c.cond.Wait()
	}
	undo := func(err error) error {
		c.frozen, c.holding = wasFrozen, false
		c.cond.Broadcast()
		c.wakeReaderLocked()
		c.startSenderLocked()
		return err
	}
	if c.dead {
		return undo(errnof(syscall.ECONNRESET, "pid %d's connection is closed", c.owner.PID))
	}
	if err := c.drainLocked(); err != nil {
		return undo(err)
	}
	cp := &captured{outq: slices.Clone(c.outq), sent: slices.Clone(c.sent)}
	cp.requests = append(slices.Clone(c.waiting), c.held...)
	slices.SortFunc(cp.requests, func(a, b *request) int { return cmp.Compare(a.n, b.n) })
	for _, r := range cp.requests {
		if len(r.fds) > 0 {
			return undo(errnof(syscall.EAGAIN, "pid %d has a request carrying a file descriptor in flight; retry the checkpoint", c.owner.PID))
		}
	}
	c.capture = cp
	return nil
}

// drainLocked reads the requests queued in the socket into c.held, to
// run after the freeze or to replay after restore. Called with c.mu held
// by Freeze, while the reader cannot read.
func (c *conn) drainLocked() error {
	buf := bufs.Get().(*[]byte)
	defer bufs.Put(buf)
	for {
		n, fds, err := recvRequest(c.fd, *buf)
		var bad *Error
		switch {
		case err == unix.EAGAIN:
			return nil
		case err == nil:
		case errors.As(err, &bad):
			// Answered, with its error, once the connection goes on (after
			// restore too): an empty packet as good as any.
			n, fds = 0, nil
		case err == io.EOF:
			return nil // the reader notices
		default:
			return fmt.Errorf("read queued requests: %w", err)
		}
		c.requests++
		c.held = append(c.held, &request{c: c, n: c.requests, pkt: append([]byte(nil), (*buf)[:n]...), fds: fds})
	}
}

// Pending implements IO: the traffic a checkpoint froze on the connection.
// sock is the client's end of the socket (criu's copy of it), whose
// receive queue tells which replies the client has not read: SIOCINQ of a
// SOCK_SEQPACKET socket is the bytes of every packet queued, which is the
// bytes of a suffix of the replies sent.
func (c *conn) Pending(sock int) (*uapi.PendingIO, error) {
	if ino, err := sockIno(sock); err != nil || ino != c.clientIno {
		return nil, errnof(syscall.EINVAL, "the socket passed is not the client's end of the connection (inode %d)", c.clientIno)
	}
	inq, err := unix.IoctlGetInt(sock, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCINQ: %w", err)
	}
	c.mu.Lock()
	cp := c.capture
	c.mu.Unlock()
	if cp == nil {
		return nil, errnof(syscall.EBUSY, "the connection is not frozen by a checkpoint")
	}
	p := &uapi.PendingIO{}
	for _, r := range cp.requests {
		p.Requests = append(p.Requests, &uapi.PendingRequest{Packet: slices.Clone(r.pkt)})
	}
	first, n := len(cp.sent), 0
	for first > 0 && n < inq {
		first--
		n += len(cp.sent[first].pkt)
	}
	if n != inq {
		return nil, errnof(syscall.EPROTO, "pid %d's socket holds %d bytes of replies, which no run of the last replies sent adds up to", c.owner.PID, inq)
	}
	for _, r := range slices.Concat(cp.sent[first:], cp.outq) {
		if r.memfd {
			// The file of the BO's memory it carries could not be sent
			// again as the same memory: the restored BO's memfd is
			// criu's, made after the claims.
			return nil, errnof(syscall.EAGAIN, "pid %d has not read a GEM_MMAP reply, which carries a file; retry the checkpoint", c.owner.PID)
		}
		p.UnreadReplies = append(p.UnreadReplies, &uapi.UnreadReply{Packet: r.pkt, DmabufInode: r.dmabuf})
	}
	return p, nil
}

// Thaw implements IO: the connection goes on (and a claimed connection
// starts running requests).
func (c *conn) Thaw() {
	c.mu.Lock()
	c.frozen, c.holding, c.capture = false, false, nil
	c.cond.Broadcast()
	c.wakeReaderLocked()
	c.startSenderLocked()
	c.mu.Unlock()
}

// Kill implements IO: it disconnects the client.
func (c *conn) Kill() {
	c.mu.Lock()
	c.hangupLocked()
	c.mu.Unlock()
	// Wakes the reader and the sender waiting on the socket.
	c.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// adopt binds the connection, as its first request, to the file find
// returns (called with k.mu held): a file a session restored (claims) or
// an existing one (ATTACH). The file the connection was opened with goes.
// frozen keeps the connection from running requests until thawed.
func (c *conn) adopt(find func() (*File, error), channel, frozen bool) (*File, error) {
	k := c.s.k
	c.mu.Lock()
	k.mu.Lock()
	f, err := find()
	if err != nil {
		k.mu.Unlock()
		c.mu.Unlock()
		return nil, err
	}
	old := c.f
	c.f, c.channel = f, channel
	if frozen {
		c.frozen = true
	}
	old.detachIO(c)
	f.attachIO(c, c.clientIno, channel)
	k.mu.Unlock()
	c.mu.Unlock()
	old.Close()
	return f, nil
}

// claim binds the connection to the drm file (or, channel, to the reply
// channel of a drm file) that a restore session recreates for dump-time
// inode ino. The connection stays frozen until the session resumes the
// task; then the requests the checkpoint caught in flight on it run. The
// replies the task had not read go right behind the claim's own reply,
// which the plugin reads in the task.
func (c *conn) claim(r *request, token []byte, ino uint64, channel bool) error {
	s, err := c.s.k.Session(hex.EncodeToString(token))
	if err != nil {
		return err
	}
	var (
		f  *File
		io *uapi.PendingIO
	)
	if channel {
		f, io, err = s.ClaimChannel(c.dev, ino, c.owner, c)
	} else {
		f, io, err = s.ClaimFile(c.dev, ino, c.owner, c)
	}
	if err != nil {
		return err
	}
	if _, err := c.adopt(func() (*File, error) { return f, nil }, channel, true); err != nil {
		return err
	}
	r.after = c.restoreTraffic(s, io)
	return nil
}

// attach makes the connection a reply channel of the drm file whose
// client socket fd is (ATTACH); it closes fd.
func (c *conn) attach(fd int) (uint64, error) {
	ino, err := sockIno(fd)
	unix.Close(fd)
	if err != nil {
		return 0, errnof(syscall.EINVAL, "ATTACH: %v", err)
	}
	f, err := c.adopt(func() (*File, error) {
		for _, f := range c.s.k.files {
			if f.closed || f.clientIno != ino {
				continue
			}
			switch {
			case f.dev != c.dev:
				return nil, errnof(syscall.EXDEV, "ATTACH: drm file %d is on renderD%d, the channel on renderD%d", f.id, f.dev.cfg.Minor, c.dev.cfg.Minor)
			case f.frozen:
				return nil, errnof(syscall.EAGAIN, "ATTACH: drm file %d is being checkpointed; attach once that is done", f.id)
			}
			return f, nil
		}
		return nil, errnof(syscall.EINVAL, "ATTACH: socket inode %d is not a drm file of this kernel", ino)
	}, true, false)
	if err != nil {
		return 0, err
	}
	return f.id, nil
}

// restoreTraffic queues the requests of a restored connection's traffic
// to run once it thaws, and returns what sends its unread replies (after
// the claim's own reply). Called by the reader, running the claim.
func (c *conn) restoreTraffic(s *Session, io *uapi.PendingIO) func() {
	reqs, replies := pendingLists(io)
	c.mu.Lock()
	for _, pkt := range reqs {
		c.requests++
		c.held = append(c.held, &request{c: c, n: c.requests, pkt: pkt})
	}
	c.mu.Unlock()
	if len(replies) == 0 {
		return nil
	}
	return func() {
		for _, r := range replies {
			fd, db := -1, (*DmaBuf)(nil)
			if r.DmabufInode != 0 {
				var err error
				if fd, db, err = s.ClaimDmaBuf(r.DmabufInode, c); err != nil {
					c.s.k.log.Printf("restored reply of pid %d: %v", c.owner.PID, err)
					continue
				}
			}
			var ino uint64
			if db != nil {
				ino = db.ino
			}
			c.reply(outReply{pkt: r.Packet, fd: fd, dmabuf: ino})
		}
	}
}

// pendingLists returns the requests and unread replies of io, reading the
// single request and reply of format 2 images too.
func pendingLists(io *uapi.PendingIO) ([][]byte, []*uapi.UnreadReply) {
	var reqs [][]byte
	if len(io.GetRequest()) > 0 {
		reqs = append(reqs, io.GetRequest())
	}
	for _, r := range io.GetRequests() {
		reqs = append(reqs, r.GetPacket())
	}
	var replies []*uapi.UnreadReply
	if len(io.GetUnreadReply()) > 0 {
		replies = append(replies, &uapi.UnreadReply{Packet: io.UnreadReply, DmabufInode: io.UnreadReplyDmabufInode, Bo: io.UnreadReplyBo})
	}
	replies = append(replies, io.GetUnreadReplies()...)
	return reqs, replies
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

// asError is the *Error in err's chain, or nil. (A helper so that the
// target errors.As fills lives on the heap only when called: declared in
// the reader's loop, it cost an allocation per request.)
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
