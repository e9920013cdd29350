package fuzzing_test

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/internal/fuzzing"
	"drmcr/kernelsim/uapi"
)

// TestStepsRoundTrip: Decode undoes Encode, stops at max steps, and takes
// any bytes.
func TestStepsRoundTrip(t *testing.T) {
	steps := []fuzzing.Step{{Op: 1, Flags: 2, Payload: []byte("abc")}, {Op: 0x8106, Payload: []byte{}}, {Op: 7, Flags: 0xff, Payload: bytes.Repeat([]byte{9}, 300)}}
	got := fuzzing.Decode(fuzzing.Encode(steps), 10)
	if !reflect.DeepEqual(got, steps) {
		t.Fatalf("round trip: %v, want %v", got, steps)
	}
	if got := fuzzing.Decode(fuzzing.Encode(steps), 2); len(got) != 2 {
		t.Fatalf("max 2 gave %d steps", len(got))
	}
	// A payload cut short is what is left; a header cut short ends it.
	cut := fuzzing.Encode(steps)[:5+3+5+2]
	if got := fuzzing.Decode(cut, 10); len(got) != 2 || len(got[1].Payload) != 0 {
		t.Fatalf("cut input: %v", got)
	}
	if got := fuzzing.Decode([]byte{1, 2, 3}, 10); len(got) != 0 {
		t.Fatalf("3 bytes gave %v", got)
	}
}

// TestCorpusFile: the format of Go's corpus files, as `go test` writes
// them for a crasher.
func TestCorpusFile(t *testing.T) {
	got := string(fuzzing.CorpusFile([]byte("a\x00"), byte(3), uint16(9), "s", true))
	want := "go test fuzz v1\n[]byte(\"a\\x00\")\nbyte('\\x03')\nuint16(9)\nstring(\"s\")\nbool(true)\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestEdit: an edit sets the scalar its selector picks, with the value's
// range chosen by its top bits, or grows or shrinks a repeated field.
func TestEdit(t *testing.T) {
	edit := func(sel uint16, v uint64) []byte {
		b := binary.LittleEndian.AppendUint16(nil, sel)
		return binary.LittleEndian.AppendUint64(b, v)
	}
	m := &uapi.SessionOpenRequest{Bos: []*uapi.BoState{{BoId: 1, Size: 4096}}}
	// The walk: bos' BoState fields (7 scalars), the request's own
	// scalar (checksum), then the lists.
	fuzzing.Edit(edit(0, 0x25), 1, m) // 4-bit range: 5
	fuzzing.Edit(edit(1, 1<<62|0x12345), 1, m)
	if m.Bos[0].BoId != 5 || m.Bos[0].Size != 0x2345 {
		t.Fatalf("after two sets: %v", m)
	}
	fuzzing.Edit(append(edit(8, 1), edit(7+1, 3)...), 2, m) // bos grows; then the second BoState's size is set
	if len(m.Bos) != 2 || m.Bos[1].BoId != 5 || m.Bos[1].Size != 3 || m.Bos[0].Size != 0x2345 {
		t.Fatalf("after a copy: %v", m)
	}
	fuzzing.Edit(edit(7+7+1, 0), 1, m) // remove the first
	if len(m.Bos) != 1 || m.Bos[0].Size != 3 {
		t.Fatalf("after a removal: %v", m)
	}
	fuzzing.Edit(edit(7+1+1, 0), 1, m) // files gets an element
	if len(m.Files) != 1 {
		t.Fatalf("files: %v", m.Files)
	}
	before := proto.Clone(m)
	fuzzing.Edit([]byte{1, 2, 3}, 5, m) // too short: nothing
	if !proto.Equal(before, m) {
		t.Fatal("a short edit changed the message")
	}
}
