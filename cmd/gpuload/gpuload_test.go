package main

import (
	"bytes"
	"context"
	"drmcr/kernelsim/gpu"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
)

var gpuloadBin, kernelsimdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gpuload-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gpuloadBin = filepath.Join(dir, "gpuload")
	kernelsimdBin = filepath.Join(dir, "kernelsimd")
	for pkg, out := range map[string]string{"drmcr/cmd/gpuload": gpuloadBin, "drmcr/cmd/kernelsimd": kernelsimdBin} {
		cmd := exec.Command(goTool(), "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// go test puts its own go first in PATH; this is only a fallback.
	return "go"
}

// small parameters: every scenario in well under a second.
var small = []string{"-steps", "5", "-size", "16K", "-step-delay", "0", "-iterations", "2000", "-stuck-for", "200ms"}

type result struct {
	stdout, stderr string
	code           int
}

func runBin(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gpuloadBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "KERNELSIM_RUNTIME_DIR=/nonexistent-ksim")
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gpuload %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// expectLine is `gpuload -expect`.
func expectLine(t *testing.T, scenario string, params ...string) string {
	t.Helper()
	r := runBin(t, 30*time.Second, append([]string{"-expect", scenario}, params...)...)
	if r.code != 0 {
		t.Fatalf("-expect %s: exit %d: %s", scenario, r.code, r.stderr)
	}
	line := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(line, "result "+scenario+" ") || len(line) != len("result "+scenario+" ")+64 {
		t.Fatalf("-expect %s printed %q", scenario, r.stdout)
	}
	return line
}

// runScenario runs a scenario against the kernelsim in dir and checks the
// result protocol (stdout, -result file, -progress file).
func runScenario(t *testing.T, dir, scenario string, steps int, params ...string) string {
	t.Helper()
	tmp := t.TempDir()
	resFile, progFile := filepath.Join(tmp, "result"), filepath.Join(tmp, "progress")
	args := append([]string{"-scenario", scenario, "-runtime-dir", dir, "-result", resFile, "-progress", progFile}, params...)
	r := runBin(t, 30*time.Second, args...)
	if r.code != 0 {
		t.Fatalf("gpuload %v: exit %d\nstderr:\n%s", args, r.code, r.stderr)
	}
	line := strings.TrimSpace(r.stdout)
	if got, err := os.ReadFile(resFile); err != nil || string(got) != line+"\n" {
		t.Errorf("result file %q (%v), stdout %q", got, err, r.stdout)
	}
	var want strings.Builder
	for i := 0; i <= steps; i++ {
		fmt.Fprintf(&want, "step %d/%d\n", i, steps)
	}
	want.WriteString("done\n")
	if got, err := os.ReadFile(progFile); err != nil || string(got) != want.String() {
		t.Errorf("progress file %q (%v), want %q", got, err, want.String())
	}
	return line
}

var allScenarios = []string{"single", "prodcons", "released", "dmabuf-only", "longrun", "stuck", "pipeline", "handoff", "inflight", "threads", "forked", "crossdev", "mapped", "many"}

// driverScenarios need devices of given drivers (the -list column).
var driverScenarios = []struct{ name, drivers string }{{"xe-lr", "xe"}, {"xe-ooo", "xe"}, {"xcross", "xe+amdgpu"}}

// twoDevices are the devices the scenarios run on: crossdev uses both.
func twoDevices() kernelsim.Config {
	second := kernelsim.DefaultDevice()
	second.Minor = 129
	return kernelsim.Config{Devices: []kernelsim.DeviceConfig{kernelsim.DefaultDevice(), second}}
}

func TestList(t *testing.T) {
	r := runBin(t, 10*time.Second, "-list")
	if r.code != 0 {
		t.Fatalf("-list: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(allScenarios)+len(driverScenarios) {
		t.Fatalf("-list printed %d lines, want %d:\n%s", len(lines), len(allScenarios)+len(driverScenarios), r.stdout)
	}
	for i, line := range lines {
		name, drivers := "", "any"
		if i < len(allScenarios) {
			name = allScenarios[i]
		} else {
			name, drivers = driverScenarios[i-len(allScenarios)].name, driverScenarios[i-len(allScenarios)].drivers
		}
		if f := strings.Fields(line); len(f) < 3 || f[0] != name || f[1] != drivers {
			t.Errorf("-list line %d = %q, want %s, %s and a description", i, line, name, drivers)
		}
	}
}

// TestDriverScenarios runs the xe scenarios on an xe device and xcross
// between an xe and an amdgpu device both ways round; an xe scenario on
// an amdgpu device is a usage error.
func TestDriverScenarios(t *testing.T) {
	amd := kernelsim.DefaultDevice()
	xe := kernelsim.DefaultDevice()
	xe.Driver, xe.Minor = "xe", 129
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{amd, xe}})
	for _, tc := range []struct {
		name, scenario string
		params         []string
	}{
		{"xe-lr", "xe-lr", []string{"-minor", "129"}},
		{"xe-ooo", "xe-ooo", []string{"-minor", "129"}},
		{"xcross xe to amdgpu", "xcross", []string{"-minor", "129", "-minor2", "128"}},
		{"xcross amdgpu to xe", "xcross", []string{"-minor", "128", "-minor2", "129"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := append(slices.Clone(small), tc.params...)
			want := expectLine(t, tc.scenario, params...)
			if got := runScenario(t, env.Dir, tc.scenario, 5, params...); got != want {
				t.Errorf("run: %s\nexpect: %s", got, want)
			}
			waitNoLeaks(t, env)
		})
	}
	for _, args := range [][]string{{"-scenario", "xe-lr", "-minor", "128"}, {"-scenario", "xcross", "-minor", "128", "-minor2", "128"}} {
		r := runBin(t, 10*time.Second, append(args, "-runtime-dir", env.Dir)...)
		if r.code != 2 || !strings.Contains(r.stderr, "needs") {
			t.Errorf("gpuload %q: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}

func TestUsageAndErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "no scenario"},
		{[]string{"-scenario", "nope"}, 2, `unknown scenario "nope"`},
		{[]string{"-expect", "nope"}, 2, `unknown scenario "nope"`},
		{[]string{"-bogus"}, 2, "flag provided but not defined"},
		{[]string{"-scenario", "single", "extra"}, 2, "unexpected arguments"},
		{[]string{"-scenario", "single", "-size", "1000"}, 2, "-size 1000"},
		{[]string{"-scenario", "single", "-steps", "-1"}, 2, "-steps -1"},
		{[]string{"-expect", "single", "-scenario", "stuck"}, 2, "disagree"},
		{[]string{"-scenario", "single", "-role", "nope"}, 2, `no role "nope"`},
		{[]string{"-scenario", "crossdev", "-minor2", "2000000"}, 2, "-minor2 2000000 out of range"},
		{[]string{"-scenario", "single", "-runtime-dir", "/nonexistent-ksim"}, 1, "gpuload: scenario single: open render node"},
		{[]string{"-scenario", "prodcons", "-runtime-dir", "/nonexistent-ksim"}, 1, "gpuload: scenario prodcons: open render node"},
	} {
		r := runBin(t, 10*time.Second, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("gpuload %q: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
		if r.stdout != "" {
			t.Errorf("gpuload %q printed %q on stdout", tc.args, r.stdout)
		}
	}
}

// waitNoLeaks waits until the kernel has released every object of the
// runs that ended.
func waitNoLeaks(t *testing.T, env *ksimtest.Env) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := env.Kernel.Counts()
		if c.Files == 0 && c.BOs == 0 && c.DmaBufs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("kernel objects left after the run: %+v", c)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScenariosInProcess(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	for _, sc := range allScenarios {
		t.Run(sc, func(t *testing.T) {
			want := expectLine(t, sc, small...)
			if got := runScenario(t, env.Dir, sc, 5, small...); got != want {
				t.Errorf("run: %s\nexpect: %s", got, want)
			}
			waitNoLeaks(t, env)
		})
	}
}

// TestScenariosFirmwareDaemon runs every scenario against a real kernelsimd
// simulating a firmware-scheduled (xe) GPU, where contexts complete out of
// order, with larger buffers so that jobs overlap and only implicit sync
// keeps the order.
func TestScenariosFirmwareDaemon(t *testing.T) {
	env := ksimtest.StartDaemon(t, kernelsimdBin, "-device", "driver=xe,minor=128,bandwidth=512M,iter=100us", "-device", "driver=xe,minor=129,bandwidth=512M,iter=100us")
	params := []string{"-steps", "6", "-size", "1M", "-step-delay", "0", "-iterations", "3000", "-stuck-for", "200ms"}
	for _, sc := range allScenarios {
		t.Run(sc, func(t *testing.T) {
			want := expectLine(t, sc, params...)
			if got := runScenario(t, env.Dir, sc, 6, params...); got != want {
				t.Errorf("run: %s\nexpect: %s", got, want)
			}
		})
	}
}

func TestDefaultDaemonMinor(t *testing.T) {
	env := ksimtest.StartDaemon(t, kernelsimdBin, "-device", "driver=amdgpu,minor=129")
	params := append([]string{"-minor", "129"}, small...)
	for _, sc := range []string{"single", "released"} {
		want := expectLine(t, sc, params...)
		if got := runScenario(t, env.Dir, sc, 5, params...); got != want {
			t.Errorf("%s: run: %s\nexpect: %s", sc, got, want)
		}
	}
}

// TestCrossdevUsesTwoDevices: mid-run, crossdev's producer has a file on
// -minor, its consumer a file on -minor2 holding, beside BOs of its own
// device, an import attachment (through PRIME) of the producer's shared
// BO of the other device; its result is prodcons's plan's.
func TestCrossdevUsesTwoDevices(t *testing.T) {
	cfg := twoDevices()
	cfg.Devices[0].Minor, cfg.Devices[1].Minor = 130, 135
	env := ksimtest.Start(t, cfg)
	params := []string{"-minor", "130", "-minor2", "135", "-steps", "4", "-size", "16K", "-step-delay", "300ms"}
	want := expectLine(t, "crossdev", params...)
	if p := expectLine(t, "prodcons", params...); strings.Fields(p)[2] != strings.Fields(want)[2] {
		t.Errorf("crossdev's result %s is not prodcons's %s", want, p)
	}
	s := startBin(t, env.Dir, append([]string{"-scenario", "crossdev"}, params...)...)
	s.waitProgress(t, "step 2/4")
	st := env.Kernel.Debug()
	boMinor, importOf := map[uint64]uint32{}, map[uint64]uint64{}
	for _, b := range st.BOs {
		boMinor[b.ID], importOf[b.ID] = b.Minor, b.ImportOf
	}
	files := map[uint32]int{}
	foreign := 0
	for _, f := range st.Files {
		files[f.Minor]++
		for _, h := range f.Handles {
			if boMinor[h.BO] != f.Minor {
				t.Errorf("file %d on renderD%d: handle %+v on a BO of renderD%d", f.ID, f.Minor, h, boMinor[h.BO])
			}
			if exp := importOf[h.BO]; exp != 0 {
				if !h.Prime || f.Minor != 135 || boMinor[exp] != 130 {
					t.Errorf("file %d on renderD%d: handle %+v is an attachment of a BO of renderD%d", f.ID, f.Minor, h, boMinor[exp])
				}
				foreign++
			}
		}
	}
	if files[130] != 1 || files[135] != 1 || foreign != 1 {
		t.Errorf("files by minor %v, %d handle(s) on another device's BO; want one file on each, one such handle", files, foreign)
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("gpuload: %v; stderr:\n%s", err, s.stderr.String())
	}
	if got := strings.TrimSpace(s.stdout.String()); got != want {
		t.Errorf("run: %s\nexpect: %s", got, want)
	}
	waitNoLeaks(t, env)
}

// started is a gpuload run in the background.
type started struct {
	cmd            *exec.Cmd
	progress, res  string
	stdout, stderr bytes.Buffer
	done           chan error
}

func startBin(t *testing.T, dir string, args ...string) *started {
	t.Helper()
	tmp := t.TempDir()
	s := &started{progress: filepath.Join(tmp, "progress"), res: filepath.Join(tmp, "result"), done: make(chan error, 1)}
	s.cmd = exec.Command(gpuloadBin, append([]string{"-runtime-dir", dir, "-progress", s.progress, "-result", s.res}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// waitProgress polls the progress file for a line, as a harness would.
func (s *started) waitProgress(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(s.progress)
		for _, l := range strings.Split(string(data), "\n") {
			if l == line {
				return
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("gpuload ended (%v) before %q; stderr:\n%s", err, line, s.stderr.String())
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q in the progress file", line)
}

func (s *started) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("gpuload did not finish; stderr:\n%s", s.stderr.String())
		return nil
	}
}

func (s *started) running() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return false
	default:
		return true
	}
}

func fileIDs(env *ksimtest.Env) []uint64 {
	var ids []uint64
	for _, f := range env.Kernel.Debug().Files {
		ids = append(ids, f.ID)
	}
	return ids
}

// TestStuckPauseTimesOut is the stuck scenario's contract at the kernel
// level: pausing (draining) its file during the stuck window times out,
// the client keeps running and finishes with the expected result.
func TestStuckPauseTimesOut(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	params := []string{"-steps", "3", "-size", "16K", "-step-delay", "10ms", "-stuck-for", "1500ms"}
	want := expectLine(t, "stuck", params...)
	s := startBin(t, env.Dir, append([]string{"-scenario", "stuck"}, params...)...)
	s.waitProgress(t, "step 1/3")
	err := env.Kernel.Pause(fileIDs(env), 300*time.Millisecond)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("pause during the stuck window: %v, want ETIMEDOUT", err)
	}
	if !s.running() {
		t.Fatalf("client ended after the failed pause; stderr:\n%s", s.stderr.String())
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("gpuload: %v; stderr:\n%s", err, s.stderr.String())
	}
	if got := strings.TrimSpace(s.stdout.String()); got != want {
		t.Errorf("run: %s\nexpect: %s", got, want)
	}
}

// TestPauseResumeMidRun pauses every file mid-run (preempting longrun's
// and handoff's long-running jobs, draining the others, with handoff's
// consumer job queued behind the producer's) and resumes: the results
// must not change.
func TestPauseResumeMidRun(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	for _, tc := range []struct {
		sc     string
		params []string
		at     string
	}{
		{"longrun", []string{"-steps", "2", "-size", "16K", "-iterations", "5000"}, "step 1/2"},
		{"prodcons", []string{"-steps", "8", "-size", "64K", "-step-delay", "20ms"}, "step 3/8"},
		{"released", []string{"-steps", "8", "-size", "64K", "-step-delay", "20ms"}, "step 3/8"},
		{"dmabuf-only", []string{"-steps", "8", "-size", "64K", "-step-delay", "20ms"}, "step 5/8"},
		{"handoff", []string{"-steps", "2", "-size", "64K", "-iterations", "5000"}, "step 1/2"},
		{"inflight", []string{"-steps", "8", "-size", "64K", "-step-delay", "20ms"}, "step 5/8"},
		{"threads", []string{"-steps", "8", "-size", "64K", "-step-delay", "20ms"}, "step 3/8"},
		{"forked", []string{"-steps", "8", "-size", "64K", "-step-delay", "20ms"}, "step 3/8"},
	} {
		t.Run(tc.sc, func(t *testing.T) {
			want := expectLine(t, tc.sc, tc.params...)
			s := startBin(t, env.Dir, append([]string{"-scenario", tc.sc}, tc.params...)...)
			s.waitProgress(t, tc.at)
			time.Sleep(100 * time.Millisecond)
			ids := fileIDs(env)
			if err := env.Kernel.Pause(ids, 5*time.Second); err != nil {
				t.Fatalf("pause: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
			env.Kernel.Resume(ids)
			if err := s.wait(t); err != nil {
				t.Fatalf("gpuload: %v; stderr:\n%s", err, s.stderr.String())
			}
			if got := strings.TrimSpace(s.stdout.String()); got != want {
				t.Errorf("run: %s\nexpect: %s", got, want)
			}
			waitNoLeaks(t, env)
		})
	}
}

// TestPipelinePauseCatchesBoth is the pipeline scenario's contract: a
// pause (what a checkpoint does first) at any moment after "step 1/N"
// finds a BO shared by two drm files through a dma-buf and, in the
// consumer's file, a long-running job using it, which the pause preempts
// (it stays unfinished) instead of draining; after the resume the run
// ends with the expected result.
func TestPipelinePauseCatchesBoth(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	params := []string{"-steps", "3", "-size", "64K", "-iterations", "5000"}
	want := expectLine(t, "pipeline", params...)
	s := startBin(t, env.Dir, append([]string{"-scenario", "pipeline"}, params...)...)
	s.waitProgress(t, "step 1/3")
	time.Sleep(100 * time.Millisecond) // mid-way through step 1's 500 ms job
	ids := fileIDs(env)
	if err := env.Kernel.Pause(ids, 5*time.Second); err != nil {
		t.Fatalf("pause: %v", err)
	}
	st := env.Kernel.Debug()
	env.Kernel.Resume(ids)

	if len(st.Files) != 2 || len(st.DmaBufs) != 1 {
		t.Fatalf("paused state has %d files and %d dma-bufs, want 2 and 1: %+v", len(st.Files), len(st.DmaBufs), st)
	}
	shared := st.DmaBufs[0].BO
	holders := 0
	var consumer *kernelsim.DebugFile
	for i, f := range st.Files {
		has := false
		for _, h := range f.Handles {
			has = has || h.BO == shared
		}
		if !has {
			continue
		}
		holders++
		for _, c := range f.Contexts {
			if c.Submitted > c.Completed {
				consumer = &st.Files[i]
			}
		}
	}
	if holders != 2 {
		t.Errorf("the dma-buf's BO %d has handles in %d files, want 2", shared, holders)
	}
	if consumer == nil {
		t.Errorf("no file holding the shared BO has an unfinished job: the pause did not catch the compute job mid-loop: %+v", st.Files)
	}
	for _, bo := range st.BOs {
		if bo.ID != shared {
			continue
		}
		live := 0
		for _, e := range bo.Resv {
			if !e.Fence.Signaled {
				live++
			}
		}
		if live != 1 {
			t.Errorf("shared BO's reservation object holds %d unsignalled fences, want the compute job's: %+v", live, bo.Resv)
		}
	}

	if err := s.wait(t); err != nil {
		t.Fatalf("gpuload: %v; stderr:\n%s", err, s.stderr.String())
	}
	if got := strings.TrimSpace(s.stdout.String()); got != want {
		t.Errorf("run: %s\nexpect: %s", got, want)
	}
	waitNoLeaks(t, env)
}

// TestChildFailure kills the consumer mid-run: the parent must fail
// cleanly (exit 1, naming the child) instead of hanging.
func TestChildFailure(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	s := startBin(t, env.Dir, "-scenario", "prodcons", "-steps", "50", "-size", "16K", "-step-delay", "50ms")
	s.waitProgress(t, "step 2/50")
	pid := s.cmd.Process.Pid
	// Children are listed under the thread that forked them.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []string
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(data))...)
	}
	if err != nil || len(kids) != 1 {
		t.Fatalf("children of %d: %q (%v)", pid, kids, err)
	}
	child, _ := strconv.Atoi(kids[0])
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = s.wait(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("gpuload after its consumer died: %v; stderr:\n%s", err, s.stderr.String())
	}
	if msg := s.stderr.String(); !strings.Contains(msg, "gpuload: scenario prodcons: step") || !strings.Contains(msg, "consumer") {
		t.Errorf("stderr does not explain the failure:\n%s", msg)
	}
	if _, err := os.Stat(s.res); err == nil {
		t.Errorf("a failed run wrote a result file")
	}
	waitNoLeaks(t, env)
}

// TestKillMidRunReleasesEverything kills each scenario's whole process
// group at a random-ish instant mid-run (a queued job behind an unsignalled
// sw_sync fence, a long-running job mid-loop, shared BOs between
// processes): the kernel must release every file, BO, dma-buf and job.
func TestKillMidRunReleasesEverything(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	for _, tc := range []struct {
		sc     string
		params []string
		at     string
	}{
		{"stuck", []string{"-steps", "3", "-size", "16K", "-stuck-for", "20s"}, "step 1/3"},
		{"longrun", []string{"-steps", "1", "-size", "16K", "-iterations", "100000"}, "step 1/1"},
		{"prodcons", []string{"-steps", "100", "-size", "1M", "-step-delay", "0"}, "step 5/100"},
		{"released", []string{"-steps", "100", "-size", "1M", "-step-delay", "0"}, "step 5/100"},
		{"dmabuf-only", []string{"-steps", "100", "-size", "1M", "-step-delay", "0"}, "step 70/100"},
		{"pipeline", []string{"-steps", "2", "-size", "64K", "-iterations", "100000"}, "step 1/2"},
		{"handoff", []string{"-steps", "2", "-size", "64K", "-iterations", "100000"}, "step 1/2"},
		{"threads", []string{"-steps", "100", "-size", "1M", "-step-delay", "0"}, "step 5/100"},
		{"forked", []string{"-steps", "100", "-size", "1M", "-step-delay", "0"}, "step 5/100"},
		// BOs kept by mappings alone, in two processes.
		{"mapped", []string{"-steps", "2", "-size", "64K", "-iterations", "100000"}, "step 1/2"},
	} {
		t.Run(tc.sc, func(t *testing.T) {
			s := startBinGroup(t, env.Dir, append([]string{"-scenario", tc.sc}, tc.params...)...)
			s.waitProgress(t, tc.at)
			if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			s.wait(t)
			waitNoLeaks(t, env)
			deadline := time.Now().Add(5 * time.Second)
			for env.Kernel.Debug().LiveJobs != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d jobs alive after the kill", env.Kernel.Debug().LiveJobs)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// startBinGroup is startBin in a new process group (so that the test can
// kill the whole run).
func startBinGroup(t *testing.T, dir string, args ...string) *started {
	t.Helper()
	tmp := t.TempDir()
	s := &started{progress: filepath.Join(tmp, "progress"), res: filepath.Join(tmp, "result"), done: make(chan error, 1)}
	s.cmd = exec.Command(gpuloadBin, append([]string{"-runtime-dir", dir, "-progress", s.progress, "-result", s.res}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.done <- nil
	})
	return s
}

// TestVALayoutFollowsSizes: each process lays its VAs out from the sizes
// it maps, so buffers larger than 256 MiB (the old fixed spacing, which
// made `-size 512M` fail with "overlaps mapping") get disjoint ranges.
// The kernel allocates BO memory lazily, so the large BOs cost no RSS.
func TestVALayoutFollowsSizes(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{}) // the default device: 1G VRAM, 2G GTT
	r := &runner{p: &params{runtimeDir: env.Dir, minor: 128}}
	sizes := []uint64{512 << 20, 4096, 1 << 30, 300 << 20}
	g, err := r.openGPU(vram(0, sizes[0]), gtt(1, sizes[1]), gtt(2, sizes[2]), vram(3, sizes[3]))
	if err != nil {
		t.Fatalf("create and map buffers of %v bytes: %v", sizes, err)
	}
	defer g.close()
	files := env.Kernel.Debug().Files
	if len(files) != 1 || len(files[0].Mappings) != len(sizes) {
		t.Fatalf("want one file with %d mappings, got %+v", len(sizes), files)
	}
	ms := files[0].Mappings
	for i, m := range ms {
		if m.VA%vaAlign != 0 || m.VA < vaBase {
			t.Errorf("mapping %d at %#x: not a %#x-aligned VA from %#x", i, m.VA, vaAlign, vaBase)
		}
		if i > 0 && ms[i-1].VA+ms[i-1].Size > m.VA {
			t.Errorf("mappings overlap: %#x+%#x and %#x", ms[i-1].VA, ms[i-1].Size, m.VA)
		}
	}
	for id, size := range sizes {
		va, ok := g.vas[bufID(id)]
		if !ok {
			t.Fatalf("buffer %d has no VA", id)
		}
		found := false
		for _, m := range ms {
			found = found || (m.VA == va && m.Size == size)
		}
		if !found {
			t.Errorf("buffer %d: no mapping of %#x bytes at %#x in %+v", id, size, va, ms)
		}
	}
}

// TestSizeLimits: any multiple of 4096 from 16K to kernelsim's largest BO
// is accepted; the message states the range.
func TestSizeLimits(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		ok   bool
	}{
		{16 << 10, true}, {512 << 20, true}, {3 << 30, true}, {kernelsim.MaxBOSize, true},
		{12 << 10, false}, {512<<20 + 1, false}, {kernelsim.MaxBOSize + 4096, false},
	} {
		p := &params{steps: 1, size: tc.size, iterations: 1}
		err := p.validate()
		if (err == nil) != tc.ok {
			t.Errorf("-size %d: %v, want ok=%v", tc.size, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "multiple of 4096 from 16K to 64G") {
			t.Errorf("-size %d: message %q does not state the range", tc.size, err)
		}
	}
	r := runBin(t, 10*time.Second, "-h")
	if !strings.Contains(r.stderr, "from 16K to 64G") || !strings.Contains(r.stderr, "VRAM") {
		t.Errorf("-h does not document -size's limits:\n%s", r.stderr)
	}
}

// TestManyMapped: many with its BOs mapped into the processes gives the
// result it gives without.
func TestManyMapped(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	params := []string{"-bos", "12", "-procs", "3", "-bo-sizes", "4K,64K", "-share-every", "2", "-step-delay", "0"}
	want := expectLine(t, "many", params...)
	if got := runScenario(t, env.Dir, "many", 1, append(params, "-map")...); got != want {
		t.Errorf("run with -map: %s\nexpect: %s", got, want)
	}
	// Partly filled BOs: the rest reads as zeros, mapped or not.
	params = append(params, "-fill", "8K")
	want = expectLine(t, "many", params...)
	for _, extra := range [][]string{nil, {"-map"}} {
		if got := runScenario(t, env.Dir, "many", 1, append(params, extra...)...); got != want {
			t.Errorf("run with -fill 8K %v: %s\nexpect: %s", extra, got, want)
		}
	}
	waitNoLeaks(t, env)
}

// TestManyFillJobsStayShort: the many scenario's fill jobs hold at most
// manyJobBuffers BOs and manyJobBytes (a job that ran past the device's
// job timeout failed `drmbench -gib 4`); their commands tile each BO's
// filled bytes exactly, in order; a BO of at most one piece is filled by
// one command with its own seed, as before pieces existed.
func TestManyFillJobsStayShort(t *testing.T) {
	for _, tc := range []struct {
		sizes []uint64
		bos   int
		fill  uint64
	}{
		{[]uint64{64 << 20}, 64, 0},         // 4 GiB of 64 MiB BOs
		{[]uint64{256 << 20}, 4, 0},         // BOs of four pieces
		{[]uint64{4096, 100 << 20}, 300, 0}, // many small, some of two pieces
		{[]uint64{256 << 20}, 3, 70 << 20},  // -fill: part of each BO
	} {
		p := &params{bos: tc.bos, procs: 1, boSizes: tc.sizes, fill: tc.fill, seed: 5}
		m := manyPlan{p, 0}
		next := make([]uint64, tc.bos) // each BO's next byte to be filled
		for _, jb := range m.fillJobs(0, tc.bos) {
			var bytes uint64
			if len(jb.bufs) > manyJobBuffers {
				t.Fatalf("%v: job %s holds %d BOs", tc.sizes, jb.name, len(jb.bufs))
			}
			for _, c := range jb.cmds {
				j := int(jb.bufs[c.Dst].id)
				if c.Op != gpu.OpRandFill || c.DstOff != next[j] || c.Len == 0 || c.Len > manyFillPiece {
					t.Fatalf("%v: job %s: %+v does not continue BO %d at %d", tc.sizes, jb.name, c, j, next[j])
				}
				if c.DstOff == 0 && c.Value != m.seed(j) {
					t.Fatalf("%v: BO %d's first piece is not seeded with the BO's seed", tc.sizes, j)
				}
				next[j] += c.Len
				bytes += c.Len
			}
			if bytes > manyJobBytes && len(jb.cmds) > 1 {
				t.Fatalf("%v: job %s fills %d bytes", tc.sizes, jb.name, bytes)
			}
		}
		for j, n := range next {
			if n != m.filled(j) {
				t.Fatalf("%v: BO %d filled to %d of %d", tc.sizes, j, n, m.filled(j))
			}
		}
	}
}

// TestAnonShared: -anon-shared makes the many scenario's memory a shared
// mapping (what criu saves as shmem, as it saves a mapped BO's memfd),
// with the same contents as the private one.
func TestAnonShared(t *testing.T) {
	for _, shared := range []bool{false, true} {
		p := &params{anon: 1 << 20, anonShared: shared, seed: 3}
		b := anonPattern(p)
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		// The mapping holding the memory (a private one may have merged
		// with a neighbour).
		addr := uint64(uintptr(unsafe.Pointer(&b[0])))
		var fields []string
		for _, l := range strings.Split(string(maps), "\n") {
			f := strings.Fields(l)
			var lo, hi uint64
			if len(f) >= 2 {
				if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err == nil && lo <= addr && addr < hi {
					fields = f
				}
			}
		}
		if fields == nil {
			t.Fatalf("-anon-shared %v: no mapping holds %#x in\n%s", shared, addr, maps)
		}
		// Shared anonymous memory is a shmem file, shown as /dev/zero.
		if (fields[1] == "rw-s") != shared || strings.Contains(strings.Join(fields, " "), "/dev/zero") != shared {
			t.Errorf("-anon-shared %v: mapping %q", shared, fields)
		}
		want := make([]byte, len(b))
		fillAnon(p, want)
		if !bytes.Equal(b, want) {
			t.Errorf("-anon-shared %v: contents differ from the pattern", shared)
		}
		syscall.Munmap(b)
	}
}
