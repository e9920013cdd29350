package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"drmcr/images"
)

func wantLines(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// TestInfo: the overview of the rich fixture (no CRIU images) counts
// what the fixture holds and gives verify's verdict.
func TestInfo(t *testing.T) {
	f := richFixture(t)
	code, out, errs := runCmd(t, nil, "info", f.dir)
	if code != 0 {
		t.Fatalf("info: %d %s", code, errs)
	}
	wantLines(t, "info", out,
		"checkpoint "+f.dir+"\n",
		"CRIU:      no images",
		fmt.Sprintf("GPU state: complete; DRM image format v%d, written by drm_plugin ", images.Version),
		"processes: 1 of 1 hold GPU files: 2 drm file fds, 1 dma-buf fd",
		"drm files: 2 on renderD128 (amdgpu, gpu id 0x10020080, driver blob v1)",
		"dma-bufs:  1\n",
		// 8K shared (VRAM) + 4K GTT + two 4K VRAM BOs of the compute job.
		"BOs:       4 BOs, 20 KiB (VRAM 16 KiB, GTT 4 KiB); 1 shared through dma-bufs; contents saved once each in pages files, checksummed with xxh3-128",
		"contexts:  2 contexts; saved jobs: 1 preempted, 0 queued",
		"in flight: 0 requests, 0 unread replies",
		" in 5 DRM images, 20 KiB in 2 pages files, 0 B in other files",
		"verdict:   OK: drmcrit verify finds no problem",
	)
	if n := strings.Count(out, "\n"); n > 24 {
		t.Errorf("info takes %d lines, more than a screen", n)
	}
}

// TestInfoVerdict: the verdict is verify's: its problem count and the
// first problems, the rest left to verify.
func TestInfoVerdict(t *testing.T) {
	f := richFixture(t)
	dir := copyDir(t, f.dir)
	inv := &images.Inventory{}
	readImg(t, dir, images.InventoryName, inv)
	inv.Complete = false
	for i := range 7 { // BOs that were never dumped
		inv.Bos = append(inv.Bos, uint64(1000+i))
	}
	writeImg(t, dir, images.InventoryName, inv)
	_, vout, _ := runCmd(t, nil, "verify", dir)
	nprobs := strings.Count(vout, "\n") - 1 // the count line
	code, out, errs := runCmd(t, nil, "info", dir)
	if code != 0 {
		t.Fatalf("info: %d %s", code, errs)
	}
	wantLines(t, "info", out,
		"GPU state: INCOMPLETE (restore refuses it)",
		fmt.Sprintf("verdict:   %d PROBLEMS (drmcrit verify %s lists them all):", nprobs, dir),
		"drm-inventory.img: bos: BO 1000 has no record in drm-bo-index.img",
		fmt.Sprintf("... and %d more", nprobs-maxVerdictLines),
	)
}

// TestInfoCriu: with CRIU's images, info says how many processes and
// threads they hold, their format and the plugins criu recorded.
func TestInfoCriu(t *testing.T) {
	src := filepath.Join("testdata", "gpudump")
	code, out, errs := runCmd(t, nil, "info", src)
	if code != 0 {
		t.Fatalf("info: %d %s", code, errs)
	}
	// criu 4.1 writes the plugin list, empty: no plugin registered.
	wantLines(t, "info", out,
		"CRIU:      1 process, 6 threads; image format v2; plugins restore requires: none recorded",
		"processes: 1 of 1 hold GPU files: 2 drm file fds, 2 dma-buf fds",
		"drm files: 2 on renderD128 (amdgpu, gpu id 0x10020080, driver blob v1)",
		"verdict:   OK",
	)
	// The same with criu's record of drm_plugin added to its inventory.
	dir := copyDir(t, src)
	addCriuPlugin(t, dir, "drm_plugin")
	_, out, _ = runCmd(t, nil, "info", dir)
	wantLines(t, "info", out, "image format v2; plugins restore requires: drm_plugin")
	// An unreadable inventory.img is said, not fatal.
	must(t, os.WriteFile(filepath.Join(dir, "inventory.img"), []byte("garbage!"), 0o600))
	code, out, _ = runCmd(t, nil, "info", dir)
	wantLines(t, "info", out, "; inventory.img unreadable (")
	if code != 0 {
		t.Errorf("info with a garbled inventory.img: %d", code)
	}
}

// addCriuPlugin adds a plugin to the plugins_entry (field 12, its names
// field 12) of the single entry of CRIU's inventory.img in dir.
func addCriuPlugin(t *testing.T, dir, name string) {
	t.Helper()
	path := filepath.Join(dir, "inventory.img")
	data, err := os.ReadFile(path)
	must(t, err)
	if len(data) < 8 {
		t.Fatal("inventory.img too short")
	}
	magic, entry := data[:4], data[8:8+binary.LittleEndian.Uint32(data[4:8])]
	plugins := protowire.AppendTag(nil, 12, protowire.BytesType)
	plugins = protowire.AppendString(plugins, name)
	entry = protowire.AppendTag(append([]byte(nil), entry...), 12, protowire.BytesType)
	entry = protowire.AppendBytes(entry, plugins)
	out := append(append([]byte(nil), magic...), binary.LittleEndian.AppendUint32(nil, uint32(len(entry)))...)
	must(t, os.WriteFile(path, append(out, entry...), 0o600))
}

// TestExplore: x ps and x fds print CRIU's view like crit x, and name
// the drm files and dma-bufs that crit shows as plain unix sockets.
func TestExplore(t *testing.T) {
	dir := filepath.Join("testdata", "gpudump")
	code, out, errs := runCmd(t, nil, "x", dir, "ps")
	if code != 0 {
		t.Fatalf("x ps: %d %s", code, errs)
	}
	wantLines(t, "x ps", out,
		"    PID   PGID    SID   COMM\n",
		"  23694  23694  23694   drmcrit.test  [GPU: 2 drm files (renderD128), 2 dma-bufs]\n",
	)
	code, out, errs = runCmd(t, nil, "x", dir, "fds")
	if code != 0 {
		t.Fatalf("x fds: %d %s", code, errs)
	}
	wantLines(t, "x fds", out,
		"23694 (drmcrit.test)\n",
		"\t      0: /dev/null\n",
		// The daemon's end of the connection: a socket, nothing more.
		"\t     13: unix[9019195 (9019193) /tmp/ksim4175452513/dri/renderD128]\n",
		"\t     12: unix[9019193 (9019195)]  [drm file: renderD128 amdgpu, gpu id 0x10020080, 1 BO handle, 0 contexts]\n",
		"\t     14: unix[9019197 (9019198)]  [drm file: renderD128 amdgpu, gpu id 0x10020080, 1 BO handle, 1 context]\n",
		"\t     16: unix[9019201 (9019200)]  [dma-buf: BO 1, 8 KiB VRAM]\n",
		"\t     18: unix[9019201 (9019200)]  [dma-buf: BO 1, 8 KiB VRAM]\n",
		"\t    251: pipe[8978325]\n",
		"\t    cwd: /",
		"\t   root: /\n",
	)
	if n := strings.Count(out, "["); n != strings.Count(out, "unix[")+strings.Count(out, "pipe[")+4 {
		t.Errorf("x fds marks other fds than the 4 GPU ones:\n%s", out)
	}

	// Without CRIU's images there is nothing to explore.
	f := richFixture(t)
	code, _, errs = runCmd(t, nil, "x", f.dir, "fds")
	if code != 1 || !strings.Contains(errs, "drmcrit x reads CRIU's images") || !strings.Contains(errs, "drmcrit show lists the GPU files") {
		t.Errorf("x without CRIU images: %d %q", code, errs)
	}
	for _, args := range [][]string{{"x", dir}, {"x", dir, "mems"}, {"info"}, {"x", dir, "ps", "fds"}} {
		if code, _, errs := runCmd(t, nil, args...); code != 2 || !strings.Contains(errs, "usage:") {
			t.Errorf("%q: %d %q", args, code, errs)
		}
	}
}

// TestPlainText: messages lose protobuf's no-break spaces and other
// invisible characters, and are one line.
func TestPlainText(t *testing.T) {
	for in, want := range map[string]string{
		"proto:\u00a0cannot parse": "proto: cannot parse",
		"a\nb\tc":                  "a b c",
		"x\x00y\u200bz":            "x\ufffdy\ufffdz",
		"fd 3 → drm file":          "fd 3 → drm file",
	} {
		if got := plainText(in); got != want {
			t.Errorf("plainText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWarningsPlain: an image error carrying protobuf's no-break space
// reaches verify's problems (which show prints) and info's verdict as
// plain text.
func TestWarningsPlain(t *testing.T) {
	f := richFixture(t)
	c, err := load(f.dir)
	must(t, err)
	c.ck.Problems = append(c.ck.Problems, images.Problemf("drm-file-1.img", "", "%v", errors.New("image drm-file-1.img: proto:\u00a0cannot\u00a0parse invalid wire-format data")))
	want := "drm-file-1.img: image drm-file-1.img: proto: cannot parse invalid wire-format data"
	probs := verifyCheckpoint(c)
	if !strings.Contains(strings.Join(probs, "\n"), want) {
		t.Errorf("verify problems %q", probs)
	}
	var b strings.Builder
	writeInfo(&b, c)
	if !strings.Contains(b.String(), want) || strings.ContainsRune(b.String(), '\u00a0') {
		t.Errorf("info:\n%s", b.String())
	}
	// And through the command line, whatever protobuf chose this time.
	dir := copyDir(t, f.dir)
	must(t, os.WriteFile(filepath.Join(dir, images.FileName(f.inoB)), []byte{0x0a, 0xff, 0x01}, 0o600))
	for _, args := range [][]string{{"show", "--json", dir}, {"verify", dir}, {"info", dir}, {"decode", filepath.Join(dir, images.FileName(f.inoB))}} {
		_, out, errs := runCmd(t, nil, args...)
		if strings.ContainsRune(out+errs, '\u00a0') {
			t.Errorf("%v prints U+00A0: %q %q", args, out, errs)
		}
	}
}
