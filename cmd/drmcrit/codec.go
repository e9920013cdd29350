package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
)

// maxImage bounds what decode and encode read (images.Dir.Read has the
// same limit for metadata images).
const maxImage = 64 << 20

// versioned is every image message.
type versioned interface {
	proto.Message
	GetVersion() uint32
}

// imageKind classifies an image by name, with a clear error for pages
// files and names that are not the plugin's.
func imageKind(name, verb string) (images.Kind, error) {
	switch k := images.KindOf(name); k {
	case images.KindPages:
		return k, fmt.Errorf("%s holds raw BO contents, not a protobuf image: there is nothing to %s (drmcrit verify checks it against the checksums in %s)", filepath.Base(name), verb, images.IndexName)
	case images.KindUnknown:
		return k, fmt.Errorf("%s: %w: the kind of an image comes from its name (drm-inventory.img, drm-file-<ino>.img, drm-dmabuf-<ino>.img, %s)", filepath.Base(name), images.ErrNotDRMImage, images.IndexName)
	default:
		return k, nil
	}
}

func readLimited(r io.Reader, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxImage+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(data) > maxImage {
		return nil, fmt.Errorf("%s is larger than %d bytes", what, maxImage)
	}
	return data, nil
}

// decodeImage turns an image into indented JSON. warn gets notes that do
// not stop the decoding: a version this drmcrit does not read, and an
// image that would not re-encode byte for byte.
func decodeImage(name string, data []byte, warn func(string)) ([]byte, error) {
	k, err := imageKind(name, "decode")
	if err != nil {
		return nil, err
	}
	var js []byte
	if k == images.KindIndex {
		js, err = decodeIndex(name, data, warn)
	} else {
		var m proto.Message
		if m, err = images.NewMessage(k); err != nil {
			return nil, err
		}
		js, err = messageJSON(name, data, m, warn)
	}
	if err != nil {
		return nil, err
	}
	// Check the whole way back, as encode will do it.
	if again, err := encodeImage(name, js); err != nil || !bytes.Equal(again, data) {
		warn(fmt.Sprintf("image %s: does not re-encode byte for byte (unknown fields or a non-canonical encoding): encode will not reproduce it exactly", filepath.Base(name)))
	}
	return append(js, '\n'), nil
}

// encodeImage turns JSON back into an image of the kind name says.
func encodeImage(name string, js []byte) ([]byte, error) {
	k, err := imageKind(name, "encode")
	if err != nil {
		return nil, err
	}
	if k == images.KindIndex {
		return encodeIndex(name, js)
	}
	m, err := images.NewMessage(k)
	if err != nil {
		return nil, err
	}
	return encodeMessage(name, js, m)
}

func encodeMessage(name string, js []byte, m proto.Message) ([]byte, error) {
	if err := unmarshalImage(js, m); err != nil {
		return nil, fmt.Errorf("JSON for %s: %w", filepath.Base(name), err)
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", filepath.Base(name), err)
	}
	return data, nil
}

// messageJSON decodes one protobuf message of an image into JSON.
func messageJSON(name string, data []byte, m proto.Message, warn func(string)) ([]byte, error) {
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("image %s: %w", filepath.Base(name), err)
	}
	if v, ok := m.(versioned); ok && (v.GetVersion() < images.MinVersion || v.GetVersion() > images.Version) {
		warn(fmt.Sprintf("image %s: format version %d, this drmcrit reads versions %d to %d", filepath.Base(name), v.GetVersion(), images.MinVersion, images.Version))
	}
	js, err := marshalImage(m)
	if err != nil {
		return nil, fmt.Errorf("image %s: to JSON: %w", filepath.Base(name), err)
	}
	return js, nil
}

// The BO index is a stream of records; its JSON form is one object:
// {"index": <the BoIndex record>, "entries": [<each BoIndexEntry>, ...]}.
type indexJSON struct {
	Index   json.RawMessage   `json:"index"`
	Entries []json.RawMessage `json:"entries"`
}

func decodeIndex(name string, data []byte, warn func(string)) ([]byte, error) {
	recs, err := images.SplitRecords(data)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", filepath.Base(name), err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("image %s: empty", filepath.Base(name))
	}
	out := indexJSON{Entries: []json.RawMessage{}}
	if out.Index, err = messageJSON(name, recs[0], &images.BoIndex{}, warn); err != nil {
		return nil, err
	}
	for i, r := range recs[1:] {
		e, err := messageJSON(fmt.Sprintf("%s record %d", filepath.Base(name), i+1), r, &images.BoIndexEntry{}, warn)
		if err != nil {
			return nil, err
		}
		out.Entries = append(out.Entries, e)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("image %s: to JSON: %w", filepath.Base(name), err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func encodeIndex(name string, js []byte) ([]byte, error) {
	var in indexJSON
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("JSON for %s: %w", filepath.Base(name), err)
	}
	if in.Index == nil {
		return nil, fmt.Errorf("JSON for %s: no \"index\"", filepath.Base(name))
	}
	hdr, err := encodeMessage(name, in.Index, &images.BoIndex{})
	if err != nil {
		return nil, err
	}
	recs := [][]byte{hdr}
	for _, e := range in.Entries {
		r, err := encodeMessage(name, e, &images.BoIndexEntry{})
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return images.JoinRecords(recs), nil
}

// writeOut writes data to path, or to stdout when path is "" or "-".
func writeOut(path string, data []byte, stdout io.Writer) error {
	if path == "" || path == "-" {
		_, err := stdout.Write(data)
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeImage writes an image into its directory, the way the plugin
// writes images (no symlink followed, no FIFO opened). Every image of a
// checkpoint is sealed in its inventory, which a restore checks; an image
// changed on purpose is re-sealed only when asked (reseal), otherwise
// note says that restore and verify will refuse it.
func writeImage(path string, data []byte, reseal bool, note func(string)) error {
	d, err := images.OpenDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	name := filepath.Base(path)
	if err := d.WriteBytes(name, data); err != nil {
		return err
	}
	if reseal {
		if err := d.Reseal(name); err != nil {
			return err
		}
		note(fmt.Sprintf("re-sealed %s in %s", name, filepath.Join(filepath.Dir(path), images.InventoryName)))
		return nil
	}
	inv := &images.Inventory{}
	if err := d.Read(images.InventoryName, inv); err != nil {
		return nil // not in a checkpoint: nothing is sealed
	}
	switch {
	case name == images.InventoryName:
		if len(images.CheckInventorySeal(data)) > 0 {
			note(fmt.Sprintf("%s does not match its own seal: restore and drmcrit verify refuse the checkpoint (encode --reseal re-seals it)", name))
		}
	case images.KindOf(name) == images.KindPages:
	default:
		s := images.Seals(inv)[name]
		if len(images.CheckSeal(name, s, uint64(len(data)), images.Digest(data))) > 0 {
			note(fmt.Sprintf("%s no longer matches its seal in %s: restore and drmcrit verify refuse the checkpoint (encode --reseal re-seals it)", name, images.InventoryName))
		}
	}
	return nil
}

// readIn reads path, or stdin when path is "" or "-".
func readIn(path string, stdin io.Reader) ([]byte, error) {
	if path == "" || path == "-" {
		return readLimited(stdin, "standard input")
	}
	// As an image is opened: no FIFO or device (O_NONBLOCK, regular only).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		if err == nil {
			err = fmt.Errorf("not a regular file (%v)", st.Mode().Type())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return readLimited(f, path)
}
