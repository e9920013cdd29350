// Package e2e runs real criu with the DRM plugin on real gpuload processes
// served by a real kernelsimd: dump mid-run, kill, restore, and compare the
// result with the one an uninterrupted run gives.
//
// The tests need root and a criu >= 4.0 (`make criu` provisions one as
// build/bin/criu). Without them the tests fail: they are never skipped.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
)

var (
	repo       string // repository root
	binDir     string // built binaries
	libDir     string // holds drm_plugin.so
	criuBin    string
	kernelsimd string
	gpuload    string
)

func TestMain(m *testing.M) {
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	if code == 0 {
		code = m.Run()
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

func setup() (int, error) {
	wd, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	repo = filepath.Dir(filepath.Dir(wd))
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return 1, fmt.Errorf("repository root not found from %s", wd)
	}
	if os.Geteuid() != 0 {
		return 1, fmt.Errorf("the end-to-end tests run criu and need root")
	}
	criuBin = filepath.Join(repo, "build", "bin", "criu")
	if _, err := os.Stat(criuBin); err != nil {
		return 1, fmt.Errorf("%s missing: run `make criu` first (make test does): %w", criuBin, err)
	}
	if binDir, err = os.MkdirTemp("", "drmcr-e2e"); err != nil {
		return 1, err
	}
	libDir = filepath.Join(binDir, "lib")
	kernelsimd = filepath.Join(binDir, "kernelsimd")
	gpuload = filepath.Join(binDir, "gpuload")
	for _, b := range [][]string{
		{"build", "-o", kernelsimd, "./cmd/kernelsimd"},
		{"build", "-o", gpuload, "./cmd/gpuload"},
		{"build", "-buildmode=c-shared", "-o", filepath.Join(libDir, "drm_plugin.so"), "./plugin"},
	} {
		cmd := exec.Command("go", b...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("go %s: %v\n%s", strings.Join(b, " "), err, out)
		}
	}
	os.Remove(filepath.Join(libDir, "drm_plugin.h"))
	return 0, nil
}

// daemon is a kernelsimd process for one test.
type daemon struct {
	dir string
	cmd *exec.Cmd
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "ksim-e2e")
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "kernelsimd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kernelsimd, append([]string{"-runtime-dir", dir}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{dir: dir, cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("kernelsimd did not stop on SIGTERM")
		}
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("kernelsimd log:\n%s", b)
		}
		os.RemoveAll(dir)
	})
	waitFor(t, 10*time.Second, "kernelsimd control socket", func() bool {
		_, err := os.Stat(kernelsim.ControlPath(dir))
		return err == nil
	})
	return d
}

// debug returns the daemon's debug view.
func (d *daemon) debug(t *testing.T) string {
	c, err := ctl.Dial(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	js, err := c.DebugJSON()
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// workload is one detached gpuload run.
type workload struct {
	t        *testing.T
	scenario string
	args     []string
	dir      string // result, progress and logs
	pid      int
}

// startWorkload starts gpuload detached (own session, stdio on files), the
// way a process that criu will dump must be started.
func startWorkload(t *testing.T, d *daemon, scenario string, args ...string) *workload {
	t.Helper()
	w := &workload{t: t, scenario: scenario, args: args, dir: t.TempDir()}
	out, err := os.Create(filepath.Join(w.dir, "gpuload.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cmdArgs := append([]string{"-scenario", scenario, "-runtime-dir", d.dir,
		"-progress", w.path("progress"), "-result", w.path("result")}, args...)
	cmd := exec.Command(gpuload, cmdArgs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.pid = cmd.Process.Pid
	go cmd.Wait() // reap when it exits
	t.Cleanup(func() {
		syscall.Kill(w.pid, syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(w.path("gpuload.log"))
			t.Logf("gpuload log:\n%s", b)
		}
	})
	return w
}

func (w *workload) path(name string) string { return filepath.Join(w.dir, name) }

// waitStep waits until the workload has reported step n.
func (w *workload) waitStep(n int) {
	w.t.Helper()
	waitFor(w.t, 60*time.Second, fmt.Sprintf("gpuload step %d", n), func() bool {
		b, _ := os.ReadFile(w.path("progress"))
		for _, line := range strings.Split(string(b), "\n") {
			var i, total int
			if _, err := fmt.Sscanf(line, "step %d/%d", &i, &total); err == nil && i >= n {
				return true
			}
		}
		return false
	})
}

// result waits for the workload's result line.
func (w *workload) result() string {
	w.t.Helper()
	var res []byte
	waitFor(w.t, 120*time.Second, "gpuload result", func() bool {
		res, _ = os.ReadFile(w.path("result"))
		return len(res) > 0
	})
	return strings.TrimSpace(string(res))
}

// expected is the result line of an uninterrupted run.
func (w *workload) expected() string {
	w.t.Helper()
	out, err := exec.Command(gpuload, append([]string{"-expect", w.scenario}, w.args...)...).CombinedOutput()
	if err != nil {
		w.t.Fatalf("gpuload -expect %s: %v\n%s", w.scenario, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (w *workload) alive() bool { return syscall.Kill(w.pid, 0) == nil }

// tree returns the pids of the workload's process tree.
func (w *workload) tree() []int {
	pids := []int{w.pid}
	for i := 0; i < len(pids); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pids[i]))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for _, s := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(s); err == nil {
					pids = append(pids, n)
				}
			}
		}
	}
	return pids
}

// waitGone waits until none of pids exists, zombies included: criu can
// only restore a tree into free pids, and orphans are reaped by pid 1,
// which on some machines takes seconds.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("pids %v to be gone", pids), func() bool {
		for _, p := range pids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil {
				return false
			}
		}
		return true
	})
}

// criu runs the criu wrapper with the plugin's lib dir, logging into the
// images directory. It returns criu's error and its log.
func runCriu(t *testing.T, d *daemon, imgDir string, args ...string) (string, error) {
	t.Helper()
	action := args[0]
	logName := action + ".log"
	full := append([]string{action, "-D", imgDir, "--lib", libDir, "-v4", "-o", logName}, args[1:]...)
	cmd := exec.Command(criuBin, full...)
	cmd.Env = append(os.Environ(), "KERNELSIM_RUNTIME_DIR="+d.dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	log, _ := os.ReadFile(filepath.Join(imgDir, logName))
	if err != nil {
		return string(log), fmt.Errorf("criu %s: %v: %s", action, err, out.String())
	}
	return string(log), nil
}

// dump checkpoints the workload's process tree.
func dump(t *testing.T, d *daemon, w *workload, extra ...string) (string, string, error) {
	t.Helper()
	imgDir := t.TempDir()
	log, err := runCriu(t, d, imgDir, append([]string{"dump", "-t", strconv.Itoa(w.pid)}, extra...)...)
	return imgDir, log, err
}

// restore restores a dumped tree, detached.
func restore(t *testing.T, d *daemon, imgDir string) (string, error) {
	t.Helper()
	return runCriu(t, d, imgDir, "restore", "-d")
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pluginLines returns the plugin's lines of a criu log.
func pluginLines(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "drm_plugin") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
