package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGraph: the DOT has a node per process, drm file, dma-buf and BO,
// and the fd, handle and carries edges of the sharing.
func TestGraph(t *testing.T) {
	f := richFixture(t)
	code, out, errs := runCmd(t, nil, "graph", f.dir)
	if code != 0 {
		t.Fatalf("graph: %d %s", code, errs)
	}
	for _, want := range []string{
		"digraph drm_checkpoint {",
		fmt.Sprintf("proc_%d [label=", f.pid),
		fmt.Sprintf("file_%d [label=\"drm file ino %d\\nrenderD128 amdgpu\"", f.inoA, f.inoA),
		fmt.Sprintf("dmabuf_%d [label=", f.inoDmaB),
		fmt.Sprintf("bo_%d [label=\"BO %d\\n8 KiB VRAM", f.sharedBo, f.sharedBo),
		fmt.Sprintf("proc_%d -> file_%d [label=\"fd ?\"]", f.pid, f.inoA),
		fmt.Sprintf("proc_%d -> dmabuf_%d", f.pid, f.inoDmaB),
		fmt.Sprintf("file_%d -> bo_%d [label=\"handle %d\"]", f.inoA, f.sharedBo, f.hA1),
		fmt.Sprintf("file_%d -> bo_%d [label=\"handle %d\"]", f.inoB, f.sharedBo, f.hB),
		fmt.Sprintf("dmabuf_%d -> bo_%d", f.inoDmaB, f.sharedBo),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("graph lacks %q\n%s", want, out)
		}
	}
	if strings.Count(out, " -> ") != 3+5+1 {
		t.Errorf("%d edges, want 9", strings.Count(out, " -> "))
	}
	if !strings.HasSuffix(out, "}\n") {
		t.Error("graph does not end with }")
	}

	// -o FILE.dot writes the same DOT.
	dot := filepath.Join(t.TempDir(), "g.dot")
	if code, _, errs := runCmd(t, nil, "graph", "-o", dot, f.dir); code != 0 {
		t.Fatal(errs)
	}
	b, err := os.ReadFile(dot)
	must(t, err)
	if string(b) != out {
		t.Error("graph -o g.dot differs from stdout")
	}
}

// TestGraphRender: .svg and .png through dot, and a clear error without
// it.
func TestGraphRender(t *testing.T) {
	f := richFixture(t)
	tmp := t.TempDir()
	if _, err := exec.LookPath("dot"); err == nil {
		for ext, magic := range map[string][]byte{".svg": []byte("<svg"), ".png": []byte("\x89PNG")} {
			out := filepath.Join(tmp, "g"+ext)
			if code, _, errs := runCmd(t, nil, "graph", "-o", out, f.dir); code != 0 {
				t.Fatalf("graph -o %s: %s", out, errs)
			}
			b, err := os.ReadFile(out)
			must(t, err)
			if !bytes.Contains(b[:min(len(b), 512)], magic) {
				t.Errorf("%s does not look like %s", out, ext)
			}
		}
	} else {
		t.Logf("Graphviz not installed: rendering not tested (%v)", err)
	}
	old := dotBinary
	dotBinary = "no-such-dot-program"
	defer func() { dotBinary = old }()
	code, _, errs := runCmd(t, nil, "graph", "-o", filepath.Join(tmp, "x.svg"), f.dir)
	if code != 1 || !strings.Contains(errs, "needs Graphviz's dot, which is not installed") {
		t.Errorf("graph without dot: %d %q", code, errs)
	}
}
