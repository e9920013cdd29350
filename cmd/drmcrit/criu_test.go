package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// These tests read real CRIU images. Those made by criu need root and the
// criu that `make criu` provisions as build/bin/criu; without them they
// are skipped, but TestCriuTestdata always runs on the real dump kept in
// testdata/ (see testdata/README).

const helperEnv = "DRMCRIT_TEST_GPU_HELPER"

// gpuHelper is a task for criu to dump with GPU state: it serves its own
// kernelsim (so that every socket's peer is inside the dumped tree and
// criu can dump the sockets without the plugin), opens two drm files,
// shares a BO between them through a dma-buf it keeps open, says it is
// ready and waits to be killed.
func gpuHelper() int {
	dir, ready := os.Getenv(helperEnv), os.Getenv(helperEnv+"_READY")
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "gpu helper:", err)
		return 1
	}
	k, err := kernelsim.New(kernelsim.Config{})
	if err != nil {
		return fail(err)
	}
	if _, err := kernelsim.Serve(k, dir); err != nil {
		return fail(err)
	}
	a, err := libdrm.Open(kernelsim.RenderNodePath(dir, 128))
	if err != nil {
		return fail(err)
	}
	b, err := libdrm.Open(kernelsim.RenderNodePath(dir, 128))
	if err != nil {
		return fail(err)
	}
	h, err := a.BOCreate(2*page, uapi.Domain_DOMAIN_VRAM, 0x1, 0)
	if err != nil {
		return fail(err)
	}
	if err := a.Write(h, 0, []byte("drmcrit test pattern")); err != nil {
		return fail(err)
	}
	if err := a.VMMap(h, 0, 0x100000, 2*page, 0); err != nil {
		return fail(err)
	}
	fd, err := a.ExportDmaBuf(h)
	if err != nil {
		return fail(err)
	}
	hb, err := b.ImportDmaBuf(fd)
	if err != nil {
		return fail(err)
	}
	if _, err := b.CtxCreate(0); err != nil {
		return fail(err)
	}
	line := fmt.Sprintf("%d %d %d %d %d\n", a.FD(), b.FD(), fd, h, hb)
	if err := os.WriteFile(ready, []byte(line), 0o644); err != nil {
		return fail(err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	must(t, err)
	root := filepath.Dir(filepath.Dir(wd))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s", wd)
	}
	return root
}

// provisionedCriu returns the provisioned criu; without it (or root) the
// test fails: the crit path must run against real CRIU images.
func provisionedCriu(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("criu dump needs root")
	}
	criu := filepath.Join(repoRoot(t), "build", "bin", "criu")
	if _, err := os.Stat(criu); err != nil {
		t.Fatalf("%s missing (make criu provisions it; make test does): %v", criu, err)
	}
	return criu
}

// criuDump runs criu dump of pid into dir, leaving it running.
func criuDump(t *testing.T, criu string, pid int, dir string) {
	t.Helper()
	cmd := exec.Command(criu, "dump", "-t", strconv.Itoa(pid), "-D", dir, "--shell-job", "--leave-running", "-v4", "-o", "dump.log")
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
		lines := strings.Split(string(log), "\n")
		t.Fatalf("criu dump: %v: %s\n...%s", err, out, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// startDetached starts a command in its own session with stdio on
// /dev/null (and stdout on a file when out is set), killed at the end.
func startDetached(t *testing.T, env []string, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	must(t, cmd.Start())
	pid := cmd.Process.Pid
	go cmd.Wait()
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// TestCriuNoGPU: a real criu dump of a process without GPU state: drmcrit
// reads CRIU's images with crit and says there is no GPU state.
func TestCriuNoGPU(t *testing.T) {
	criu := provisionedCriu(t)
	pid := startDetached(t, nil, "sleep", "100")
	dir := t.TempDir()
	criuDump(t, criu, pid, dir)
	tree, err := readCriuTree(dir)
	must(t, err)
	p := tree.proc(int32(pid))
	if p == nil || p.comm != "sleep" {
		t.Fatalf("CRIU tree %+v lacks pid %d (sleep)", tree.procs, pid)
	}
	for _, cmd := range []string{"show", "verify", "graph"} {
		code, _, errs := runCmd(t, nil, cmd, dir)
		want := fmt.Sprintf("checkpoint has no GPU state (no drm-inventory.img); CRIU images hold pid %d (sleep, ", pid)
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("%s: %d %q, want %q", cmd, code, errs, want)
		}
	}
}

// TestCriuWithGPU: a real criu dump of a task holding drm files and a
// dma-buf, with the plugin's images written for the same task by
// drmcore's dump hooks: show ties fd numbers from CRIU's images to the
// plugin's drm files and dma-bufs by socket inode.
func TestCriuWithGPU(t *testing.T) {
	criu := provisionedCriu(t)
	dir := makeGPUDump(t, criu)
	checkGPUDump(t, dir)
	if os.Getenv("DRMCRIT_WRITE_TESTDATA") != "" {
		writeTestdata(t, dir, filepath.Join("testdata", "gpudump"))
	}
}

// writeTestdata keeps a dump's metadata images as testdata: CRIU's
// memory images (pages, pagemap, mm) and logs are left out.
func writeTestdata(t *testing.T, src, dst string) {
	must(t, os.RemoveAll(dst))
	must(t, os.MkdirAll(dst, 0o755))
	ents, err := os.ReadDir(src)
	must(t, err)
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".img") {
			continue
		}
		if strings.HasPrefix(n, "pages-") || strings.HasPrefix(n, "pagemap-") || strings.HasPrefix(n, "mm-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, n))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dst, n), b, 0o644))
	}
}

// makeGPUDump dumps a gpuHelper with criu and the plugin's hooks.
func makeGPUDump(t *testing.T, criu string) string {
	t.Helper()
	rt, err := os.MkdirTemp("", "ksim")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(rt) })
	ready := filepath.Join(t.TempDir(), "ready")
	self, err := os.Executable()
	must(t, err)
	pid := startDetached(t, []string{helperEnv + "=" + rt, helperEnv + "_READY=" + ready}, self, "-test.run=^$")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the GPU helper did not get ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	dir := t.TempDir()
	// The plugin's part first (criu would call it from its own hooks),
	// then criu's.
	var inodes []uint64
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	must(t, err)
	for _, e := range ents {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(target, "socket:["); ok {
			ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
			must(t, err)
			inodes = append(inodes, ino)
		}
	}
	pluginDump(t, rt, dir, pid, inodes)
	criuDump(t, criu, pid, dir)
	return dir
}

// checkGPUDump checks show, verify and graph on a gpuHelper dump.
func checkGPUDump(t *testing.T, dir string) {
	t.Helper()
	code, out, errs := runCmd(t, nil, "verify", dir)
	if code != 0 {
		t.Errorf("verify: %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCmd(t, nil, "show", dir)
	if code != 0 {
		t.Fatalf("show: %d %s", code, errs)
	}
	t.Logf("\n%s", out)
	if strings.Contains(out, `"?"`) || strings.Contains(out, "fd ?") || strings.Contains(out, "warning") {
		t.Errorf("show of a dump with CRIU images lacks fd numbers or warns:\n%s", out)
	}
	code, js, errs := runCmd(t, nil, "show", "--json", dir)
	if code != 0 {
		t.Fatalf("show --json: %d %s", code, errs)
	}
	var v View
	must(t, json.Unmarshal([]byte(js), &v))
	if v.Source != SourceCriu || len(v.Files) != 2 || len(v.DmaBufs) != 1 || len(v.Bos) != 1 {
		t.Fatalf("source %q, %d files, %d dma-bufs, %d BOs", v.Source, len(v.Files), len(v.DmaBufs), len(v.Bos))
	}
	var gpu *ProcessView
	for i := range v.Processes {
		if len(v.Processes[i].Fds) > 0 {
			gpu = &v.Processes[i]
		}
	}
	// The task holds each drm file once and the dma-buf at least once
	// (its in-process kernel keeps a reference to the same open file).
	if gpu == nil || len(gpu.Fds) < 3 || gpu.Ppid == nil || gpu.Comm == "" {
		t.Fatalf("processes %+v", v.Processes)
	}
	kinds := map[string]int{}
	for _, fd := range gpu.Fds {
		if fd.Fd == nil {
			t.Fatalf("fd of inode %d unknown", fd.Inode)
		}
		kinds[fd.Kind]++
	}
	if kinds[KindDrmFile] != 2 || kinds[KindDmaBuf] < 1 {
		t.Errorf("fd kinds %v", kinds)
	}
	bo := v.Bos[0]
	if len(bo.Holders) != 3 || bo.Size != 2*page || bo.DmabufInode != v.DmaBufs[0].Inode {
		t.Errorf("BO %+v", bo)
	}
	for _, h := range bo.Holders {
		if len(h.Fds) == 0 {
			t.Errorf("holder %+v without its fd", h)
		}
	}
	code, dot, _ := runCmd(t, nil, "graph", dir)
	if code != 0 || !strings.Contains(dot, fmt.Sprintf("proc_%d -> file_%d [label=\"fd %d\"]", gpu.Pid, gpu.Fds[0].Inode, *gpu.Fds[0].Fd)) {
		t.Errorf("graph: %d\n%s", code, dot)
	}
}

// TestCriuTestdata: the same checks on the dump kept in testdata/gpudump
// (made by makeGPUDump; CRIU's memory images left out), so that the crit
// path runs everywhere.
func TestCriuTestdata(t *testing.T) {
	checkGPUDump(t, filepath.Join("testdata", "gpudump"))
}

// TestCriuImagesDamaged: unreadable CRIU images make show fall back to
// the inventory with a warning, and verify report them.
func TestCriuImagesDamaged(t *testing.T) {
	src := filepath.Join("testdata", "gpudump")
	pstree, _ := filepath.Glob(filepath.Join(src, "core-*.img"))
	if len(pstree) == 0 {
		t.Fatal("no core image in testdata")
	}
	core := filepath.Base(pstree[0])
	for _, tc := range []struct {
		name, file string
		data       func([]byte) []byte
		want       string
	}{
		{"truncated pstree", "pstree.img", func(b []byte) []byte { return b[:len(b)-3] }, "pstree.img: entry of"},
		{"huge entry size", "files.img", func(b []byte) []byte {
			b = bytes.Clone(b)
			copy(b[8:], []byte{0xff, 0xff, 0xff, 0x7f})
			return b
		}, "files.img: entry of 2147483647 bytes at offset 8 runs past the end"},
		{"wrong magic", "pstree.img", func([]byte) []byte {
			b, err := os.ReadFile(filepath.Join(src, core))
			must(t, err)
			return b
		}, "CRIU image pstree.img has magic CORE, want PSTREE"},
		{"unknown magic", "fdinfo-2.img", func([]byte) []byte { return []byte{1, 2, 3, 4, 0, 0, 0, 0} }, "unknown CRIU image magic 0x04030201"},
		{"garbled entry", "fdinfo-2.img", func(b []byte) []byte {
			b = bytes.Clone(b)
			for i := 8; i < len(b); i++ {
				b[i] = 0xff
			}
			return b
		}, "fdinfo-2.img"},
		{"missing core", core, nil, "CRIU image " + core + ": open"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, src)
			path := filepath.Join(dir, tc.file)
			if tc.data == nil {
				must(t, os.Remove(path))
			} else {
				b, err := os.ReadFile(path)
				must(t, err)
				must(t, os.WriteFile(path, tc.data(b), 0o600))
			}
			code, out, errs := runCmd(t, nil, "show", dir)
			if code != 0 || !strings.Contains(out, "warning: CRIU images unusable (") || !strings.Contains(out, tc.want) || !strings.Contains(out, "fd ? → drm file") {
				t.Errorf("show: %d %s\n%s", code, errs, out)
			}
			code, out, _ = runCmd(t, nil, "verify", dir)
			if code != 1 || !strings.Contains(out, "CRIU images: ") || !strings.Contains(out, tc.want) {
				t.Errorf("verify: %d\n%s", code, out)
			}
		})
	}
}

// TestCriuInventoryPidNotInPstree: the inventory names a pid CRIU did not
// dump.
func TestCriuInventoryPidNotInPstree(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "gpudump"))
	inv := &images.Inventory{}
	readImg(t, dir, images.InventoryName, inv)
	inv.Processes[0].Pid = 99999999
	writeImg(t, dir, images.InventoryName, inv)
	code, out, _ := runCmd(t, nil, "verify", dir)
	if code != 1 || !strings.Contains(out, "drm-inventory.img: processes[0]: pid 99999999 (drmcrit.test) is not in CRIU's pstree.img") {
		t.Errorf("verify: %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, nil, "show", dir)
	if code != 0 || !strings.Contains(out, "warning: pid 99999999 (drmcrit.test) of the GPU inventory is not in CRIU's pstree.img") {
		t.Errorf("show: %d\n%s", code, out)
	}
}
