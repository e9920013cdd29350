package uapi

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// MaxFDs is the most file descriptors one packet may carry.
const MaxFDs = 4

// Marshal builds a packet: header plus the protobuf payload.
func Marshal(h Header, msg proto.Message) ([]byte, error) {
	return marshalAppend(make([]byte, 0, HeaderSize+64), h, msg)
}

// marshalAppend builds the packet at the end of dst, reusing its memory.
func marshalAppend(dst []byte, h Header, msg proto.Message) ([]byte, error) {
	h.Magic, h.Version = Magic, Version
	start := len(dst)
	pkt := append(dst, make([]byte, HeaderSize)...)
	if msg != nil {
		var err error
		// The payload goes right behind the header.
		if pkt, err = (proto.MarshalOptions{}).MarshalAppend(pkt, msg); err != nil {
			return nil, fmt.Errorf("encode %v: %w", h.Op, err)
		}
	}
	if len(pkt)-start > MaxMessage {
		return nil, fmt.Errorf("%v: message of %d bytes exceeds %d", h.Op, len(pkt)-start, MaxMessage)
	}
	h.Put(pkt[start:])
	return pkt, nil
}

// Send writes one packet, with fds as SCM_RIGHTS. It never raises SIGPIPE.
func Send(fd int, pkt []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err := unix.Sendmsg(fd, pkt, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// SendNonblock is Send for a non-blocking socket (see rawSendmsg).
func SendNonblock(fd int, pkt []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err := rawSendmsg(fd, pkt, oob, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// ErrTruncated is returned for a packet larger than the buffer.
var ErrTruncated = errors.New("packet too large")

// Recv reads one packet into buf and returns it with the file descriptors
// it carried (close-on-exec). n == 0 with a nil error means end of file.
// flags may add MSG_DONTWAIT or MSG_PEEK.
func Recv(fd int, buf []byte, flags int) (n int, fds []int, err error) {
	return recv(fd, buf, flags, false)
}

// RecvNonblock is Recv for a non-blocking socket (see rawSendmsg).
func RecvNonblock(fd int, buf []byte, flags int) (n int, fds []int, err error) {
	return recv(fd, buf, flags|unix.MSG_DONTWAIT, true)
}

func recv(fd int, buf []byte, flags int, raw bool) (n int, fds []int, err error) {
	var oob [64]byte // CmsgSpace(MaxFDs*4) and then some
	for {
		var oobn, rflags int
		n, oobn, rflags, err = recvmsg(fd, buf, oob[:unix.CmsgSpace(MaxFDs*4)], flags|unix.MSG_CMSG_CLOEXEC, raw)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		if oobn > 0 {
			// A copy: parsing keeps references into it, and oob stays
			// on the stack for the packets without descriptors.
			fds = parseRights(append([]byte(nil), oob[:oobn]...))
		}
		if rflags&unix.MSG_CTRUNC != 0 {
			closeAll(fds)
			return 0, nil, fmt.Errorf("more than %d file descriptors: %w", MaxFDs, syscall.EMSGSIZE)
		}
		if rflags&unix.MSG_TRUNC != 0 {
			closeAll(fds)
			return 0, nil, ErrTruncated
		}
		return n, fds, nil
	}
}

// rawSendmsg and rawRecvmsg make the syscalls without telling the Go
// scheduler, as the runtime does for calls that cannot block. They are
// only for non-blocking sockets, which a server waits on through the
// netpoller: there the ordinary entry and exit of a syscall is most of
// the cost of a request, because it wakes the runtime's monitor thread
// whenever the process was idle, which a server answering one request at
// a time always is.
func rawSendmsg(fd int, p, oob []byte, flags int) error {
	var iov unix.Iovec
	var msg unix.Msghdr
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	msg.Iov = &iov
	msg.SetIovlen(1)
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags)); e != 0 {
		return e
	}
	return nil
}

// recvmsg is recvmsg(2) without a source address, which a connected
// socket does not need (unix.Recvmsg allocates one on every call). raw
// makes it a raw syscall (see rawSendmsg).
func recvmsg(fd int, p, oob []byte, flags int, raw bool) (n, oobn, rflags int, err error) {
	var iov unix.Iovec
	var msg unix.Msghdr
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	msg.Iov = &iov
	msg.SetIovlen(1)
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	var r uintptr
	var e syscall.Errno
	if raw {
		r, _, e = syscall.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	} else {
		r, _, e = syscall.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	}
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// CloseFDs closes every descriptor of a received packet.
func CloseFDs(fds []int) { closeAll(fds) }

func (op Op) String() string {
	if s, ok := opNames[op]; ok {
		return s
	}
	if op&OpOutOfLine != 0 {
		return (op &^ OpOutOfLine).String() + "+out-of-line"
	}
	return fmt.Sprintf("op(%d)", uint16(op))
}

var opNames = map[Op]string{
	OpVersion: "VERSION", OpGemCreate: "GEM_CREATE", OpGemClose: "GEM_CLOSE", OpGemInfo: "GEM_INFO",
	OpGemPwrite: "GEM_PWRITE", OpGemPread: "GEM_PREAD", OpGemWaitIdle: "GEM_WAIT_IDLE",
	OpVmMap: "VM_MAP", OpVmUnmap: "VM_UNMAP", OpPrimeHandleToFd: "PRIME_HANDLE_TO_FD",
	OpPrimeFdToHandle: "PRIME_FD_TO_HANDLE", OpCtxCreate: "CTX_CREATE", OpCtxDestroy: "CTX_DESTROY",
	OpCtxQuery: "CTX_QUERY", OpSubmit: "SUBMIT", OpSyncobjCreate: "SYNCOBJ_CREATE",
	OpSyncobjDestroy: "SYNCOBJ_DESTROY", OpSyncobjWait: "SYNCOBJ_WAIT", OpSyncobjReset: "SYNCOBJ_RESET",
	OpSyncobjSignal: "SYNCOBJ_SIGNAL", OpSyncobjQuery: "SYNCOBJ_QUERY", OpSwSyncCreate: "SW_SYNC_CREATE",
	OpSwSyncFence: "SW_SYNC_FENCE", OpSwSyncInc: "SW_SYNC_INC", OpClaimFile: "CLAIM_FILE",
	OpClaimDmaBuf: "CLAIM_DMABUF", OpAttach: "ATTACH", OpClaimChannel: "CLAIM_CHANNEL", OpCheckpointIo: "CHECKPOINT_IO", OpIdentify: "IDENTIFY", OpPause: "PAUSE", OpResume: "RESUME",
	OpCheckpointFile: "CHECKPOINT_FILE", OpCheckpointDmaBuf: "CHECKPOINT_DMABUF",
	OpCheckpointBos: "CHECKPOINT_BOS", OpSessionOpen: "SESSION_OPEN", OpSessionLoadPages: "SESSION_LOAD_PAGES",
	OpSessionResume: "SESSION_RESUME", OpSessionClose: "SESSION_CLOSE", OpDebug: "DEBUG", OpDevices: "DEVICES",
	OpGemMmap: "GEM_MMAP", OpDmaBufMmap: "DMABUF_MMAP", OpIdentifyMemory: "IDENTIFY_MEMORY",
	OpSessionAdoptMemory: "SESSION_ADOPT_MEMORY",
	OpXeVmCreate:         "XE_VM_CREATE", OpXeVmDestroy: "XE_VM_DESTROY", OpXeExecQueueCreate: "XE_EXEC_QUEUE_CREATE",
	OpXeExecQueueDestroy: "XE_EXEC_QUEUE_DESTROY", OpXeVmBind: "XE_VM_BIND", OpXeExec: "XE_EXEC",
}
