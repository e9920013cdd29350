package uapi

import (
	"fmt"
	"io"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Out-of-line payloads. A control-socket message whose payload does not
// fit in a packet (a restore session of 100,000 BOs, the checkpoint of a
// drm file with as many handles) travels in a sealed memfd instead, the
// way an ioctl passes a pointer to an array its caller sized (KFD's CRIU
// ioctls pass their BO and private-data arrays so). The packet's op then
// carries OpOutOfLine, its inline payload is empty and the memfd is the
// first descriptor it carries (the op's own descriptors follow). Only the
// privileged control socket accepts such packets; a render node answers
// them ENOTTY.
const (
	// OpOutOfLine is the flag bit of an op whose payload is out of line.
	OpOutOfLine Op = 0x8000
	// MaxOutOfLine bounds an out-of-line payload: at roughly 50 bytes per
	// BO record it holds the metadata of some 20 million BOs, more than
	// the 4 KiB minimum BO size lets devices of 64 GiB hold.
	MaxOutOfLine = 1 << 30
)

// maxInline is the largest payload sent inline.
const maxInline = MaxMessage - HeaderSize

// MarshalOutOfLine builds a packet like Marshal, but puts a payload that
// does not fit inline into a sealed memfd: then fd is that memfd, which
// the caller sends first among the packet's descriptors and closes after
// sending; otherwise fd is -1.
func MarshalOutOfLine(h Header, msg proto.Message) (pkt []byte, fd int, err error) {
	return marshalOutOfLineAppend(nil, h, msg)
}

// marshalOutOfLineAppend is MarshalOutOfLine building an inline packet at
// the end of dst, reusing its memory.
func marshalOutOfLineAppend(dst []byte, h Header, msg proto.Message) (pkt []byte, fd int, err error) {
	size := 0
	if msg != nil {
		size = proto.Size(msg)
	}
	if size <= maxInline {
		pkt, err = marshalAppend(dst, h, msg)
		return pkt, -1, err
	}
	if size > MaxOutOfLine {
		return nil, -1, fmt.Errorf("%v: payload of %d bytes exceeds the out-of-line limit of %d: %w", h.Op, size, MaxOutOfLine, syscall.EMSGSIZE)
	}
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, -1, fmt.Errorf("encode %v: %w", h.Op, err)
	}
	if fd, err = payloadMemfd(payload); err != nil {
		return nil, -1, fmt.Errorf("%v: out-of-line payload: %w", h.Op, err)
	}
	h.Op |= OpOutOfLine
	if pkt, err = marshalAppend(dst, h, nil); err != nil {
		unix.Close(fd)
		return nil, -1, err
	}
	return pkt, fd, nil
}

func payloadMemfd(payload []byte) (int, error) {
	fd, err := unix.MemfdCreate("kernelsim-payload", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd: %w", err)
	}
	for off := 0; off < len(payload); {
		n, err := unix.Pwrite(fd, payload[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("write memfd: %w", err)
		}
		off += n
	}
	// Sealed, the receiver reads exactly what was sent.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("seal memfd: %w", err)
	}
	return fd, nil
}

// InlinePayload resolves the payload of a received packet whose header is
// h and whose inline payload is inline. For an out-of-line packet it reads
// and closes the memfd (the first of fds), clears OpOutOfLine in h.Op and
// returns the remaining descriptors. On error every descriptor is closed.
func InlinePayload(h *Header, inline []byte, fds []int) ([]byte, []int, error) {
	if h.Op&OpOutOfLine == 0 {
		return inline, fds, nil
	}
	h.Op &^= OpOutOfLine
	if len(inline) != 0 || len(fds) == 0 {
		CloseFDs(fds)
		return nil, nil, fmt.Errorf("%v: out-of-line packet with %d inline bytes and %d descriptors: %w", h.Op, len(inline), len(fds), syscall.EPROTO)
	}
	payload, err := readPayload(fds[0])
	unix.Close(fds[0])
	if err != nil {
		CloseFDs(fds[1:])
		return nil, nil, fmt.Errorf("%v: out-of-line payload: %w", h.Op, err)
	}
	return payload, fds[1:], nil
}

// readPayload reads a whole memfd. It refuses anything but a regular file
// within MaxOutOfLine: a FIFO or socket could block the reader forever.
func readPayload(fd int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("descriptor is not a memfd (mode %#o): %w", st.Mode, syscall.EINVAL)
	}
	if st.Size > MaxOutOfLine {
		return nil, fmt.Errorf("%d bytes exceed the out-of-line limit of %d: %w", st.Size, MaxOutOfLine, syscall.EMSGSIZE)
	}
	buf := make([]byte, st.Size)
	for off := 0; off < len(buf); {
		n, err := unix.Pread(fd, buf[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("read: %d of %d bytes: %w", off, len(buf), io.ErrUnexpectedEOF)
		}
		off += n
	}
	return buf, nil
}
