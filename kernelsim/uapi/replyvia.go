package uapi

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// CallReplyVia sends req on socket fd together with a new socket for the
// reply, and reads the reply there. It is for sockets several processes
// share (a dma-buf's), where a reply sent back on fd could be read by any
// of them. It returns the file descriptors the reply carried.
func CallReplyVia(fd int, op Op, req, reply proto.Message) ([]int, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%v: reply socket: %w", op, err)
	}
	defer unix.Close(pair[0])
	pkt, err := Marshal(Header{Op: op, Seq: 1}, req)
	if err != nil {
		unix.Close(pair[1])
		return nil, err
	}
	err = Send(fd, pkt, pair[1])
	unix.Close(pair[1]) // the kernel holds it now, or nobody
	if err != nil {
		return nil, fmt.Errorf("%v: send: %w", op, err)
	}
	buf := make([]byte, MaxMessage)
	n, fds, err := Recv(pair[0], buf, 0)
	if err != nil {
		return nil, fmt.Errorf("%v: receive: %w", op, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%v: no reply (the request was not understood): %w", op, syscall.EPROTO)
	}
	h, err := ParseHeader(buf[:n])
	if err != nil {
		CloseFDs(fds)
		return nil, fmt.Errorf("%v: reply: %w", op, err)
	}
	if h.Status < 0 {
		CloseFDs(fds)
		return nil, errorReply(op, h, buf[HeaderSize:n])
	}
	if reply != nil {
		if err := proto.Unmarshal(buf[HeaderSize:n], reply); err != nil {
			CloseFDs(fds)
			return nil, fmt.Errorf("%v: decode reply: %w", op, err)
		}
	}
	return fds, nil
}
