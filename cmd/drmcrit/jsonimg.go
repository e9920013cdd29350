package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// This file is the JSON form of the plugin's images that decode prints and
// encode reads. It follows drmcrit's one JSON convention (jsonConvention),
// which show --json follows too; protojson's (64-bit integers as strings,
// bytes in base64) would differ from it.

// jsonConvention is printed by `drmcrit help json` and README.md.
const jsonConvention = `JSON conventions (drmcrit decode and drmcrit show --json):

  - keys are snake_case; decode's are the images' protobuf field names;
  - integers are JSON numbers, 64-bit ones included (BO ids, inodes, sizes,
    fence ids): parse them as 64-bit integers, not as float64;
  - GPU virtual addresses and flag words (fields named "va" and "flags")
    are hex strings: "0x100000";
  - byte strings (checksums, the driver blob, packets in flight) are
    lowercase hex strings;
  - enums are value names without their type's prefix (DOMAIN_VRAM is
    "VRAM"); a value this drmcrit does not know is a number;
  - lists are never null: [] when empty.

decode prints every field of an image, zero values included, except a
sub-message that is not set. encode reads exactly this form (unknown or
repeated keys, numbers out of range and malformed hex are errors) and
turns decode's output back into the same image, byte for byte.
`

// hexField says whether an integer field is printed in hex.
func hexField(fd protoreflect.FieldDescriptor) bool {
	switch fd.Name() {
	case "va", "flags":
		return fd.Kind() == protoreflect.Uint64Kind || fd.Kind() == protoreflect.Uint32Kind
	}
	return false
}

// enumPrefix is the prefix the protobuf style guide puts on an enum's
// values: the enum's name in upper snake case and "_" (Domain: "DOMAIN_").
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(ed.Name()) {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

// marshalImage prints m in the JSON convention, indented.
func marshalImage(m proto.Message) ([]byte, error) {
	var b bytes.Buffer
	if err := writeMessage(&b, m.ProtoReflect()); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func writeMessage(b *bytes.Buffer, m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	b.WriteByte('{')
	first := true
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsMap() {
			return fmt.Errorf("field %s: maps are not supported", fd.FullName())
		}
		if !fd.IsList() && (fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind || fd.HasPresence()) && !m.Has(fd) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeString(b, string(fd.Name()))
		b.WriteByte(':')
		if !fd.IsList() {
			if err := writeValue(b, fd, m.Get(fd)); err != nil {
				return err
			}
			continue
		}
		l := m.Get(fd).List()
		b.WriteByte('[')
		for j := range l.Len() {
			if j > 0 {
				b.WriteByte(',')
			}
			if err := writeValue(b, fd, l.Get(j)); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	return nil
}

func writeValue(b *bytes.Buffer, fd protoreflect.FieldDescriptor, v protoreflect.Value) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return writeMessage(b, v.Message())
	case protoreflect.BoolKind:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if hexField(fd) {
			writeString(b, "0x"+strconv.FormatUint(v.Uint(), 16))
		} else {
			b.WriteString(strconv.FormatUint(v.Uint(), 10))
		}
	case protoreflect.StringKind:
		writeString(b, v.String())
	case protoreflect.BytesKind:
		writeString(b, hex.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(v.Enum())
		if ev == nil {
			b.WriteString(strconv.FormatInt(int64(v.Enum()), 10))
			break
		}
		writeString(b, strings.TrimPrefix(string(ev.Name()), enumPrefix(fd.Enum())))
	default:
		return fmt.Errorf("field %s: %v fields are not supported", fd.FullName(), fd.Kind())
	}
	return nil
}

func writeString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)           // a string always encodes
	b.Truncate(b.Len() - 1) // Encode's newline
}

// unmarshalImage reads JSON in the convention into m.
func unmarshalImage(data []byte, m proto.Message) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := readMessage(dec, m.ProtoReflect(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// jsonPath names a field in errors: "state.handles[2].bo_id".
func jsonPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func readDelim(dec *json.Decoder, want json.Delim, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return at(path, "%w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		what := "an object"
		if want == '[' {
			what = "a list"
		}
		return at(path, "want %s, got %v", what, tokString(tok))
	}
	return nil
}

// at prefixes an error message with the path it is about, if any.
func at(path, format string, args ...any) error {
	if path == "" {
		return fmt.Errorf(format, args...)
	}
	return fmt.Errorf("%s: "+format, append([]any{path}, args...)...)
}

func tokString(tok json.Token) string {
	switch t := tok.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(t)
	case json.Delim:
		return string(t)
	}
	return fmt.Sprint(tok)
}

func readMessage(dec *json.Decoder, m protoreflect.Message, path string) error {
	if err := readDelim(dec, '{', path); err != nil {
		return err
	}
	fields := m.Descriptor().Fields()
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return at(path, "%w", err)
		}
		key, _ := tok.(string)
		fd := fields.ByName(protoreflect.Name(key))
		if fd == nil {
			return at(path, "unknown field %q of %s", key, m.Descriptor().Name())
		}
		if seen[key] {
			return at(path, "%q given twice", key)
		}
		seen[key] = true
		p := jsonPath(path, key)
		switch {
		case fd.IsMap():
			return fmt.Errorf("%s: maps are not supported", p)
		case fd.IsList():
			if err := readDelim(dec, '[', p); err != nil {
				return err
			}
			l := m.Mutable(fd).List()
			for i := 0; dec.More(); i++ {
				ep := fmt.Sprintf("%s[%d]", p, i)
				if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
					e := l.NewElement()
					if err := readMessage(dec, e.Message(), ep); err != nil {
						return err
					}
					l.Append(e)
					continue
				}
				v, err := readScalar(dec, fd, ep)
				if err != nil {
					return err
				}
				l.Append(v)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return fmt.Errorf("%s: %w", p, err)
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if err := readMessage(dec, m.Mutable(fd).Message(), p); err != nil {
				return err
			}
		default:
			v, err := readScalar(dec, fd, p)
			if err != nil {
				return err
			}
			m.Set(fd, v)
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return at(path, "%w", err)
	}
	return nil
}

func readScalar(dec *json.Decoder, fd protoreflect.FieldDescriptor, path string) (protoreflect.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return protoreflect.Value{}, fmt.Errorf("%s: %w", path, err)
	}
	bad := func(want string) (protoreflect.Value, error) {
		return protoreflect.Value{}, fmt.Errorf("%s: want %s, got %s", path, want, tokString(tok))
	}
	num, isNum := tok.(json.Number)
	str, isStr := tok.(string)
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if b, ok := tok.(bool); ok {
			return protoreflect.ValueOfBool(b), nil
		}
		return bad("true or false")
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if n, err := strconv.ParseInt(string(num), 10, 32); isNum && err == nil {
			return protoreflect.ValueOfInt32(int32(n)), nil
		}
		return bad("a 32-bit integer")
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if n, err := strconv.ParseInt(string(num), 10, 64); isNum && err == nil {
			return protoreflect.ValueOfInt64(n), nil
		}
		return bad("a 64-bit integer")
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		bits := 64
		if fd.Kind() == protoreflect.Uint32Kind || fd.Kind() == protoreflect.Fixed32Kind {
			bits = 32
		}
		var n uint64
		var err error
		switch {
		case hexField(fd) && isStr && strings.HasPrefix(str, "0x") && len(str) > 2:
			n, err = strconv.ParseUint(str[2:], 16, bits)
		case !hexField(fd) && isNum:
			n, err = strconv.ParseUint(string(num), 10, bits)
		default:
			err = errors.New("wrong form")
		}
		if err != nil {
			if hexField(fd) {
				return bad(fmt.Sprintf("a %d-bit hex string (\"0x1000\")", bits))
			}
			return bad(fmt.Sprintf("an unsigned %d-bit integer", bits))
		}
		if bits == 32 {
			return protoreflect.ValueOfUint32(uint32(n)), nil
		}
		return protoreflect.ValueOfUint64(n), nil
	case protoreflect.StringKind:
		if isStr {
			return protoreflect.ValueOfString(str), nil
		}
		return bad("a string")
	case protoreflect.BytesKind:
		if b, err := hex.DecodeString(str); isStr && err == nil && strings.ToLower(str) == str {
			return protoreflect.ValueOfBytes(b), nil
		}
		return bad("a lowercase hex string")
	case protoreflect.EnumKind:
		ed := fd.Enum()
		var names []string
		for i := range ed.Values().Len() {
			ev := ed.Values().Get(i)
			name := strings.TrimPrefix(string(ev.Name()), enumPrefix(ed))
			if isStr && str == name {
				return protoreflect.ValueOfEnum(ev.Number()), nil
			}
			names = append(names, strconv.Quote(name))
		}
		if n, err := strconv.ParseInt(string(num), 10, 32); isNum && err == nil {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), nil
		}
		return bad("one of " + strings.Join(names, ", ") + " or a number")
	}
	return protoreflect.Value{}, fmt.Errorf("%s: %v fields are not supported", path, fd.Kind())
}
