package drmcore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/drmcore"
	"drmcr/images"
)

// TestReadImagesRefusesMisfiledImages: every inode of the inventory is
// restored once, from its own image. An image in the place of another
// (here a symlink: two dma-buf images then described one dma-buf, which
// two restore entries claimed while the other dma-buf was never restored;
// found by FuzzRestore) or an inode listed twice fails the restore before
// anything is created.
func TestReadImagesRefusesMisfiledImages(t *testing.T) {
	src := filepath.Join("testdata", "checkpoints", "shared")
	read := func(dir string) error {
		d, err := images.OpenDir(dir)
		ok(t, err)
		defer d.Close()
		_, err = drmcore.ReadImages(d)
		return err
	}
	dmabufs, _ := filepath.Glob(filepath.Join(src, "drm-dmabuf-*.img"))
	files, _ := filepath.Glob(filepath.Join(src, "drm-file-*.img"))
	if len(dmabufs) < 2 || len(files) < 2 {
		t.Fatalf("the shared checkpoint has %d dma-buf and %d file images", len(dmabufs), len(files))
	}
	for _, pair := range [][2]string{{dmabufs[0], dmabufs[1]}, {files[0], files[1]}} {
		dir := copyDir(t, src)
		victim := filepath.Join(dir, filepath.Base(pair[0]))
		ok(t, os.Remove(victim))
		ok(t, os.Symlink(filepath.Base(pair[1]), victim))
		if err := read(dir); err == nil || !strings.Contains(err.Error(), "image "+filepath.Base(pair[0])+" holds") {
			t.Errorf("%s in the place of %s: %v", filepath.Base(pair[1]), filepath.Base(pair[0]), err)
		}
	}
	dir := copyDir(t, src)
	inv := &images.Inventory{}
	b, err := os.ReadFile(filepath.Join(dir, images.InventoryName))
	ok(t, err)
	ok(t, proto.Unmarshal(b, inv))
	inv.Dmabufs = append(inv.Dmabufs, inv.Dmabufs[0])
	b, err = proto.Marshal(inv)
	ok(t, err)
	ok(t, os.WriteFile(filepath.Join(dir, images.InventoryName), b, 0o600))
	if err := read(dir); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("an inode listed twice: %v", err)
	}
	if err := read(copyDir(t, src)); err != nil {
		t.Fatalf("the intact checkpoint: %v", err)
	}
}
