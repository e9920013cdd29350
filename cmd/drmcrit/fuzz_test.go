package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"drmcr/images"
)

// imageNames are the DRM image names the fuzzers feed bytes as.
var imageNames = []string{"drm-inventory.img", "drm-file-1.img", "drm-dmabuf-2.img", "drm-bo-index.img"}

// FuzzDecodeImage: decode never panics, and whatever decodes without a
// warning encodes back to the same bytes.
func FuzzDecodeImage(f *testing.F) {
	for _, dir := range []string{filepath.Join("testdata", "gpudump")} {
		names, _ := filepath.Glob(filepath.Join(dir, "drm-*.img"))
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				f.Fatal(err)
			}
			for i := range imageNames {
				f.Add(uint8(i), b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		name := imageNames[int(kind)%len(imageNames)]
		warned := false
		js, err := decodeImage(name, data, func(string) { warned = true })
		if err != nil || warned {
			return
		}
		back, err := encodeImage(name, js)
		if err != nil {
			t.Fatalf("encode of decoded %s: %v\n%s", name, err, js)
		}
		if !bytes.Equal(back, data) {
			t.Fatalf("%s: round trip differs without a warning", name)
		}
	})
}

// Ways FuzzCheckpoint damages an image ((how&0x7f)%4); how&0x80 reseals
// a replaced image (encode --reseal), so that verify's checks past the
// seals see the damage.
const (
	damageReplace = iota // its bytes are the fuzzed ones
	damageRemove         // it is gone
	damageDir            // a directory stands in its place
	damageSymlink        // a symlink to another image stands in its place
)

// FuzzCheckpoint: any bytes in place of one of a checkpoint's images (DRM
// or CRIU), or the image removed, or a directory or a symlink to another
// image in its place, make show, graph, verify, info and x report
// problems, never panic.
func FuzzCheckpoint(f *testing.F) {
	src := filepath.Join("testdata", "gpudump")
	ents, err := os.ReadDir(src)
	if err != nil {
		f.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), uint8(damageReplace), b)
		if len(b) > 4 {
			f.Add(uint8(i), uint8(damageReplace), b[:len(b)/2])
			flipped := bytes.Clone(b)
			flipped[len(b)/3] ^= 0x55
			f.Add(uint8(i), uint8(damageReplace), flipped)
		}
		if images.KindOf(n) != images.KindUnknown {
			f.Add(uint8(i), uint8(damageRemove), []byte{})
			f.Add(uint8(i), uint8(damageDir), []byte{})
			f.Add(uint8(i), uint8(damageSymlink), []byte{})
		}
	}
	f.Fuzz(func(t *testing.T, which, how uint8, data []byte) {
		dir := t.TempDir()
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(src, n))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		target := names[int(which)%len(names)]
		path := filepath.Join(dir, target)
		var err error
		switch (how & 0x7f) % 4 {
		case damageReplace:
			err = os.WriteFile(path, data, 0o600)
		case damageRemove:
			err = os.Remove(path)
		case damageDir:
			if err = os.Remove(path); err == nil {
				err = os.Mkdir(path, 0o700)
			}
		case damageSymlink:
			if err = os.Remove(path); err == nil {
				err = os.Symlink(names[(int(which)+1)%len(names)], path)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if how&0x80 != 0 && (how&0x7f)%4 == damageReplace {
			if d, err := images.OpenDir(dir); err == nil {
				d.Reseal(target) // fails for images that are not sealed
				d.Close()
			}
		}
		if c, err := load(dir); err == nil {
			v := buildView(c)
			writeText(io.Discard, v)
			if err := writeDOT(io.Discard, v); err != nil {
				t.Fatal(err)
			}
			writeInfo(io.Discard, c)
			if c.criu != nil {
				writePs(io.Discard, c, v)
				writeFds(io.Discard, c, v)
			}
		}
		verify(dir)
		if images.KindOf(target) == images.KindUnknown {
			readCriuTree(dir)
		}
	})
}

// FuzzEncodeImage: any JSON encodes into an image or fails with an error,
// never panics; what encodes decodes (with a warning if, say, its version
// is not this format's: encode makes such images on purpose) and encodes
// back to the same bytes.
func FuzzEncodeImage(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("testdata", "gpudump", "drm-*.img"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		for i, name := range imageNames {
			if js, err := decodeImage(name, b, func(string) {}); err == nil {
				f.Add(uint8(i), js)
			}
		}
	}
	f.Add(uint8(0), []byte(`{"version": 2, "files": [1, 2], "bos": ["0x1"]}`))
	f.Fuzz(func(t *testing.T, kind uint8, js []byte) {
		name := imageNames[int(kind)%len(imageNames)]
		data, err := encodeImage(name, js)
		if err != nil {
			return
		}
		back, err := decodeImage(name, data, func(string) {})
		if err != nil {
			t.Fatalf("%s encoded from JSON does not decode: %v", name, err)
		}
		again, err := encodeImage(name, back)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("%s: encode(decode(encode(JSON))) differs: %v", name, err)
		}
	})
}
