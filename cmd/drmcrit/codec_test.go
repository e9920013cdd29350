package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drmcr/images"
)

// TestReadmeInSync: README.md carries the schema and the checks verbatim.
func TestReadmeInSync(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	must(t, err)
	for name, text := range map[string]string{"jsonConvention": jsonConvention, "jsonHelp": jsonHelp, "verifyChecks": verifyChecks} {
		if !strings.Contains(string(readme), text) {
			t.Errorf("README.md does not contain %s verbatim", name)
		}
	}
}

// TestDecodeEncodeRoundTrip: decode then encode gives back every image
// byte for byte, through stdin/stdout and through -i/-o.
func TestDecodeEncodeRoundTrip(t *testing.T) {
	f := richFixture(t)
	names, err := filepath.Glob(filepath.Join(f.dir, "drm-*.img"))
	must(t, err)
	kinds := map[images.Kind]int{}
	tmp := t.TempDir()
	for _, path := range names {
		base := filepath.Base(path)
		if images.KindOf(base) == images.KindPages {
			continue
		}
		kinds[images.KindOf(base)]++
		orig, err := os.ReadFile(path)
		must(t, err)
		code, js, errs := runCmd(t, nil, "decode", path)
		if code != 0 || errs != "" {
			t.Fatalf("decode %s: %d %s", base, code, errs)
		}
		if !strings.Contains(js, fmt.Sprintf(`"version": %d`, images.Version)) {
			t.Errorf("decode %s: no version in\n%s", base, js)
		}
		code, bin, errs := runCmd(t, []byte(js), "encode", base)
		if code != 0 {
			t.Fatalf("encode %s: %d %s", base, code, errs)
		}
		if !bytes.Equal([]byte(bin), orig) {
			t.Errorf("%s: decode → encode differs (%d bytes, was %d)", base, len(bin), len(orig))
		}
		// Files: decode -o, encode -i -o (kind from -o's name).
		jsPath := filepath.Join(tmp, base+".json")
		out := filepath.Join(tmp, "out", base)
		must(t, os.MkdirAll(filepath.Dir(out), 0o755))
		if code, _, errs := runCmd(t, nil, "decode", "-o", jsPath, path); code != 0 {
			t.Fatalf("decode -o: %s", errs)
		}
		if code, _, errs := runCmd(t, nil, "encode", "-i", jsPath, "-o", out); code != 0 {
			t.Fatalf("encode -i -o: %s", errs)
		}
		got, err := os.ReadFile(out)
		must(t, err)
		if !bytes.Equal(got, orig) {
			t.Errorf("%s: decode -o → encode -i -o differs", base)
		}
	}
	for _, k := range []images.Kind{images.KindInventory, images.KindFile, images.KindDmaBuf, images.KindIndex} {
		if kinds[k] == 0 {
			t.Errorf("the fixture has no image of kind %d", k)
		}
	}
}

// TestDecodeErrors: pages files, foreign names, garbage, other versions.
func TestDecodeErrors(t *testing.T) {
	f := richFixture(t)
	dir := copyDir(t, f.dir)
	pages := filepath.Join(dir, images.PagesName(1))
	code, _, errs := runCmd(t, nil, "decode", pages)
	if code != 1 || !strings.Contains(errs, "raw BO contents, not a protobuf image") {
		t.Errorf("decode pages: %d %q", code, errs)
	}
	code, _, errs = runCmd(t, []byte("{}"), "encode", "drm-pages-1.img")
	if code != 1 || !strings.Contains(errs, "raw BO contents") {
		t.Errorf("encode pages: %d %q", code, errs)
	}
	code, _, errs = runCmd(t, nil, "decode", filepath.Join(dir, "core-1.img"))
	if code != 1 || !strings.Contains(errs, "not a DRM plugin image") {
		t.Errorf("decode foreign: %d %q", code, errs)
	}
	code, _, errs = runCmd(t, nil, "decode", filepath.Join(dir, "drm-file-999.img"))
	if code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("decode missing: %d %q", code, errs)
	}
	bad := filepath.Join(dir, "drm-file-1.img")
	must(t, os.WriteFile(bad, []byte{0x12, 0x80}, 0o600))
	code, _, errs = runCmd(t, nil, "decode", bad)
	if code != 1 || !strings.Contains(errs, "image drm-file-1.img:") {
		t.Errorf("decode garbage: %d %q", code, errs)
	}
	// Another version decodes, with a warning.
	dmabuf := images.DmaBufName(f.inoDmaB)
	b := &images.DmaBuf{}
	readImg(t, dir, dmabuf, b)
	b.Version = 7
	writeImg(t, dir, dmabuf, b)
	code, out, errs := runCmd(t, nil, "decode", filepath.Join(dir, dmabuf))
	if code != 0 || !strings.Contains(errs, fmt.Sprintf("format version 7, this drmcrit reads versions %d to %d", images.MinVersion, images.Version)) || !strings.Contains(out, `7`) {
		t.Errorf("decode v7: %d %q", code, errs)
	}
	// Unknown fields: decoded with a warning that encode will not
	// reproduce them.
	data, err := os.ReadFile(filepath.Join(f.dir, dmabuf))
	must(t, err)
	unk := filepath.Join(dir, dmabuf)
	must(t, os.WriteFile(unk, append(data, 0xf8, 0x01, 0x05), 0o600)) // field 31, varint 5
	code, _, errs = runCmd(t, nil, "decode", unk)
	if code != 0 || !strings.Contains(errs, "does not re-encode byte for byte") {
		t.Errorf("decode with unknown field: %d %q", code, errs)
	}
	// A truncated index.
	idx, err := os.ReadFile(filepath.Join(f.dir, images.IndexName))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, images.IndexName), idx[:len(idx)-3], 0o600))
	code, _, errs = runCmd(t, nil, "decode", filepath.Join(dir, images.IndexName))
	if code != 1 || !strings.Contains(errs, "claims") {
		t.Errorf("decode a truncated index: %d %q", code, errs)
	}
	// Bad JSON.
	code, _, errs = runCmd(t, []byte(`{"version": "x"}`), "encode", "drm-inventory.img")
	if code != 1 || !strings.Contains(errs, "JSON for drm-inventory.img") {
		t.Errorf("encode bad JSON: %d %q", code, errs)
	}
	code, _, errs = runCmd(t, []byte(`{"nope": 1}`), "encode", "drm-dmabuf-3.img")
	if code != 1 || !strings.Contains(errs, "nope") {
		t.Errorf("encode unknown field: %d %q", code, errs)
	}
}
