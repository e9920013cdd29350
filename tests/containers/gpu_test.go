package containers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"drmcr/internal/containers"
	"drmcr/internal/crrun"
	"drmcr/kernelsim"
)

// containerRuntimeDir is where a container finds kernelsimd: the daemon's
// runtime directory is bind-mounted there, and it is the clients' default.
const containerRuntimeDir = kernelsim.DefaultRuntimeDir

// gpuScenarios are the multi-process gpuload runs that share a dma-buf,
// and the step after which they are checkpointed.
var gpuScenarios = []struct {
	name string
	step int
}{
	{"prodcons", 2},
	{"pipeline", 2},
}

// gpuJob is one gpuload run in a container against a kernelsimd of its
// own. The container writes its progress and result into a host directory
// bound at /out; job.w reads them there.
type gpuJob struct {
	d   *crrun.Daemon
	w   *crrun.Workload // Dir is the host side of /out
	out string
}

func newGPUJob(t *testing.T, scenario string) *gpuJob {
	t.Helper()
	d, err := crrun.StartDaemon(kernelsimd)
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
	out := t.TempDir()
	return &gpuJob{d: d, out: out, w: &crrun.Workload{Bin: gpuload, Scenario: scenario, Dir: out}}
}

// args is the container's command line; gpuload finds the daemon at the
// default runtime directory.
func (j *gpuJob) args() []string {
	return []string{"/bin/gpuload", "-scenario", j.w.Scenario, "-progress", "/out/progress", "-result", "/out/result"}
}

func (j *gpuJob) mounts() []containers.Mount {
	return []containers.Mount{{Source: j.d.Dir, Destination: containerRuntimeDir}, {Source: j.out, Destination: "/out"}}
}

// criuEnv is what criu needs in its environment: the plugin runs on the
// host and finds the daemon there.
func (j *gpuJob) criuEnv() []string { return []string{"KERNELSIM_RUNTIME_DIR=" + j.d.Dir} }

func (j *gpuJob) expected(t *testing.T) string {
	t.Helper()
	want, err := j.w.Expected()
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// watch is how a test follows the container that runs a job.
type watch struct {
	running func() bool   // the container runs
	output  func() string // what it printed
}

// waitStep waits until the job reports step n.
func (j *gpuJob) waitStep(t *testing.T, n int, c watch) {
	t.Helper()
	if !crrun.Poll(60*time.Second, func() bool { return j.w.Step() >= n || !c.running() }) || j.w.Step() < n {
		t.Fatalf("gpuload did not reach step %d (at %d; container running: %v); its output:\n%s", n, j.w.Step(), c.running(), c.output())
	}
}

// waitResult waits for the job's result and compares it with want.
func (j *gpuJob) waitResult(t *testing.T, want string, c watch) {
	t.Helper()
	if !crrun.Poll(120*time.Second, func() bool { return j.w.Result() != "" || !c.running() }) || j.w.Result() == "" {
		t.Fatalf("no gpuload result (at step %d; container running: %v); its output:\n%s", j.w.Step(), c.running(), c.output())
	}
	if got := j.w.Result(); got != want {
		t.Fatalf("the job gave\n  %s\nan uninterrupted run gives\n  %s", got, want)
	}
}

// notFinished checks that the checkpoint caught the job mid-run.
func (j *gpuJob) notFinished(t *testing.T) {
	t.Helper()
	if j.w.Result() != "" {
		t.Fatal("the job finished before the checkpoint: it must be checkpointed mid-run")
	}
}

// reset forgets the progress and result of a run, so that the next run
// (a second restore of the same checkpoint) is judged on its own.
func (j *gpuJob) reset(t *testing.T) {
	t.Helper()
	for _, f := range []string{"progress", "result"} {
		if err := os.Remove(j.w.Path(f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

// waitIdle waits until the daemon holds nothing: what the containers had
// is gone once they are.
func (j *gpuJob) waitIdle(t *testing.T) {
	t.Helper()
	if err := j.d.WaitIdle(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// verify runs drmcrit verify on a container checkpoint, and show, which
// must name the processes as criu's images do: by their pids inside the
// container, gpuload being its pid 1.
func verify(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command(drmcrit, "verify", img).CombinedOutput(); err != nil {
		t.Errorf("drmcrit verify of a container checkpoint: %v\n%s", err, out)
	}
	out, err := exec.Command(drmcrit, "show", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "── pid 1 (gpuload)") {
		t.Errorf("drmcrit show of a container checkpoint does not show the container's pid 1: %v\n%s", err, out)
	}
}

// TestGPUContainerRuns runs the GPU job to its end in a default-spec runc
// container and in a podman container, each in its own network namespace,
// with no checkpoint: a client in a container reaches kernelsimd through
// the bind-mounted runtime directory. The checkpoint tests below depend on
// it.
func TestGPUContainerRuns(t *testing.T) {
	t.Run("runc", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		r, b := runcGPU(t, j)
		c := runContainer(t, r, name(t), b)
		j.waitResult(t, want, runcRunning(c))
		deleteContainer(t, c)
		j.waitIdle(t)
	})
	t.Run("podman", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		n := name(t)
		e := podmanGPU(t, j, n)
		j.waitResult(t, want, e.running(n))
		e.remove(t, n)
		j.waitIdle(t)
	})
}

// runcGPU prepares a runc whose criu finds the job's daemon, and a bundle
// running the job with the daemon's runtime directory and /out bound in.
func runcGPU(t *testing.T, j *gpuJob) (*containers.Runc, *containers.Bundle) {
	t.Helper()
	r := newRunc(t, j.criuEnv()...)
	b := newBundle(t, criuConfig(t, pluginDir), j.args()...)
	for _, m := range j.mounts() {
		b.Bind(m.Source, m.Destination)
	}
	save(t, b)
	return r, b
}

func runcRunning(c *containers.Container) watch {
	return watch{
		running: func() bool {
			st, err := c.Status()
			return err == nil && st == "running"
		},
		output: func() string {
			c.Out.WaitClosed(5 * time.Second)
			return c.Out.String()
		},
	}
}

// TestRuncGPU checkpoints a runc container running a multi-process GPU job
// that shares a dma-buf mid-run, and restores it: the job must finish with
// the result an uninterrupted run gives, bit for bit.
func TestRuncGPU(t *testing.T) {
	for _, sc := range gpuScenarios {
		t.Run(sc.name+"/checkpoint-restore", func(t *testing.T) {
			j := newGPUJob(t, sc.name)
			want := j.expected(t)
			r, b := runcGPU(t, j)
			id := name(t)
			c := runContainer(t, r, id, b)
			j.waitStep(t, sc.step, runcRunning(c))
			img, _ := checkpoint(t, c, false)
			j.notFinished(t)
			verify(t, img)
			rc := restoreContainer(t, r, id, b, img)
			j.waitResult(t, want, runcRunning(rc))
			j.waitIdle(t)
		})
	}

	t.Run("prodcons/leave-running", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		r, b := runcGPU(t, j)
		id := name(t)
		c := runContainer(t, r, id, b)
		j.waitStep(t, 2, runcRunning(c))
		img, _ := checkpoint(t, c, true)
		j.waitResult(t, want, runcRunning(c))
		deleteContainer(t, c)
		j.reset(t)
		rc := restoreContainer(t, r, id+"-restored", b, img)
		j.waitResult(t, want, runcRunning(rc))
		j.waitIdle(t)
	})

	// A restored container checkpoints again: what the restore made (the
	// dma-buf files above all) is in the container's own namespaces.
	t.Run("prodcons/checkpoint-the-restored", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		r, b := runcGPU(t, j)
		id := name(t)
		c := runContainer(t, r, id, b)
		j.waitStep(t, 2, runcRunning(c))
		img, _ := checkpoint(t, c, false)
		first := restoreContainer(t, r, id+"-1", b, img)
		j.waitStep(t, 4, runcRunning(first))
		img2, _ := checkpoint(t, first, false)
		j.notFinished(t)
		verify(t, img2)
		second := restoreContainer(t, r, id+"-2", b, img2)
		j.waitResult(t, want, runcRunning(second))
		j.waitIdle(t)
	})

	t.Run("prodcons/restore-twice", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		r, b := runcGPU(t, j)
		id := name(t)
		c := runContainer(t, r, id, b)
		j.waitStep(t, 2, runcRunning(c))
		img, _ := checkpoint(t, c, false)
		j.notFinished(t)
		first := restoreContainer(t, r, id+"-1", b, img)
		j.waitStep(t, 4, runcRunning(first))
		deleteContainer(t, first)
		j.notFinished(t)
		j.reset(t)
		second := restoreContainer(t, r, id+"-2", b, img)
		j.waitResult(t, want, runcRunning(second))
		j.waitIdle(t)
	})
}

// podmanGPU prepares a podman whose criu finds the job's daemon, and
// starts the job in a container called n.
func podmanGPU(t *testing.T, j *gpuJob, n string) *podmanEnv {
	t.Helper()
	e := newPodman(t, pluginDir, j.criuEnv()...)
	e.run(t, containers.RunOptions{
		Name:   n,
		Args:   j.args(),
		Env:    []string{"KERNELSIM_RUNTIME_DIR=" + containerRuntimeDir},
		Mounts: j.mounts(),
	})
	return e
}

func (e *podmanEnv) running(n string) watch {
	return watch{
		running: func() bool {
			st, err := e.p.Status(n)
			return err == nil && st == "running"
		},
		output: func() string {
			logs, err := e.p.Logs(n)
			if err != nil {
				return fmt.Sprintf("(%v)", err)
			}
			return logs
		},
	}
}

// TestPodmanGPU is TestRuncGPU with podman: checkpoint and restore in
// place, through an exported archive, with --leave-running, and one
// archive restored twice.
func TestPodmanGPU(t *testing.T) {
	for _, sc := range gpuScenarios {
		t.Run(sc.name+"/checkpoint-restore", func(t *testing.T) {
			j := newGPUJob(t, sc.name)
			want := j.expected(t)
			n := name(t)
			e := podmanGPU(t, j, n)
			j.waitStep(t, sc.step, e.running(n))
			e.checkpoint(t, n, containers.PodmanCheckpointOptions{})
			j.notFinished(t)
			if err := e.p.Restore(n); err != nil {
				t.Fatal(err)
			}
			j.waitResult(t, want, e.running(n))
			j.waitIdle(t)
		})
	}

	t.Run("prodcons/export-import", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		n := name(t)
		e := podmanGPU(t, j, n)
		j.waitStep(t, 2, e.running(n))
		archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
		e.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive})
		j.notFinished(t)
		e.remove(t, n)
		if err := e.p.RestoreImport(archive, n+"-imported"); err != nil {
			t.Fatal(err)
		}
		j.waitResult(t, want, e.running(n+"-imported"))
		j.waitIdle(t)
	})

	t.Run("prodcons/leave-running", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		n := name(t)
		e := podmanGPU(t, j, n)
		j.waitStep(t, 2, e.running(n))
		archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
		e.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive, LeaveRunning: true})
		j.waitResult(t, want, e.running(n))
		e.remove(t, n)
		j.reset(t)
		if err := e.p.RestoreImport(archive, n+"-imported"); err != nil {
			t.Fatal(err)
		}
		j.waitResult(t, want, e.running(n+"-imported"))
		j.waitIdle(t)
	})

	t.Run("prodcons/restore-twice", func(t *testing.T) {
		j := newGPUJob(t, "prodcons")
		want := j.expected(t)
		n := name(t)
		e := podmanGPU(t, j, n)
		j.waitStep(t, 2, e.running(n))
		archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
		e.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive})
		j.notFinished(t)
		e.remove(t, n)
		if err := e.p.RestoreImport(archive, n+"-1"); err != nil {
			t.Fatal(err)
		}
		j.waitStep(t, 4, e.running(n+"-1"))
		e.remove(t, n+"-1")
		j.notFinished(t)
		j.reset(t)
		if err := e.p.RestoreImport(archive, n+"-2"); err != nil {
			t.Fatal(err)
		}
		j.waitResult(t, want, e.running(n+"-2"))
		j.waitIdle(t)
	})
}
