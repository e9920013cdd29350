// Package fuzzing holds what the project's fuzz targets share: the
// encoding of a sequence of requests in one fuzz input, and Go's corpus
// file format, in which the seeds made from real checkpoints are
// committed (see docs/FUZZING.md).
package fuzzing

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Step is one request of a fuzzed sequence: an op as the packet header
// carries it (it may be unknown or carry uapi.OpOutOfLine), flags that
// say what the target does around the request (their meaning is each
// target's), and the payload.
type Step struct {
	Op      uint16
	Flags   uint8
	Payload []byte
}

// stepHeader is a step's encoded size before its payload: op (u16 LE),
// flags (u8), payload length (u16 LE).
const stepHeader = 5

// Encode packs steps into one fuzz input; Decode unpacks it.
func Encode(steps []Step) []byte {
	var b []byte
	for _, s := range steps {
		if len(s.Payload) > 0xffff {
			panic(fmt.Sprintf("fuzzing: step payload of %d bytes exceeds 65535", len(s.Payload)))
		}
		b = binary.LittleEndian.AppendUint16(b, s.Op)
		b = append(b, s.Flags)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s.Payload)))
		b = append(b, s.Payload...)
	}
	return b
}

// Decode unpacks at most max steps from any bytes: a payload cut short by
// the end of data is what is left, a header cut short ends the sequence.
func Decode(data []byte, max int) []Step {
	var out []Step
	for len(data) >= stepHeader && len(out) < max {
		s := Step{Op: binary.LittleEndian.Uint16(data), Flags: data[2]}
		n := min(int(binary.LittleEndian.Uint16(data[3:])), len(data)-stepHeader)
		s.Payload = data[stepHeader : stepHeader+n]
		data = data[stepHeader+n:]
		out = append(out, s)
	}
	return out
}

// CorpusFile is a seed in the format of Go's fuzzing corpus files
// (testdata/fuzz/FuzzX/NAME): the values of the fuzz function's
// arguments, in order. It knows the types the project's targets take.
func CorpusFile(vals ...any) []byte {
	b := bytes.NewBufferString("go test fuzz v1\n")
	for _, v := range vals {
		switch t := v.(type) {
		case []byte:
			fmt.Fprintf(b, "[]byte(%q)\n", t)
		case string:
			fmt.Fprintf(b, "string(%q)\n", t)
		case byte:
			fmt.Fprintf(b, "byte(%q)\n", t)
		case uint16, uint32, uint64, int, int64, bool:
			fmt.Fprintf(b, "%T(%v)\n", t, t)
		default:
			panic(fmt.Sprintf("fuzzing: no corpus encoding for %T", v))
		}
	}
	return b.Bytes()
}
