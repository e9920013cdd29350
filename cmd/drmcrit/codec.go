package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
		return k, fmt.Errorf("%s holds a BO's raw contents, not a protobuf image: there is nothing to %s (drmcrit verify checks it against its drm-bo-<id>.img)", filepath.Base(name), verb)
	case images.KindUnknown:
		return k, fmt.Errorf("%s: %w: the kind of an image comes from its name (drm-inventory.img, drm-file-<ino>.img, drm-dmabuf-<ino>.img, drm-bo-<id>.img)", filepath.Base(name), images.ErrNotDRMImage)
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
	m, err := images.NewMessage(k)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("image %s: %w", filepath.Base(name), err)
	}
	if v, ok := m.(versioned); ok && v.GetVersion() != images.Version {
		warn(fmt.Sprintf("image %s: format version %d, this drmcrit reads version %d", filepath.Base(name), v.GetVersion(), images.Version))
	}
	js, err := marshalImage(m)
	if err != nil {
		return nil, fmt.Errorf("image %s: to JSON: %w", filepath.Base(name), err)
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
	m, err := images.NewMessage(k)
	if err != nil {
		return nil, err
	}
	if err := unmarshalImage(js, m); err != nil {
		return nil, fmt.Errorf("JSON for %s: %w", filepath.Base(name), err)
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", filepath.Base(name), err)
	}
	return data, nil
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

// readIn reads path, or stdin when path is "" or "-".
func readIn(path string, stdin io.Reader) ([]byte, error) {
	if path == "" || path == "-" {
		return readLimited(stdin, "standard input")
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, err
	}
	defer f.Close()
	return readLimited(f, path)
}
