package drmcore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/amdgpu"
	"drmcr/dmabuf"
	"drmcr/drmcore"
	"drmcr/images"
)

// TestReadCheckpointRefusesMisfiledImages: every inode of the inventory
// is restored once, from its own image. An image in the place of another
// (two dma-buf images then described one dma-buf, which two restore
// entries claimed while the other dma-buf was never restored; found by
// FuzzRestore), even resealed as if on purpose, or an inode the inventory
// lists twice, is a problem before anything is created.
func TestReadCheckpointRefusesMisfiledImages(t *testing.T) {
	src := filepath.Join("testdata", "checkpoints", "shared")
	problems := func(dir string) string {
		d, err := images.OpenDir(dir)
		ok(t, err)
		defer d.Close()
		ck, err := drmcore.ReadCheckpoint(d, drmcore.SubPlugins{Drivers: []drmcore.DriverPlugin{amdgpu.New()}, DmaBuf: dmabuf.New()})
		ok(t, err)
		if err := ck.Err(); err != nil {
			return err.Error()
		}
		return ""
	}
	dmabufs, _ := filepath.Glob(filepath.Join(src, "drm-dmabuf-*.img"))
	files, _ := filepath.Glob(filepath.Join(src, "drm-file-*.img"))
	if len(dmabufs) < 2 || len(files) < 2 {
		t.Fatalf("the shared checkpoint has %d dma-buf and %d file images", len(dmabufs), len(files))
	}
	for _, pair := range [][2]string{{dmabufs[0], dmabufs[1]}, {files[0], files[1]}} {
		dir := copyImages(t, src)
		victim := filepath.Base(pair[0])
		b, err := os.ReadFile(pair[1])
		ok(t, err)
		ok(t, os.WriteFile(filepath.Join(dir, victim), b, 0o600))
		d, err := images.OpenDir(dir)
		ok(t, err)
		ok(t, d.Reseal(victim))
		d.Close()
		if p := problems(dir); !strings.Contains(p, victim) {
			t.Errorf("%s in the place of %s: %q", filepath.Base(pair[1]), victim, p)
		}
	}
	dir := copyImages(t, src)
	inv := &images.Inventory{}
	b, err := os.ReadFile(filepath.Join(dir, images.InventoryName))
	ok(t, err)
	ok(t, proto.Unmarshal(b, inv))
	inv.Dmabufs = append(inv.Dmabufs, inv.Dmabufs[0])
	b, err = images.SealInventory(inv)
	ok(t, err)
	ok(t, os.WriteFile(filepath.Join(dir, images.InventoryName), b, 0o600))
	if p := problems(dir); !strings.Contains(p, "twice") {
		t.Errorf("an inode listed twice: %q", p)
	}
	if p := problems(copyImages(t, src)); p != "" {
		t.Fatalf("the intact checkpoint: %s", p)
	}
}
