package fuzzing_test

import (
	"bytes"
	"reflect"
	"testing"

	"drmcr/internal/fuzzing"
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
