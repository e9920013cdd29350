package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drmcr/images"
)

// TestShowText: the tree names the files, handles, BOs, sharing, VA
// mappings, the preempted job, the dma-buf, and says fds are unknown.
func TestShowText(t *testing.T) {
	f := richFixture(t)
	code, out, errs := runCmd(t, nil, "show", f.dir)
	if code != 0 {
		t.Fatalf("show: status %d: %s", code, errs)
	}
	t.Logf("\n%s", out)
	for _, want := range []string{
		fmt.Sprintf("2 drm file(s), 1 dma-buf(s), 4 BO(s) (image version %d, plugin 0.1.0); verdict: OK, restores (drmcrit verify finds no problem)", images.Version),
		`fd numbers are shown as "?"`,
		fmt.Sprintf("pid %d (", f.pid),
		fmt.Sprintf("fd ? → drm file ino %d: renderD128, driver amdgpu", f.inoA),
		fmt.Sprintf("fd ? → drm file ino %d: renderD128", f.inoB),
		fmt.Sprintf("BO handle %d: id %d, 8 KiB, VRAM, flags 0x3, prime", f.hA1, f.sharedBo),
		fmt.Sprintf("BO handle %d: id %d, 4 KiB, GTT", f.hA2, f.sharedBo+1),
		"VA 0x100000 +8 KiB (BO offset 0x0, flags 0x1)",
		"VA 0x200000 +4 KiB",
		fmt.Sprintf("shared with pid %d (drmcrit.test) drm file ino %d handle %d", f.pid, f.inoB, f.hB),
		fmt.Sprintf("shared with pid %d (drmcrit.test) drm file ino %d handle %d", f.pid, f.inoA, f.hA1),
		fmt.Sprintf("shared with pid %d (drmcrit.test) dma-buf ino %d", f.pid, f.inoDmaB),
		fmt.Sprintf("context %d: priority 0, submitted 1, completed 0", f.ctxB),
		"long-running job fence",
		"preempted at command 1/1, iteration",
		fmt.Sprintf("/5000 [compute], BOs %d,%d", f.srcBo, f.dstBo),
		"syncobj 1: fence of job",
		fmt.Sprintf("fd ? → dma-buf ino %d: BO %d (8 KiB, VRAM, in drm-pages-1.img@", f.inoDmaB, f.sharedBo),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q", want)
		}
	}
	// BOs that are not shared say nothing about sharing.
	if strings.Count(out, "shared with") != 4 {
		t.Errorf("%d 'shared with' lines, want 4 (2 per holder of the shared BO)", strings.Count(out, "shared with"))
	}
}

// TestShowJSON: the JSON follows the documented schema and carries the
// same facts.
func TestShowJSON(t *testing.T) {
	f := richFixture(t)
	for _, args := range [][]string{{"show", "--json", f.dir}, {"show", f.dir, "-json"}} {
		code, out, errs := runCmd(t, nil, args...)
		if code != 0 {
			t.Fatalf("%v: status %d: %s", args, code, errs)
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		for _, k := range []string{"schema_version", "dir", "source", "inventory", "processes", "drm_files", "dma_bufs", "bos", "warnings"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("JSON lacks %q", k)
			}
		}
		var v View
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if v.SchemaVersion != SchemaVersion || v.Source != SourceInventory || !v.Inventory.Complete {
			t.Errorf("header %d %q %+v", v.SchemaVersion, v.Source, v.Inventory)
		}
		if len(v.Processes) != 1 || v.Processes[0].Pid != int32(f.pid) || len(v.Processes[0].Fds) != 3 {
			t.Fatalf("processes %+v", v.Processes)
		}
		for _, fd := range v.Processes[0].Fds {
			if fd.Fd != nil {
				t.Errorf("fd %d known without CRIU images", *fd.Fd)
			}
		}
		if !strings.Contains(out, `"fd": null`) {
			t.Error(`unknown fds are not "fd": null`)
		}
		if len(v.Files) != 2 || len(v.DmaBufs) != 1 || len(v.Bos) != 4 {
			t.Fatalf("%d files, %d dma-bufs, %d BOs", len(v.Files), len(v.DmaBufs), len(v.Bos))
		}
		var fa, fb *FileView
		for i := range v.Files {
			switch v.Files[i].Inode {
			case f.inoA:
				fa = &v.Files[i]
			case f.inoB:
				fb = &v.Files[i]
			}
		}
		if fa == nil || fb == nil {
			t.Fatal("files A and B not found")
		}
		h := fa.Handles[0]
		if h.Handle != uint32(f.hA1) || h.BoID != f.sharedBo || h.Size != 2*page || h.Domain != "VRAM" || h.Flags != "0x3" || !strings.HasPrefix(h.Contents, "drm-pages-1.img@") {
			t.Errorf("handle %+v", h)
		}
		if len(h.Mappings) != 1 || h.Mappings[0].VA != "0x100000" || h.Mappings[0].Size != 2*page {
			t.Errorf("mappings %+v", h.Mappings)
		}
		if len(h.SharedWith) != 2 || h.SharedWith[0].Kind != KindDrmFile || h.SharedWith[0].Inode != f.inoB ||
			h.SharedWith[1].Kind != KindDmaBuf || h.SharedWith[1].Inode != f.inoDmaB {
			t.Errorf("shared with %+v", h.SharedWith)
		}
		if len(fb.Contexts) != 1 || len(fb.Contexts[0].Jobs) != 1 {
			t.Fatalf("contexts of B %+v", fb.Contexts)
		}
		j := fb.Contexts[0].Jobs[0]
		if j.State != "preempted" || !j.LongRunning || j.Iterations != 5000 || j.ProgressIter == 0 ||
			fmt.Sprint(j.Commands) != "[compute]" || fmt.Sprint(j.BoIDs) != fmt.Sprint([]uint64{f.srcBo, f.dstBo}) {
			t.Errorf("job %+v", j)
		}
		if d := v.DmaBufs[0]; d.Inode != f.inoDmaB || d.BoID != f.sharedBo || d.Size != 2*page {
			t.Errorf("dma-buf %+v", d)
		}
		for _, b := range v.Bos {
			if b.BoID == f.sharedBo {
				if b.DmabufInode != f.inoDmaB || len(b.Holders) != 3 {
					t.Errorf("shared BO %+v", b)
				}
			} else if len(b.Holders) != 1 {
				t.Errorf("BO %d has holders %+v", b.BoID, b.Holders)
			}
		}
		if len(v.Warnings) != 0 {
			t.Errorf("warnings %v", v.Warnings)
		}
	}
}

// TestSchemaDocumented: every JSON field name of the schema appears in
// `drmcrit help json` and in README.md.
func TestSchemaDocumented(t *testing.T) {
	code, help, _ := runCmd(t, nil, "help", "json")
	if code != 0 || !strings.Contains(help, `"schema_version": 2`) {
		t.Fatalf("help json: %d\n%s", code, help)
	}
	readme, err := os.ReadFile("README.md")
	must(t, err)
	f := richFixture(t)
	_, out, _ := runCmd(t, nil, "show", "--json", f.dir)
	var keys func(any)
	seen := map[string]bool{}
	keys = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, v := range x {
				seen[k] = true
				keys(v)
			}
		case []any:
			for _, v := range x {
				keys(v)
			}
		}
	}
	var raw any
	must(t, json.Unmarshal([]byte(out), &raw))
	keys(raw)
	for k := range seen {
		q := `"` + k + `"`
		if !strings.Contains(help, q) {
			t.Errorf("help json does not document %s", q)
		}
		if !strings.Contains(string(readme), q) {
			t.Errorf("README.md does not document %s", q)
		}
	}
}

// TestShowErrors: directories that are not checkpoints or have no GPU
// state, missing inventory, unreadable images.
func TestShowErrors(t *testing.T) {
	empty := t.TempDir()
	noGPU := t.TempDir()
	must(t, os.WriteFile(filepath.Join(noGPU, "inventory.img"), []byte("garbage!"), 0o600))
	f := richFixture(t)
	noInv := copyDir(t, f.dir)
	must(t, os.Remove(filepath.Join(noInv, "drm-inventory.img")))
	badInv := copyDir(t, f.dir)
	must(t, os.WriteFile(filepath.Join(badInv, "drm-inventory.img"), []byte{0xff, 0xff, 0xff}, 0o600))
	notDir := filepath.Join(noGPU, "inventory.img")
	for _, tc := range []struct {
		dir, want string
	}{
		{empty, "no CRIU or DRM images in " + empty},
		{noGPU, "checkpoint has no GPU state (no drm-inventory.img)"},
		{noInv, "DRM images without drm-inventory.img: the dump did not finish"},
		{badInv, "image drm-inventory.img: "},
		{filepath.Join(empty, "nope"), "no such file or directory"},
		{notDir, "is not a directory"},
	} {
		for _, cmd := range []string{"show", "verify", "graph"} {
			code, out, errs := runCmd(t, nil, cmd, tc.dir)
			if code != 1 || !strings.Contains(errs, tc.want) {
				t.Errorf("%s %s: status %d, stderr %q, want %q (stdout %q)", cmd, tc.dir, code, errs, tc.want, out)
			}
		}
	}
	// A garbled drm file image: show still prints the rest, and its
	// header gives the verdict: the problems a restore refuses.
	garbled := copyDir(t, f.dir)
	must(t, os.WriteFile(filepath.Join(garbled, fmt.Sprintf("drm-file-%d.img", f.inoB)), []byte{0x0a, 0xff, 0x01}, 0o600))
	code, out, errs := runCmd(t, nil, "show", garbled)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("verdict: 2 PROBLEMS, restore refuses it (drmcrit verify %s lists them)", garbled)) ||
		!strings.Contains(out, fmt.Sprintf("PROBLEM: drm-file-%d.img: image drm-file-%d.img:", f.inoB, f.inoB)) ||
		!strings.Contains(out, fmt.Sprintf("PROBLEM: drm-file-%d.img: changed after the dump", f.inoB)) ||
		!strings.Contains(out, fmt.Sprintf("drm file ino %d", f.inoA)) {
		t.Errorf("show of a dir with a garbled image: %d %s\n%s", code, errs, out)
	}
}

// TestUsage: usage mistakes exit with status 2.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"show"}, {"show", "a", "b"}, {"show", "--bogus", "x"},
		{"verify"}, {"graph"}, {"decode"}, {"encode"}, {"help", "nope"},
		{"graph", "-o", "x.pdf", "somedir"}, {"decode", "-i", "a.img", "b.img"},
	} {
		code, _, errs := runCmd(t, nil, args...)
		if code != 2 || !strings.Contains(errs, "usage:") {
			t.Errorf("%q: status %d, stderr %q", args, code, errs)
		}
	}
	for _, args := range [][]string{{"help"}, {"help", "verify"}, {"help", "json"}, {"--help"}, {"show", "-h"}} {
		if code, out, errs := runCmd(t, nil, args...); code != 0 || out == "" {
			t.Errorf("%q: status %d, %q %q", args, code, out, errs)
		}
	}
}
