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

// FuzzCheckpoint: any bytes in place of one of a checkpoint's images (DRM
// or CRIU) make show, graph, verify, info and x report problems, never
// panic.
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
		f.Add(uint8(i), b)
		if len(b) > 4 {
			f.Add(uint8(i), b[:len(b)/2])
			flipped := bytes.Clone(b)
			flipped[len(b)/3] ^= 0x55
			f.Add(uint8(i), flipped)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
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
		if err := os.WriteFile(filepath.Join(dir, target), data, 0o600); err != nil {
			t.Fatal(err)
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
