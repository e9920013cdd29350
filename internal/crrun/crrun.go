// Package crrun runs the real pieces of a GPU checkpoint: a kernelsimd
// daemon, a detached gpuload workload, and criu with the DRM plugin. The
// end-to-end tests and the demo share it.
package crrun

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
)

// Poll calls cond every 20ms until it holds or timeout passes.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Daemon is a kernelsimd process with its own runtime directory.
type Daemon struct {
	// Dir is the runtime directory, as this process reaches it.
	Dir     string
	LogPath string
	cmd     *exec.Cmd
	log     *os.File
	done    chan error
	own     string // the directory Stop removes

	stopOnce sync.Once
	stopErr  error
}

// StartDaemon starts kernelsimd (the binary at bin) in a new runtime
// directory and waits until it serves.
func StartDaemon(bin string, args ...string) (*Daemon, error) {
	dir, err := os.MkdirTemp("", "kernelsim")
	if err != nil {
		return nil, err
	}
	d := &Daemon{Dir: dir, LogPath: filepath.Join(dir, "kernelsimd.log"), done: make(chan error, 1), own: dir}
	if d.log, err = os.Create(d.LogPath); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.cmd = exec.Command(bin, append([]string{"-runtime-dir", dir}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.log.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start kernelsimd: %w", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	if !Poll(10*time.Second, func() bool {
		_, err := os.Stat(kernelsim.ControlPath(dir))
		return err == nil
	}) {
		d.Stop()
		return nil, fmt.Errorf("kernelsimd did not start serving in %s", dir)
	}
	return d, nil
}

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Log returns what the daemon printed.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// Stop terminates the daemon and removes its runtime directory. Stopping
// a stopped daemon does nothing.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() {
		defer os.RemoveAll(d.own)
		defer d.log.Close()
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
			d.stopErr = errors.New("kernelsimd did not stop on SIGTERM")
		}
	})
	return d.stopErr
}

// Workload is one gpuload run, started detached (own session, stdio on
// files), as a process that criu dumps must be.
type Workload struct {
	Bin      string // gpuload
	Scenario string
	Args     []string // scenario parameters, shared with -expect
	Dir      string   // progress, result and log files
	PID      int
	done     chan struct{}
}

// StartWorkload starts gpuload against the daemon. Its files go to dir.
func StartWorkload(bin string, d *Daemon, dir, scenario string, args ...string) (*Workload, error) {
	return startWorkload(nil, "", bin, d.Dir, dir, scenario, args...)
}

// startWorkload starts gpuload with the daemon at runtimeDir, through the
// command wrap (nsenter, for a host of its own) if any.
// Its stdio is opened beneath root ("" or a host's /proc/PID/root): a
// file opened through this process's mounts is on a mount that criu on
// another host does not find.
func startWorkload(wrap []string, root, bin, runtimeDir, dir, scenario string, args ...string) (*Workload, error) {
	w := &Workload{Bin: bin, Scenario: scenario, Args: args, Dir: dir, done: make(chan struct{})}
	out, err := os.Create(root + w.Path("gpuload.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	devnull, err := os.Open(root + os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	argv := append(slices.Clone(wrap), bin, "-scenario", scenario, "-runtime-dir", runtimeDir,
		"-progress", w.Path("progress"), "-result", w.Path("result"))
	cmd := exec.Command(argv[0], append(argv[1:], args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gpuload: %w", err)
	}
	w.PID = cmd.Process.Pid
	// Reap it promptly: criu can only restore into free pids.
	go func() { cmd.Wait(); close(w.done) }()
	return w, nil
}

// Path is a file of the workload's directory.
func (w *Workload) Path(name string) string { return filepath.Join(w.Dir, name) }

// Log returns what gpuload printed.
func (w *Workload) Log() string {
	b, _ := os.ReadFile(w.Path("gpuload.log"))
	return string(b)
}

// Kill kills the workload's process tree.
func (w *Workload) Kill() {
	for _, p := range w.Tree() {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// Step returns the last step the workload reported, or -1.
func (w *Workload) Step() int {
	b, _ := os.ReadFile(w.Path("progress"))
	last := -1
	for _, line := range strings.Split(string(b), "\n") {
		var i, total int
		if _, err := fmt.Sscanf(line, "step %d/%d", &i, &total); err == nil {
			last = i
		}
	}
	return last
}

// WaitStep waits until the workload has reported step n.
func (w *Workload) WaitStep(n int, timeout time.Duration) error {
	if !Poll(timeout, func() bool { return w.Step() >= n }) {
		return fmt.Errorf("gpuload did not reach step %d in %v (at %d)", n, timeout, w.Step())
	}
	return nil
}

// Result returns the workload's result line, or "" if it has none yet.
func (w *Workload) Result() string {
	b, _ := os.ReadFile(w.Path("result"))
	return strings.TrimSpace(string(b))
}

// WaitResult waits for the result line.
func (w *Workload) WaitResult(timeout time.Duration) (string, error) {
	if !Poll(timeout, func() bool { return w.Result() != "" }) {
		return "", fmt.Errorf("no gpuload result after %v", timeout)
	}
	return w.Result(), nil
}

// Expected is the result line of an uninterrupted run, computed on the CPU.
func (w *Workload) Expected() (string, error) {
	out, err := exec.Command(w.Bin, append([]string{"-expect", w.Scenario}, w.Args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gpuload -expect %s: %v: %s", w.Scenario, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Alive reports whether the workload's root process exists.
func (w *Workload) Alive() bool { return syscall.Kill(w.PID, 0) == nil }

// Tree returns the pids of the workload's process tree.
func (w *Workload) Tree() []int {
	pids := []int{w.PID}
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

// WaitGone waits until none of pids exists, zombies included: criu can
// only restore a tree into free pids, and orphans are reaped by pid 1,
// which on some machines takes seconds.
func WaitGone(pids []int, timeout time.Duration) error {
	if !Poll(timeout, func() bool {
		for _, p := range pids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil {
				return false
			}
		}
		return true
	}) {
		return fmt.Errorf("pids %v still exist after %v", pids, timeout)
	}
	return nil
}

// Criu runs a criu binary with the DRM plugin.
type Criu struct {
	Bin    string // criu, or the build/bin/criu wrapper
	LibDir string // absolute: criu changes into the images directory
	Env    []string
	// Started, if set, is called with criu's pid once it runs.
	Started func(pid int)
	// Finished, if set, is called with criu's exit state (its rusage:
	// drmbench reads criu's peak RSS there).
	Finished func(*os.ProcessState)
	// Verbosity is criu's -v level; 0 means 4 (everything, for tests).
	// Benchmarks use less: at -v4 criu logs every memory area.
	Verbosity int
	// Wrap runs criu through a command (Host.Wrap: on a host of its own).
	Wrap []string
}

// Run runs `criu ACTION -D imgDir --lib LibDir -v4 -o ACTION.log ARGS...`
// and returns its log.
func (c Criu) Run(imgDir, action string, args ...string) (string, error) {
	logName := action + ".log"
	v := c.Verbosity
	if v == 0 {
		v = 4
	}
	argv := append(slices.Clone(c.Wrap), c.Bin, action, "-D", imgDir, "--lib", c.LibDir, "-v"+strconv.Itoa(v), "-o", logName)
	cmd := exec.Command(argv[0], append(argv[1:], args...)...)
	cmd.Env = append(os.Environ(), c.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Start()
	if err == nil {
		if c.Started != nil {
			c.Started(cmd.Process.Pid)
		}
		err = cmd.Wait()
		if c.Finished != nil && cmd.ProcessState != nil {
			c.Finished(cmd.ProcessState)
		}
	}
	log, _ := os.ReadFile(filepath.Join(imgDir, logName))
	if err != nil {
		return string(log), fmt.Errorf("criu %s: %v: %s", action, err, strings.TrimSpace(out.String()))
	}
	return string(log), nil
}

// PluginLines returns the DRM plugin's lines of a criu log.
func PluginLines(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "drm_plugin") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// BuildPlugin builds the plugin as `make plugin` does into libDir, which
// then holds what criu's plugin directory must: drm_plugin.so and the Go
// library it runs in its helper process. tags are extra Go build tags.
func BuildPlugin(repo, libDir string, tags ...string) error {
	cmd := exec.Command("make", "--no-print-directory", "-C", repo, "plugin",
		"LIB_DIR="+libDir, "PLUGIN_TAGS="+strings.Join(tags, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make plugin: %v\n%s", err, out)
	}
	return nil
}

// WaitIdle waits until the daemon holds no drm file, BO, dma-buf, job or
// restore session: whatever a workload had, dumped or restored, is gone
// once it exited.
func (d *Daemon) WaitIdle(timeout time.Duration) error {
	c, err := ctl.Dial(d.Dir)
	if err != nil {
		return err
	}
	defer c.Close()
	var st *kernelsim.DebugState
	if !Poll(timeout, func() bool {
		st, err = c.Debug()
		return err == nil && len(st.Files) == 0 && len(st.BOs) == 0 && len(st.DmaBufs) == 0 && st.LiveJobs == 0 && st.Sessions == 0
	}) {
		return fmt.Errorf("kernelsimd still holds objects after %v (err %v): %+v", timeout, err, st)
	}
	return nil
}
