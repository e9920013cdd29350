// Package e2e runs real criu with the DRM plugin on real gpuload processes
// served by a real kernelsimd: dump mid-run, kill, restore, and compare the
// result with the one an uninterrupted run gives.
//
// The tests need root and a criu >= 4.0 (`make criu` provisions one as
// build/bin/criu). Without them the tests fail: they are never skipped.
//
// DRMCR_KEEP_DUMPS=DIR keeps every checkpoint directory under DIR.
package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"drmcr/internal/crrun"
)

var (
	repo       string // repository root
	binDir     string // built binaries
	criu       crrun.Criu
	kernelsimd string
	gpuload    string
	drmcrit    string
)

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

func setup() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	repo = filepath.Dir(filepath.Dir(wd))
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return fmt.Errorf("repository root not found from %s", wd)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the end-to-end tests run criu and need root")
	}
	criuBin := filepath.Join(repo, "build", "bin", "criu")
	if _, err := os.Stat(criuBin); err != nil {
		return fmt.Errorf("%s missing: run `make criu` first (make test does): %w", criuBin, err)
	}
	if binDir, err = os.MkdirTemp("", "drmcr-e2e"); err != nil {
		return err
	}
	libDir := filepath.Join(binDir, "lib")
	kernelsimd = filepath.Join(binDir, "kernelsimd")
	gpuload = filepath.Join(binDir, "gpuload")
	drmcrit = filepath.Join(binDir, "drmcrit")
	for _, b := range [][]string{
		{"build", "-o", drmcrit, "./cmd/drmcrit"},
		{"build", "-o", filepath.Join(binDir, "drmdemo"), "./cmd/drmdemo"},
		{"build", "-o", kernelsimd, "./cmd/kernelsimd"},
		{"build", "-o", gpuload, "./cmd/gpuload"},
	} {
		cmd := exec.Command("go", b...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(b, " "), err, out)
		}
	}
	if err := crrun.BuildPlugin(repo, libDir); err != nil {
		return err
	}
	criu = crrun.Criu{Bin: criuBin, LibDir: libDir}
	return nil
}

// startDaemon starts a kernelsimd for the test.
func startDaemon(t *testing.T, args ...string) *crrun.Daemon {
	t.Helper()
	d, err := crrun.StartDaemon(kernelsimd, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kernelsimd log:\n%s", d.Log())
		}
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// waitIdle waits until the daemon holds nothing: whatever the workload
// had, dumped or restored, is gone once it exited.
func waitIdle(t *testing.T, d *crrun.Daemon) {
	t.Helper()
	if err := d.WaitIdle(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// startWorkload starts gpuload detached against the daemon.
func startWorkload(t *testing.T, d *crrun.Daemon, scenario string, args ...string) *crrun.Workload {
	t.Helper()
	w, err := crrun.StartWorkload(gpuload, d, t.TempDir(), scenario, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Kill()
		if t.Failed() {
			t.Logf("gpuload log:\n%s", w.Log())
		}
	})
	return w
}

func waitStep(t *testing.T, w *crrun.Workload, n int) {
	t.Helper()
	if err := w.WaitStep(n, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

func result(t *testing.T, w *crrun.Workload) string {
	t.Helper()
	res, err := w.WaitResult(120 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func expected(t *testing.T, w *crrun.Workload) string {
	t.Helper()
	res, err := w.Expected()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// imagesDir is a new checkpoint directory, kept under DRMCR_KEEP_DUMPS.
func imagesDir(t *testing.T) string {
	t.Helper()
	keep := os.Getenv("DRMCR_KEEP_DUMPS")
	if keep == "" {
		return t.TempDir()
	}
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	dir := filepath.Join(keep, name+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dump checkpoints the workload's process tree.
func dump(t *testing.T, d *crrun.Daemon, w *crrun.Workload, extra ...string) (string, string, error) {
	t.Helper()
	img := imagesDir(t)
	c := criu
	c.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	log, err := c.Run(img, "dump", append([]string{"-t", strconv.Itoa(w.PID)}, extra...)...)
	return img, log, err
}

// restore restores a dumped tree, detached.
func restore(t *testing.T, d *crrun.Daemon, img string) (string, error) {
	t.Helper()
	c := criu
	c.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	return c.Run(img, "restore", "-d")
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	if err := crrun.WaitGone(pids, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

func pluginLines(log string) string { return crrun.PluginLines(log) }

// runDrmcrit runs drmcrit and returns its output and exit code.
func runDrmcrit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(drmcrit, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("drmcrit %v: %v", args, err)
	return "", -1
}

// checkImages runs drmcrit on a real checkpoint: verify passes, show names
// the workload's processes, and verify catches damaged BO contents. It
// returns what show printed.
func checkImages(t *testing.T, img string, pids []int) string {
	t.Helper()
	if out, code := runDrmcrit(t, "verify", img); code != 0 {
		t.Fatalf("drmcrit verify of a good checkpoint: exit %d\n%s", code, out)
	}
	show, code := runDrmcrit(t, "show", img)
	if code != 0 {
		t.Fatalf("drmcrit show: exit %d\n%s", code, show)
	}
	if !strings.Contains(show, fmt.Sprintf("pid %d (gpuload)", pids[0])) {
		t.Errorf("drmcrit show does not name pid %d:\n%s", pids[0], show)
	}
	// info: criu's images and verify's verdict; x fds: criu's fd list
	// with the GPU files named.
	info, code := runDrmcrit(t, "info", img)
	if code != 0 || !strings.Contains(info, "image format v2; plugins restore requires: drm_plugin") || !strings.Contains(info, "verdict:   OK") {
		t.Errorf("drmcrit info: exit %d\n%s", code, info)
	}
	fds, code := runDrmcrit(t, "x", img, "fds")
	if code != 0 || !strings.Contains(fds, fmt.Sprintf("%d (gpuload)\n", pids[0])) || !regexp.MustCompile(`\)\]  \[drm file: renderD12[89] (amdgpu|xe)`).MatchString(fds) {
		t.Errorf("drmcrit x fds: exit %d\n%s", code, fds)
	}
	// Damage a copy: flip one byte of a BO's contents.
	bad := t.TempDir()
	if err := exec.Command("cp", "-a", img+"/.", bad).Run(); err != nil {
		t.Fatal(err)
	}
	pages, _ := filepath.Glob(filepath.Join(bad, "drm-pages-*.img"))
	if len(pages) == 0 {
		t.Fatal("checkpoint has no BO contents")
	}
	f, err := os.OpenFile(pages[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 0)
	b[0] ^= 0xff
	f.WriteAt(b, 0)
	f.Close()
	out, code := runDrmcrit(t, "verify", bad)
	if code != 1 || !strings.Contains(out, "does not match its xxh3-128 checksum") {
		t.Errorf("drmcrit verify of damaged contents: exit %d\n%s", code, out)
	}
	return show
}
