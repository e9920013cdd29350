// Package fuzzing holds what the project's fuzz targets share: the
// encoding of a sequence of requests in one fuzz input, and Go's corpus
// file format, in which the seeds made from real checkpoints are
// committed (see docs/FUZZING.md).
package fuzzing

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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

// Edit applies structured edits to messages, which it changes in place:
// the fuzzer's way to reach states that mutating encoded bytes rarely
// forms (a handle renumbered, a job's progress past its commands, a
// syncobj pointing at a fence that does not exist). Each edit is 10 bytes
// of edits: a selector (u16 LE) and a value (u64 LE). The selector picks,
// in a fixed walk of the messages, either one scalar field (set or not,
// or an element of a repeated scalar field), which gets the value, or one
// repeated field, which gets an element appended (a copy of one of its
// own) or removed. The value's top two bits choose its range: 4, 16 or 32
// bits, or all 64, so that small ids come up as often as large numbers.
// At most max edits apply.
func Edit(edits []byte, max int, msgs ...proto.Message) {
	for n := 0; len(edits) >= 10 && n < max; n++ {
		sel := int(binary.LittleEndian.Uint16(edits))
		v := binary.LittleEndian.Uint64(edits[2:])
		edits = edits[10:]
		switch v >> 62 {
		case 0:
			v &= 0xf
		case 1:
			v &= 0xffff
		case 2:
			v &= 0xffffffff
		}
		var w walk
		for _, m := range msgs {
			w.message(m.ProtoReflect())
		}
		if len(w.slots)+len(w.lists) == 0 {
			return
		}
		if i := sel % (len(w.slots) + len(w.lists)); i < len(w.slots) {
			w.slots[i](v)
		} else {
			w.lists[i-len(w.slots)](v)
		}
	}
}

// walk collects the editable places of messages.
type walk struct {
	slots []func(v uint64) // a scalar
	lists []func(v uint64) // a repeated field: v&1 appends, else removes
}

func (w *walk) message(m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
		case fd.IsList():
			l := m.Mutable(fd).List()
			w.lists = append(w.lists, func(v uint64) {
				n := l.Len()
				if v&1 == 1 && n > 0 {
					l.Append(cloneValue(fd, l.Get(int(v>>1)%n)))
				} else if v&1 == 0 && n > 0 {
					k := int(v>>1) % n
					for j := k; j < n-1; j++ {
						l.Set(j, l.Get(j+1))
					}
					l.Truncate(n - 1)
				} else {
					l.Append(l.NewElement())
				}
			})
			for j := range l.Len() {
				if fd.Kind() == protoreflect.MessageKind {
					w.message(l.Get(j).Message())
					continue
				}
				w.slots = append(w.slots, func(v uint64) {
					if val, ok := scalar(fd, v, l.Get(j)); ok && j < l.Len() {
						l.Set(j, val)
					}
				})
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if m.Has(fd) {
				w.message(m.Mutable(fd).Message())
			} else {
				w.slots = append(w.slots, func(uint64) { m.Mutable(fd) }) // create it
			}
		default:
			w.slots = append(w.slots, func(v uint64) {
				if val, ok := scalar(fd, v, m.Get(fd)); ok {
					m.Set(fd, val)
				}
			})
		}
	}
}

// scalar is v as a value of field fd (whose value is now old).
func scalar(fd protoreflect.FieldDescriptor, v uint64, old protoreflect.Value) (protoreflect.Value, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(v&1 == 1), true
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(v))), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(v)), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(v)), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(v)), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(v), true
	case protoreflect.StringKind:
		names := []string{"", "amdgpu", "xe", "drm-pages-1.img", "drm-pages-2.img", "../x"}
		return protoreflect.ValueOfString(names[v%uint64(len(names))]), true
	case protoreflect.BytesKind:
		b := bytes.Clone(old.Bytes())
		if v&1 == 1 || len(b) == 0 {
			return protoreflect.ValueOfBytes(b[:int(v>>1)%(len(b)+1)]), true
		}
		b[int(v>>1)%len(b)] ^= 0x01
		return protoreflect.ValueOfBytes(b), true
	}
	return protoreflect.Value{}, false
}

func cloneValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	if fd.Kind() == protoreflect.MessageKind {
		return protoreflect.ValueOfMessage(proto.Clone(v.Message().Interface()).ProtoReflect())
	}
	if fd.Kind() == protoreflect.BytesKind {
		return protoreflect.ValueOfBytes(bytes.Clone(v.Bytes()))
	}
	return v
}
