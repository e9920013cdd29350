package uapi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/uapi"
)

// Descriptors a fuzzed packet carries (mode&3), as a server receives them.
const (
	withNone = iota
	withSealedMemfd
	withMemfd
	withPipe
)

// FuzzPacket: a packet with any bytes, any out-of-line flag and any
// descriptors, received as the daemon receives requests: the header is
// parsed and the payload resolved (an out-of-line payload read from its
// memfd) or refused with an error; on error every descriptor is closed,
// on success the payload is exactly what was sent and the descriptors are
// the op's own.
func FuzzPacket(f *testing.F) {
	hdr := func(op uapi.Op) []byte {
		pkt, err := uapi.Marshal(uapi.Header{Op: op, Seq: 3}, nil)
		if err != nil {
			f.Fatal(err)
		}
		return pkt
	}
	ident, _ := proto.Marshal(&uapi.IdentifyRequest{Inodes: []uint64{1, 2}})
	f.Add(hdr(uapi.OpIdentify), []byte{}, byte(withNone))
	f.Add(append(hdr(uapi.OpIdentify), ident...), []byte{}, byte(withNone))
	f.Add(hdr(uapi.OpIdentify|uapi.OpOutOfLine), ident, byte(withSealedMemfd))
	f.Add(hdr(uapi.OpSessionLoadPages|uapi.OpOutOfLine), ident, byte(withMemfd|4))
	f.Add(hdr(uapi.OpIdentify|uapi.OpOutOfLine), ident, byte(withPipe))
	f.Add(append(hdr(uapi.OpIdentify|uapi.OpOutOfLine), 1), ident, byte(withSealedMemfd))
	f.Add([]byte("KSIM"), []byte{}, byte(withNone))
	f.Fuzz(func(t *testing.T, pkt, ool []byte, mode byte) {
		sp := socketpair(t)
		var sent []int
		switch mode & 3 {
		case withSealedMemfd, withMemfd:
			sent = append(sent, memfd(t, ool, mode&3 == withSealedMemfd))
		case withPipe:
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			unix.Close(p[1])
			sent = append(sent, p[0])
		}
		if mode&4 != 0 {
			sent = append(sent, memfd(t, nil, true))
		}
		if mode&8 != 0 && len(pkt) >= uapi.HeaderSize {
			pkt = bytes.Clone(pkt)
			binary.LittleEndian.PutUint16(pkt[6:], binary.LittleEndian.Uint16(pkt[6:])^uint16(uapi.OpOutOfLine))
		}
		err := uapi.Send(sp[0], pkt, sent...)
		for _, fd := range sent {
			unix.Close(fd)
		}
		if err != nil {
			return // too large for the socket
		}
		buf := make([]byte, uapi.MaxMessage)
		n, fds, err := uapi.Recv(sp[1], buf, unix.MSG_DONTWAIT)
		if errors.Is(err, uapi.ErrTruncated) {
			if len(pkt) <= uapi.MaxMessage {
				t.Fatalf("a %d-byte packet reported as too large", len(pkt))
			}
			return
		}
		want := len(pkt)
		if want == 0 && len(sent) > 0 {
			want = 1 // unix.Sendmsg sends a byte with descriptors on a stream-like socket
		}
		if err != nil || n != want || len(fds) != len(sent) {
			t.Fatalf("received %d of %d bytes, %d of %d fds: %v", n, len(pkt), len(fds), len(sent), err)
		}
		h, err := uapi.ParseHeader(buf[:n])
		if err != nil {
			uapi.CloseFDs(fds)
			if n >= uapi.HeaderSize && h.Magic == uapi.Magic && h.Version == uapi.Version {
				t.Fatalf("a good header refused: %v", err)
			}
			return
		}
		ool0 := h.Op&uapi.OpOutOfLine != 0
		op := h.Op
		payload, rest, err := uapi.InlinePayload(&h, buf[uapi.HeaderSize:n], fds)
		if err != nil {
			for _, fd := range fds {
				if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); ferr == nil {
					t.Fatalf("descriptor %d left open after %v", fd, err)
				}
			}
			return
		}
		defer uapi.CloseFDs(rest)
		switch {
		case !ool0:
			if !bytes.Equal(payload, buf[uapi.HeaderSize:n]) || len(rest) != len(fds) || h.Op != op {
				t.Fatal("an inline packet's payload or descriptors changed")
			}
		case h.Op != op&^uapi.OpOutOfLine || len(rest) != len(fds)-1:
			t.Fatalf("out of line: op %v, %d of %d descriptors left", h.Op, len(rest), len(fds))
		case mode&3 == withPipe:
			t.Fatal("an out-of-line payload read from a pipe")
		case mode&3 == withNone:
			if len(payload) != 0 { // the extra, empty memfd came first
				t.Fatalf("%d bytes from an empty memfd", len(payload))
			}
		case !bytes.Equal(payload, ool):
			t.Fatal("the out-of-line payload differs from the memfd's contents")
		}
	})
}

// FuzzReply: whatever a kernelsim socket answers (any packet, any
// descriptors, then a hang-up), a client's Call returns a reply or an
// error, never panics or waits forever, and returns descriptors only with
// a reply.
func FuzzReply(f *testing.F) {
	ok, _ := uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 1}, &uapi.VersionReply{Driver: "amdgpu"})
	bad, _ := uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 1, Status: -22}, &uapi.ErrorReply{Message: "no"})
	refused, _ := uapi.Marshal(uapi.Header{Status: -24}, &uapi.ErrorReply{Message: "too many"})
	oolReply, _ := uapi.Marshal(uapi.Header{Op: uapi.OpVersion | uapi.OpOutOfLine, Seq: 1}, nil)
	drv, _ := proto.Marshal(&uapi.VersionReply{Driver: "xe"})
	f.Add(ok, []byte{}, byte(withNone))
	f.Add(ok, []byte{}, byte(withPipe))
	f.Add(bad, []byte{}, byte(withNone|16))
	f.Add(refused, []byte{}, byte(withNone))
	f.Add(oolReply, drv, byte(withSealedMemfd))
	f.Add(oolReply, drv, byte(withPipe|4))
	f.Add([]byte{}, []byte{}, byte(withNone))
	f.Fuzz(func(t *testing.T, reply, ool []byte, mode byte) {
		sp := socketpair(t)
		c := uapi.NewConn(sp[0])
		go func() {
			buf := make([]byte, uapi.MaxMessage)
			n, fds, err := uapi.Recv(sp[1], buf, 0)
			uapi.CloseFDs(fds)
			if err != nil || n < uapi.HeaderSize {
				unix.Shutdown(sp[1], unix.SHUT_RDWR)
				return
			}
			pkt := bytes.Clone(reply)
			if mode&16 != 0 && len(pkt) >= uapi.HeaderSize {
				copy(pkt[8:12], buf[8:12]) // answer the request's sequence number
			}
			var fdsOut []int
			switch mode & 3 {
			case withSealedMemfd, withMemfd:
				fdsOut = append(fdsOut, memfd(t, ool, mode&3 == withSealedMemfd))
			case withPipe:
				var p [2]int
				if unix.Pipe2(p[:], unix.O_CLOEXEC) == nil {
					unix.Close(p[1])
					fdsOut = append(fdsOut, p[0])
				}
			}
			if mode&4 != 0 {
				fdsOut = append(fdsOut, memfd(t, nil, true))
			}
			uapi.Send(sp[1], pkt, fdsOut...)
			for _, fd := range fdsOut {
				unix.Close(fd)
			}
			unix.Shutdown(sp[1], unix.SHUT_RDWR)
		}()
		type result struct {
			fds []int
			err error
		}
		done := make(chan result, 1)
		go func() {
			var v uapi.VersionReply
			fds, err := c.Call(uapi.OpVersion, &uapi.VersionRequest{}, &v)
			done <- result{fds, err}
		}()
		select {
		case r := <-done:
			if r.err != nil && len(r.fds) > 0 {
				t.Fatalf("error %v with %d descriptors", r.err, len(r.fds))
			}
			uapi.CloseFDs(r.fds)
		case <-time.After(10 * time.Second):
			t.Fatal("Call did not return after the socket hung up")
		}
	})
}

func socketpair(t *testing.T) [2]int {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(sp[0])
		unix.Close(sp[1])
	})
	return sp
}

// memfd is a memfd holding b, sealed or not.
func memfd(t *testing.T, b []byte, sealed bool) int {
	flags := unix.MFD_CLOEXEC
	if sealed {
		flags |= unix.MFD_ALLOW_SEALING
	}
	fd, err := unix.MemfdCreate("fuzz", flags)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 {
		if _, err := unix.Pwrite(fd, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	if sealed {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}
