package plugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// The channel between drm_plugin.so (in criu) and the helper, as
// plugin/c/channel.h defines it: frames of a u32 type and a u32 payload
// length, little-endian, then the payload; file descriptors ride with
// SCM_RIGHTS on a frame's first bytes.
const (
	channelVersion = 1
	headerSize     = 8
	maxFDs         = 2
	maxPayload     = 16 << 20
)

// Frame types.
const (
	// helper -> criu
	frameHello        = 1 // u32 version, i32 rc, u32 pid
	frameLog          = 2 // u32 level, text
	frameRestoreEntry = 3 // u64 ino, u32 kind, u32 path_len, path, request
	frameResult       = 4 // i32 rc

	// criu -> helper
	frameInit              = 16 // u32 stage, u32 loglevel, "NAME=value\0"...; fd: images dir
	framePauseDevices      = 17 // i32 pid
	frameDumpUnixSk        = 18 // u32 inode; fd: criu's copy of the socket
	frameResumeDevicesLate = 19 // i32 pid
	frameExit              = 20 // u32 stage, i32 ret
)

// Prefixes of criu's environment variables that init forwards.
var envPrefixes = []string{"KERNELSIM_", "DRMCR_"}

type frame struct {
	typ     uint32
	payload []byte
	fds     []int
}

// readFrame reads one frame. The header is read with recvmsg so that the
// descriptors sent with it arrive; the kernel never joins the bytes of two
// sends that carry descriptors into one read, and a frame is read no
// further than its own end.
func readFrame(c *net.UnixConn) (frame, error) {
	var f frame
	hdr := make([]byte, headerSize)
	oob := make([]byte, syscall.CmsgSpace(maxFDs*4))
	for got := 0; got < headerSize; {
		n, oobn, _, _, err := c.ReadMsgUnix(hdr[got:], oob)
		if oobn > 0 {
			fds, perr := parseRights(oob[:oobn])
			f.fds = append(f.fds, fds...)
			if perr != nil {
				closeFDs(f.fds)
				return frame{}, perr
			}
		}
		if n == 0 && err == nil {
			err = io.EOF
		}
		if err != nil {
			closeFDs(f.fds)
			if got > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		got += n
	}
	f.typ = binary.LittleEndian.Uint32(hdr)
	n := binary.LittleEndian.Uint32(hdr[4:])
	if n > maxPayload {
		closeFDs(f.fds)
		return frame{}, fmt.Errorf("frame of type %d: payload of %d bytes exceeds %d", f.typ, n, maxPayload)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(c, f.payload); err != nil {
		closeFDs(f.fds)
		return frame{}, fmt.Errorf("frame of type %d: %w", f.typ, err)
	}
	return f, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// writeFrame writes one frame, descriptors attached to its first bytes.
func writeFrame(c *net.UnixConn, typ uint32, payload []byte, fds ...int) error {
	if len(payload) > maxPayload {
		return fmt.Errorf("frame of type %d: payload of %d bytes exceeds %d", typ, len(payload), maxPayload)
	}
	buf := make([]byte, headerSize+len(payload))
	binary.LittleEndian.PutUint32(buf, typ)
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(payload)))
	copy(buf[headerSize:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		return err
	}
	if n < len(buf) {
		_, err = c.Write(buf[n:])
	}
	return err
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
