package uapi

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

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

// Conn is the client side of a kernelsim socket. Requests are synchronous:
// Call holds the connection from sending a request until its reply is read,
// which is the discipline the kernel's checkpoint code relies on.
type Conn struct {
	fd  int
	mu  sync.Mutex
	seq uint32
	buf []byte
	out []byte // the request being sent, reused
}

// Dial connects to a kernelsim socket.
func Dial(path string) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", path, err)
	}
	return NewConn(fd), nil
}

// NewConn wraps a connected socket.
func NewConn(fd int) *Conn { return &Conn{fd: fd, buf: make([]byte, MaxMessage)} }

// FD returns the socket.
func (c *Conn) FD() int { return c.fd }

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Call sends req (with sendFDs) and decodes the reply into reply (which may
// be nil). It returns the file descriptors the reply carried.
//
// A kernel that refuses the connection answers with an error reply of
// sequence number 0 (or of the first request's) and hangs up: Call
// returns that error, with the kernel's reason, whether the refusal
// arrived before or after the request was sent.
//
// A request or reply too large for a packet travels out of line (see
// OpOutOfLine); only the control socket accepts such requests.
func (c *Conn) Call(op Op, req, reply proto.Message, sendFDs ...int) ([]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seq++; c.seq == 0 { // 0 is the kernel's for refusals
		c.seq++
	}
	seq := c.seq
	pkt, oolFD, err := marshalOutOfLineAppend(c.out[:0], Header{Op: op, Seq: seq}, req)
	if err != nil {
		return nil, err
	}
	if oolFD >= 0 {
		sendFDs = append([]int{oolFD}, sendFDs...)
		defer unix.Close(oolFD)
	} else if cap(pkt) <= 4<<10 { // keep small buffers only
		c.out = pkt
	}
	if err := Send(c.fd, pkt, sendFDs...); err != nil {
		if refusal := c.refusal(op); refusal != nil {
			return nil, refusal
		}
		return nil, fmt.Errorf("%v: send: %w", op, err)
	}
	for {
		n, fds, err := Recv(c.fd, c.buf, 0)
		if err != nil {
			// A kernel that hangs up with our request unread resets the
			// connection; its refusal may still be queued behind that.
			if err == unix.ECONNRESET {
				if refusal := c.refusal(op); refusal != nil {
					return nil, refusal
				}
			}
			return nil, fmt.Errorf("%v: receive: %w", op, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%v: connection closed by kernelsim: %w", op, syscall.ECONNRESET)
		}
		h, err := ParseHeader(c.buf[:n])
		if err != nil {
			CloseFDs(fds)
			return nil, fmt.Errorf("%v: reply: %w", op, err)
		}
		if h.Seq == 0 && h.Status < 0 {
			CloseFDs(fds)
			return nil, errorReply(op, h, c.buf[HeaderSize:n])
		}
		if h.Seq != seq {
			// Not ours (a stale reply): it cannot be for anyone else.
			CloseFDs(fds)
			continue
		}
		payload, fds, err := InlinePayload(&h, c.buf[HeaderSize:n], fds)
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
}

// refusal returns the error reply a kernel that hung up left queued.
func (c *Conn) refusal(op Op) error {
	n, fds, err := Recv(c.fd, c.buf, unix.MSG_DONTWAIT)
	CloseFDs(fds)
	if err != nil || n == 0 {
		return nil
	}
	h, err := ParseHeader(c.buf[:n])
	if err != nil || h.Status >= 0 {
		return nil
	}
	return errorReply(op, h, c.buf[HeaderSize:n])
}

func errorReply(op Op, h Header, payload []byte) error {
	var e ErrorReply
	_ = proto.Unmarshal(payload, &e)
	return &Error{Op: op, Errno: syscall.Errno(-h.Status), Msg: e.Message}
}

// IsErrno reports whether err is a kernelsim error with that errno.
func IsErrno(err error, errno syscall.Errno) bool { return errors.Is(err, errno) }
