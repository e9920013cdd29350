package uapi

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

func TestOutOfLineRoundTrip(t *testing.T) {
	small := &IdentifyRequest{Inodes: []uint64{1, 2, 3}}
	_, fd, err := MarshalOutOfLine(Header{Op: OpIdentify, Seq: 3}, small)
	if err != nil || fd != -1 {
		t.Fatalf("a small message went out of line: fd %d, %v", fd, err)
	}
	big := &IdentifyRequest{}
	for i := range 100000 {
		big.Inodes = append(big.Inodes, uint64(i)<<20)
	}
	pkt, fd, err := MarshalOutOfLine(Header{Op: OpIdentify, Seq: 3}, big)
	if err != nil || fd < 0 {
		t.Fatalf("a %d-byte message stayed inline: %v", proto.Size(big), err)
	}
	if len(pkt) != HeaderSize {
		t.Fatalf("out-of-line packet of %d bytes", len(pkt))
	}
	// The memfd is sealed: nobody can change it under the receiver.
	if _, err := unix.Write(fd, []byte{1}); err == nil {
		t.Fatal("wrote to a sealed payload memfd")
	}
	h, err := ParseHeader(pkt)
	if err != nil || h.Op != OpIdentify|OpOutOfLine || !strings.Contains(h.Op.String(), "out-of-line") {
		t.Fatalf("header %+v (%v)", h, err)
	}
	payload, rest, err := InlinePayload(&h, pkt[HeaderSize:], []int{fd})
	if err != nil || len(rest) != 0 || h.Op != OpIdentify {
		t.Fatalf("InlinePayload: %v, rest %v, op %v", err, rest, h.Op)
	}
	want, _ := proto.Marshal(big)
	if !bytes.Equal(payload, want) {
		t.Fatal("out-of-line payload differs")
	}
}

func TestInlinePayloadRefusesAPipe(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	h := Header{Op: OpIdentify | OpOutOfLine}
	if _, _, err := InlinePayload(&h, nil, []int{p[0]}); err == nil || !strings.Contains(err.Error(), "not a memfd") {
		t.Fatalf("a pipe as payload: %v", err)
	}
}

// TestOutOfLinePayloadLimit: an out-of-line payload larger than
// MaxOutOfLine is refused with EMSGSIZE before it is read, so a peer
// cannot make the reader allocate without bound (the memfd is sparse:
// it costs the test no memory).
func TestOutOfLinePayloadLimit(t *testing.T) {
	fd, err := unix.MemfdCreate("too-big", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, MaxOutOfLine+1); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	h := Header{Op: OpIdentify | OpOutOfLine}
	_, _, err = InlinePayload(&h, nil, []int{fd})
	if !errors.Is(err, syscall.EMSGSIZE) || !strings.Contains(err.Error(), "exceed the out-of-line limit of 1073741824") {
		t.Fatalf("a payload of MaxOutOfLine+1 bytes: %v", err)
	}
}
