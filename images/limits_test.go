package images_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drmcr/images"
)

// TestMetadataSizeLimit: a metadata image, or a record of the BO index,
// larger than images.MaxMessage is refused before it is read into memory,
// naming the image and the limit (an image cannot make a reader allocate
// without bound).
func TestMetadataSizeLimit(t *testing.T) {
	d, path := openDir(t)
	name := images.FileName(7)
	// Sparse: costs no disk.
	f, err := os.Create(filepath.Join(path, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(images.MaxMessage + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := fmt.Sprintf("image %s: %d bytes is more than the %d a metadata image may have", name, images.MaxMessage+1, images.MaxMessage)
	if _, err := d.ReadBytes(name); err == nil || err.Error() != want {
		t.Errorf("an image of MaxMessage+1 bytes: %v, want %q", err, want)
	}
	if err := d.Read(name, &images.DrmFile{}); err == nil || !strings.Contains(err.Error(), "more than the") {
		t.Errorf("Read of an image of MaxMessage+1 bytes: %v", err)
	}

	var lb [4]byte
	binary.LittleEndian.PutUint32(lb[:], images.MaxMessage+1)
	_, err = images.ReadIndexFrom(bytes.NewReader(lb[:]))
	want = fmt.Sprintf("image %s: record 0 claims %d bytes, more than %d", images.IndexName, images.MaxMessage+1, images.MaxMessage)
	if err == nil || err.Error() != want {
		t.Errorf("an index record of MaxMessage+1 bytes: %v, want %q", err, want)
	}
}
