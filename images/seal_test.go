package images_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// sealedDir writes a small sealed checkpoint: a drm file image, the index
// and the inventory sealing both.
func sealedDir(t *testing.T) (*images.Dir, string, *images.DrmFile) {
	t.Helper()
	d, path := openDir(t)
	f := &images.DrmFile{Version: images.Version, Inode: 12, Pid: 5, Driver: "amdgpu", State: &uapi.FileCheckpoint{
		Driver: "amdgpu", Minor: 128,
		Handles:  []*uapi.HandleState{{Handle: 1, BoId: 7}, {Handle: 2, BoId: 8}},
		Mappings: []*uapi.VaMapping{{Handle: 2, Va: 0x100000, Size: 4096}},
	}}
	fs, err := d.WriteImage(images.FileName(12), f)
	must(t, err)
	w, err := d.CreateIndex(&images.BoIndex{Version: images.Version, Checksum: uapi.DefaultChecksum.String(), PagesFiles: []string{images.PagesName(1)}})
	must(t, err)
	must(t, w.AddBo(bo(7, 4096, 0)))
	must(t, w.Close())
	inv := &images.Inventory{Version: images.Version, Files: []uint64{12}, Complete: true, Images: []*images.ImageSeal{w.Seal(), fs}}
	must(t, d.WriteInventory(inv))
	return d, path, f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, d *images.Dir) []images.Problem {
	t.Helper()
	inv, probs, err := d.ReadInventory()
	must(t, err)
	seals := images.Seals(inv)
	p, err := d.ReadSealed(images.FileName(12), seals[images.FileName(12)], &images.DrmFile{})
	must(t, err)
	probs = append(probs, p...)
	_, p, err = d.ReadIndexSealed(seals[images.IndexName])
	must(t, err)
	return append(probs, p...)
}

func TestSealsOfAGoodDump(t *testing.T) {
	d, _, _ := sealedDir(t)
	if p := readAll(t, d); len(p) != 0 {
		t.Fatalf("problems in a sealed dump: %v", p)
	}
}

// TestSelfConsistentEditIsRefused: a GEM handle renumbered everywhere in
// its file image makes a valid image, which the seal still refuses,
// naming the image and what differs; re-sealing it on purpose makes it
// acceptable.
func TestSelfConsistentEditIsRefused(t *testing.T) {
	d, _, f := sealedDir(t)
	f.State.Handles[1].Handle = 9
	f.State.Mappings[0].Handle = 9
	must(t, d.Write(images.FileName(12), f))
	p := problems(readAll(t, d))
	for _, w := range []string{"drm-file-12.img: changed after the dump: its blake3-256 digest is ", ", the dump's was ", "(sealed in drm-inventory.img) (drmcrit encode --reseal re-seals an image edited on purpose)"} {
		if !strings.Contains(p, w) {
			t.Errorf("%q lacks %q", p, w)
		}
	}
	must(t, d.Reseal(images.FileName(12)))
	if p := readAll(t, d); len(p) != 0 {
		t.Fatalf("problems after --reseal: %v", p)
	}
}

// TestChannelImageReseal: a reply channel image is sealed like a file's,
// refused once edited, and accepted once re-sealed on purpose.
func TestChannelImageReseal(t *testing.T) {
	d, _, _ := sealedDir(t)
	name := images.ChannelName(13)
	c := &images.DrmChannel{Version: images.Version, Inode: 13, FileInode: 12, Pid: 6}
	s, err := d.WriteImage(name, c)
	must(t, err)
	inv := &images.Inventory{}
	must(t, d.Read(images.InventoryName, inv))
	inv.Channels = []uint64{13}
	inv.Images = append(inv.Images, s)
	must(t, d.WriteInventory(inv))
	read := func() []images.Problem {
		inv, _, err := d.ReadInventory()
		must(t, err)
		p, err := d.ReadSealed(name, images.Seals(inv)[name], &images.DrmChannel{})
		must(t, err)
		return p
	}
	if p := read(); len(p) != 0 {
		t.Fatalf("sealed channel image: %v", p)
	}
	c.Pid = 7
	must(t, d.Write(name, c))
	if p := problems(read()); !strings.Contains(p, name+": changed after the dump") {
		t.Fatalf("edited channel image: %q", p)
	}
	must(t, d.Reseal(name))
	if p := read(); len(p) != 0 {
		t.Fatalf("re-sealed channel image: %v", p)
	}
}

func TestSealNamesWhatDiffers(t *testing.T) {
	d, path, _ := sealedDir(t)
	// A longer image: its size differs, known before reading it.
	name := filepath.Join(path, images.IndexName)
	b, err := os.ReadFile(name)
	must(t, err)
	must(t, os.WriteFile(name, append(b, images.JoinRecords([][]byte{mustMarshal(t, &images.BoIndexEntry{Version: images.Version, Bo: bo(9, 4096, 4096)})})...), 0o600))
	p := problems(readAll(t, d))
	if !strings.Contains(p, "drm-bo-index.img: changed after the dump: it has ") || !strings.Contains(p, "bytes, the dump wrote ") {
		t.Errorf("index grown: %s", p)
	}
}

func TestUnsealedImagesAreRefused(t *testing.T) {
	d, _, _ := sealedDir(t)
	inv := &images.Inventory{}
	must(t, d.Read(images.InventoryName, inv))
	inv.Images = nil
	must(t, d.WriteInventory(inv))
	p := problems(readAll(t, d))
	for _, w := range []string{"drm-file-12.img: not sealed", "drm-bo-index.img: not sealed"} {
		if !strings.Contains(p, w) {
			t.Errorf("%q lacks %q", p, w)
		}
	}
	// An inventory without its own seal.
	inv.Seal = nil
	data, err := proto.Marshal(inv)
	must(t, err)
	must(t, d.WriteBytes(images.InventoryName, data))
	_, ip, err := d.ReadInventory()
	must(t, err)
	if len(ip) != 1 || !strings.Contains(ip[0].String(), "drm-inventory.img: seal: not sealed") {
		t.Errorf("inventory without a seal: %v", ip)
	}
}

func TestInventoryEditIsRefused(t *testing.T) {
	d, _, _ := sealedDir(t)
	inv := &images.Inventory{}
	must(t, d.Read(images.InventoryName, inv))
	inv.Files = append(inv.Files, 99) // keeps the old seal
	data, err := proto.Marshal(inv)
	must(t, err)
	must(t, d.WriteBytes(images.InventoryName, data))
	_, p, err := d.ReadInventory()
	must(t, err)
	if len(p) != 1 || !strings.Contains(p[0].String(), "drm-inventory.img: seal: changed after the dump: the blake3-256 digest of its encoding is ") {
		t.Fatalf("edited inventory: %v", p)
	}
	must(t, d.Reseal(images.InventoryName))
	if _, p, _ := d.ReadInventory(); len(p) != 0 {
		t.Fatalf("re-sealed inventory: %v", p)
	}
	if err := d.Reseal(images.PagesName(1)); err == nil {
		t.Error("re-sealed a pages file, which the index checks chunk by chunk")
	}
}

// TestImagesOpenOnlyInside: every read of an image refuses what is not a
// regular file of the directory, without blocking on a FIFO, without
// following a symlink (out of the directory or not) and without leaving
// the directory.
func TestImagesOpenOnlyInside(t *testing.T) {
	d, path, _ := sealedDir(t)
	inv := filepath.Join(path, images.InventoryName)
	must(t, os.Rename(inv, filepath.Join(path, "saved")))
	must(t, mkfifo(inv))
	if _, _, err := d.ReadInventory(); err == nil || !strings.Contains(err.Error(), "open image drm-inventory.img: not a regular file (a FIFO)") {
		t.Errorf("inventory as a FIFO: %v", err)
	}
	must(t, os.Remove(inv))
	must(t, os.Symlink("saved", inv)) // a symlink inside the directory
	if _, _, err := d.ReadInventory(); err == nil {
		t.Error("read the inventory through a symlink")
	}
	must(t, os.Remove(inv))
	must(t, os.Symlink("/etc/passwd", filepath.Join(path, images.FileName(3))))
	if _, err := d.ReadSealed(images.FileName(3), nil, &images.DrmFile{}); err == nil {
		t.Error("read a file image through a symlink to /etc/passwd")
	}
	must(t, os.Mkdir(filepath.Join(path, images.DmaBufName(4)), 0o700))
	if _, err := d.ReadSealed(images.DmaBufName(4), nil, &images.DmaBuf{}); err == nil || !strings.Contains(err.Error(), "a directory") {
		t.Errorf("a directory as an image: %v", err)
	}
	for _, name := range []string{"../other/" + images.PagesName(1), "/etc/passwd", "..", ""} {
		if _, err := d.OpenRegular(name); err == nil || !strings.Contains(err.Error(), "not a file name of the images directory") {
			t.Errorf("OpenRegular(%q): %v", name, err)
		}
	}
	// Writing does not block on a FIFO planted under an image's name.
	must(t, mkfifo(filepath.Join(path, images.FileName(5))))
	if _, err := d.Create(images.FileName(5)); err == nil {
		t.Error("created an image over a FIFO")
	}
}
