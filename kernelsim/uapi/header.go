// Package uapi is kernelsim's user-space ABI: the wire format of the
// requests ("ioctls") a client sends on a render-node or control socket and
// of the replies it gets back.
//
// Every message on a SOCK_SEQPACKET socket is one packet: a fixed 16-byte
// little-endian header followed by a protobuf payload (see uapi.proto).
//
//	offset 0  u32 magic   "KSIM" (0x4d49534b)
//	offset 4  u16 version Version
//	offset 6  u16 op      the request (Op*)
//	offset 8  u32 seq     chosen by the client, echoed in the reply
//	offset 12 i32 status  0 in requests; 0 or a negative errno in replies
//
// File descriptors (dma-bufs) travel as SCM_RIGHTS on the same packet.
//
// Any number of requests may be in flight on one connection; the kernel
// answers each on the connection it came on, in the order the replies are
// ready, and the client matches them by seq. Only one process may read a
// connection: a process sharing a drm file with others attaches a
// connection of its own to it (OpAttach, a reply channel).
package uapi

import (
	"encoding/binary"
	"fmt"
)

const (
	Magic      uint32 = 0x4d49534b
	Version    uint16 = 1
	HeaderSize        = 16
	// MaxMessage bounds a packet (header + payload). Larger requests are
	// refused; bulk data travels in chunks of at most MaxData bytes.
	MaxMessage = 192 << 10
	MaxData    = 128 << 10
)

// Header is the fixed part of every message.
type Header struct {
	Magic   uint32
	Version uint16
	Op      Op
	Seq     uint32
	Status  int32
}

// Op identifies a request.
type Op uint16

// Put encodes h into b[:HeaderSize].
func (h Header) Put(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], h.Magic)
	binary.LittleEndian.PutUint16(b[4:], h.Version)
	binary.LittleEndian.PutUint16(b[6:], uint16(h.Op))
	binary.LittleEndian.PutUint32(b[8:], h.Seq)
	binary.LittleEndian.PutUint32(b[12:], uint32(h.Status))
}

// ParseHeader decodes and checks the header of a packet.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("short packet: %d bytes", len(b))
	}
	h := Header{
		Magic:   binary.LittleEndian.Uint32(b[0:]),
		Version: binary.LittleEndian.Uint16(b[4:]),
		Op:      Op(binary.LittleEndian.Uint16(b[6:])),
		Seq:     binary.LittleEndian.Uint32(b[8:]),
		Status:  int32(binary.LittleEndian.Uint32(b[12:])),
	}
	if h.Magic != Magic {
		return h, fmt.Errorf("bad magic %#x", h.Magic)
	}
	if h.Version != Version {
		return h, fmt.Errorf("unsupported protocol version %d (want %d)", h.Version, Version)
	}
	return h, nil
}

// Requests on a render node.
const (
	OpVersion Op = 1 + iota
	OpGemCreate
	OpGemClose
	OpGemInfo
	OpGemPwrite
	OpGemPread
	OpGemWaitIdle
	OpVmMap
	OpVmUnmap
	OpPrimeHandleToFd
	OpPrimeFdToHandle
	OpCtxCreate
	OpCtxDestroy
	OpCtxQuery
	OpSubmit
	OpSyncobjCreate
	OpSyncobjDestroy
	OpSyncobjWait
	OpSyncobjReset
	OpSyncobjSignal
	OpSyncobjQuery
	OpSwSyncCreate
	OpSwSyncFence
	OpSwSyncInc
	// Sent by a restored task as the first request of a new connection.
	OpClaimFile
	OpClaimDmaBuf
	// The first request of a connection that joins an existing drm file
	// as a reply channel (see AttachRequest).
	OpAttach
	// Sent by a restored task to recreate a reply channel.
	OpClaimChannel
	OpGemMmap
)

// Requests of the xe driver (DRM_IOCTL_XE_*), on xe render nodes only
// (xe_drm.proto). Another device answers them ENOTTY, as Linux does for a
// driver ioctl of another driver.
const (
	OpXeVmCreate Op = 0x40 + iota
	OpXeVmDestroy
	OpXeExecQueueCreate
	OpXeExecQueueDestroy
	OpXeVmBind
	OpXeExec
)

// XeVmCreateFlagLRMode is XeVmCreateRequest's flag for a long-running VM
// (DRM_XE_VM_CREATE_FLAG_LR_MODE).
const XeVmCreateFlagLRMode = 1 << 1

// OpDmaBufMmap is the request a dma-buf's own socket takes.
const OpDmaBufMmap Op = 0x80

// Requests on the control socket.
const (
	OpIdentify Op = 0x100 + iota
	OpPause
	OpResume
	OpCheckpointFile
	OpCheckpointDmaBuf
	_ // 0x105: CHECKPOINT_BO (one BO per request), retired
	OpSessionOpen
	_ // 0x107: SESSION_LOAD_BO (one BO per request), retired
	OpSessionResume
	OpSessionClose
	OpDebug
	OpCheckpointBos
	OpSessionLoadPages
	OpDevices
	OpCheckpointIo
	OpIdentifyMemory
	OpSessionAdoptMemory
)
