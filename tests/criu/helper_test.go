package criu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"drmcr/internal/crrun"
)

// fakeCriu runs the fakecriu driver over the shipped plugin and returns
// its step lines (stdout) and the plugin's log (stderr).
func fakeCriu(t *testing.T, env []string, steps ...string) (string, string) {
	t.Helper()
	bin := artifacts(t)
	cmd := exec.Command(filepath.Join(bin, "fakecriu"), append([]string{filepath.Join(bin, "lib", "drm_plugin.so"), t.TempDir()}, steps...)...)
	cmd.Env = env
	var out, log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("fakecriu %v: %v\nstdout:\n%s\nstderr:\n%s", steps, err, out.String(), log.String())
	}
	return out.String(), log.String()
}

func mustStep(t *testing.T, out, step string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)^` + step + `$`).MatchString(out) {
		t.Errorf("no step line %q in:\n%s", step, out)
	}
}

// TestNoHelperWithoutGPU: without kernelsimd no helper process starts, the
// hooks answer -ENOTSUP (so later plugins in criu's chain still get them)
// and the process that loaded the plugin stays single-threaded.
func TestNoHelperWithoutGPU(t *testing.T) {
	out, log := fakeCriu(t, []string{"KERNELSIM_RUNTIME_DIR=" + t.TempDir()},
		"init", "0", "threads", "pause", "1", "resume", "1", "dumpsk", "0", "12345", "exit", "0", "0", "threads")
	mustStep(t, out, "init 0: 0")
	mustStep(t, out, "pause 1: -95")
	mustStep(t, out, "resume 1: -95")
	mustStep(t, out, "dumpsk 0 12345: -95")
	if strings.Count(out, "threads: 1\n") != 2 {
		t.Errorf("thread counts:\n%s", out)
	}
	if strings.Contains(log, "helper process") {
		t.Errorf("a helper started without kernelsimd:\n%s", log)
	}
}

// TestHelperDies: if the helper dies between hooks, the next hooks fail
// (so criu fails the dump) with a message saying so, and kernelsimd
// resumes what the helper had paused: the workload finishes correctly.
func TestHelperDies(t *testing.T) {
	bin := artifacts(t)
	d, err := crrun.StartDaemon(filepath.Join(bin, "kernelsimd"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	w, err := crrun.StartWorkload(filepath.Join(bin, "gpuload"), d, t.TempDir(), "longrun")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	want, err := w.Expected()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WaitStep(1, time.Minute); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(w.PID)
	out, log := fakeCriu(t, []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir},
		"init", "0", "pause", pid, "threads", "killhelper", "pause", pid, "dumpsk", "0", "12345", "exit", "0", "-1", "threads")
	mustStep(t, out, "init 0: 0")
	mustStep(t, out, "pause "+pid+": 0")
	mustStep(t, out, `killhelper [0-9]+: 0`)
	mustStep(t, out, fmt.Sprintf("pause %s: %d", pid, -int(syscall.EPIPE)))
	mustStep(t, out, fmt.Sprintf("dumpsk 0 12345: %d", -int(syscall.EPIPE)))
	if strings.Count(out, "threads: 1\n") != 2 {
		t.Errorf("thread counts:\n%s", out)
	}
	if !strings.Contains(log, "helper process") || !strings.Contains(log, "is gone") {
		t.Errorf("the plugin did not say its helper is gone:\n%s", log)
	}
	got, err := w.WaitResult(2 * time.Minute)
	if err != nil {
		t.Fatalf("%v: the workload stayed paused after its helper died\n%s", err, log)
	}
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// BenchmarkHook: one hook's round trip from criu's side through the
// helper (RESUME_DEVICES_LATE at dump: the Go side answers -ENOTSUP at
// once) against a bare 4-byte round trip with another process over a
// socketpair, measured in the same run.
func BenchmarkHook(b *testing.B) {
	bin := artifacts(b)
	d, err := crrun.StartDaemon(filepath.Join(bin, "kernelsimd"))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Stop()
	n := strconv.Itoa(max(b.N, 1000))
	cmd := exec.Command(filepath.Join(bin, "fakecriu"), filepath.Join(bin, "lib", "drm_plugin.so"), b.TempDir(),
		"pingpong", n, "init", "0", "bench", n, "pingpong", n, "exit", "0", "0")
	cmd.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("fakecriu: %v\n%s", err, out)
	}
	ns := func(step string) float64 {
		m := regexp.MustCompile(`(?m)^`+step+` [0-9]+: ([0-9]+) ns/op$`).FindAllStringSubmatch(string(out), -1)
		if len(m) == 0 {
			b.Fatalf("no %s in:\n%s", step, out)
		}
		v, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
		return v
	}
	hook, base := ns("bench"), ns("pingpong")
	b.ReportMetric(hook, "hook-ns/op")
	b.ReportMetric(base, "pingpong-ns/op")
	b.ReportMetric(hook/base, "x-pingpong")
}

// TestConfigFile: with criu's environment empty (as podman runs it), the
// plugin finds kernelsimd through its config file, in its C part (whether
// to start the helper) and in the helper (everything else).
func TestConfigFile(t *testing.T) {
	bin := artifacts(t)
	d, err := crrun.StartDaemon(filepath.Join(bin, "kernelsimd"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	w, err := crrun.StartWorkload(filepath.Join(bin, "gpuload"), d, t.TempDir(), "single")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	if err := w.WaitStep(1, time.Minute); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "drm_plugin.conf")
	if err := os.WriteFile(conf, []byte("# kernelsimd of this test\nKERNELSIM_RUNTIME_DIR = "+d.Dir+"\nDRMCR_PAUSE_TIMEOUT=7s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(w.PID)
	out, log := fakeCriu(t, []string{"DRMCR_CONFIG=" + conf}, "init", "0", "pause", pid, "exit", "0", "-1")
	mustStep(t, out, "init 0: 0")
	mustStep(t, out, "pause "+pid+": 0")
	if !strings.Contains(log, "pausing 1 drm file(s) (timeout 7s)") {
		t.Errorf("the helper did not use the config file:\n%s", log)
	}
}
