package images_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
)

func openDir(t *testing.T) (*images.Dir, string) {
	t.Helper()
	path := t.TempDir()
	d, err := images.OpenDir(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

func TestWriteReadRoundTrip(t *testing.T) {
	d, _ := openDir(t)
	in := &images.DmaBuf{Version: images.Version, Inode: 99, BoId: 7, Pid: 12}
	if err := d.Write(images.DmaBufName(99), in); err != nil {
		t.Fatal(err)
	}
	out := &images.DmaBuf{}
	if err := d.Read(images.DmaBufName(99), out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Fatalf("read %v, wrote %v", out, in)
	}
}

func TestReadChecksVersion(t *testing.T) {
	d, _ := openDir(t)
	if err := d.Write(images.InventoryName, &images.Inventory{Version: images.Version + 1}); err != nil {
		t.Fatal(err)
	}
	err := d.Read(images.InventoryName, &images.Inventory{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("format version %d", images.Version+1)) {
		t.Fatalf("reading a version %d image: %v", images.Version+1, err)
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	d, path := openDir(t)
	if err := os.WriteFile(filepath.Join(path, images.FileName(5)), []byte{0xff, 0xff, 0xff}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Read(images.FileName(5), &images.DrmFile{}); err == nil {
		t.Fatal("garbage decoded as an image")
	}
	if err := d.Read(images.FileName(6), &images.DrmFile{}); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing image: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestNamesAndKinds(t *testing.T) {
	d, path := openDir(t)
	for _, n := range []string{images.InventoryName, images.FileName(12), images.DmaBufName(13), images.IndexName, images.PagesName(1), "core-1.img", "drm-other", "drm-bo-1.pages", "drm-pages-x.img"} {
		if err := os.WriteFile(filepath.Join(path, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	names, err := d.Names()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"drm-bo-index.img", "drm-dmabuf-13.img", "drm-file-12.img", "drm-inventory.img", "drm-pages-1.img"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	kinds := map[string]images.Kind{
		"drm-inventory.img": images.KindInventory, "drm-file-12.img": images.KindFile,
		"drm-dmabuf-13.img": images.KindDmaBuf, "drm-bo-index.img": images.KindIndex,
		"drm-pages-1.img": images.KindPages, "core-1.img": images.KindUnknown,
		"drm-bo-1.img": images.KindUnknown, "drm-file-x.img": images.KindUnknown,
	}
	for n, k := range kinds {
		if got := images.KindOf(filepath.Join("/some/dir", n)); got != k {
			t.Errorf("KindOf(%s) = %v, want %v", n, got, k)
		}
		if _, err := images.NewMessage(k); (err == nil) != (k != images.KindPages && k != images.KindIndex && k != images.KindUnknown) {
			t.Errorf("NewMessage(%v): %v", k, err)
		}
	}
}
