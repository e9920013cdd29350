package containers

import (
	"path/filepath"
	"strings"
	"testing"

	"drmcr/internal/containers"
)

// podmanEnv is one test's podman (storage of its own, removed at the end)
// with the root filesystem imported as an image.
type podmanEnv struct {
	p     *containers.Podman
	image string
	conf  string // criu configuration file, for the org.criu.config annotation
}

// newPodman prepares a podman whose criu runs with criuEnv and loads its
// plugins from lib.
func newPodman(t *testing.T, lib string, criuEnv ...string) *podmanEnv {
	t.Helper()
	p, err := containers.NewPodman(podmanBin, runcBin, criuBin, criuEnv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	e := &podmanEnv{p: p, image: "localhost/" + name(t) + ":test", conf: criuConfig(t, lib)}
	if err := p.Import(tarball, e.image); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *podmanEnv) run(t *testing.T, o containers.RunOptions) {
	t.Helper()
	o.Image = e.image
	o.Annotations = map[string]string{containers.CriuConfigAnnotation: e.conf}
	if err := e.p.Run(o); err != nil {
		t.Fatal(err)
	}
}

// checkpoint checkpoints container name and returns criu's dump log, or ""
// without o.Keep.
func (e *podmanEnv) checkpoint(t *testing.T, name string, o containers.PodmanCheckpointOptions) string {
	t.Helper()
	if err := e.p.Checkpoint(name, o); err != nil {
		logs, _ := e.p.Logs(name)
		t.Fatalf("%v\ncontainer output:\n%s", err, logs)
	}
	st, err := e.p.Status(name)
	if err != nil {
		t.Fatal(err)
	}
	if o.LeaveRunning != (st == "running") {
		t.Fatalf("after podman container checkpoint (leave running: %v) the container is %s", o.LeaveRunning, st)
	}
	if !o.Keep {
		return ""
	}
	log, err := e.p.CriuLog(name, "dump.log")
	if err != nil {
		t.Fatal(err)
	}
	return log
}

func (e *podmanEnv) remove(t *testing.T, name string) {
	t.Helper()
	if err := e.p.Remove(name); err != nil {
		t.Fatal(err)
	}
}

func (e *podmanEnv) logLines(name string) func() ([]string, error) {
	return func() ([]string, error) {
		s, err := e.p.Logs(name)
		if err != nil {
			return nil, err
		}
		return strings.Split(strings.TrimRight(s, "\n"), "\n"), nil
	}
}

// counts returns the container's counter lines now.
func (e *podmanEnv) counts(t *testing.T, name string) []count {
	t.Helper()
	lines, err := e.logLines(name)()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := parseCounts(lines)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (e *podmanEnv) counted(t *testing.T, what, name string, n int) []count {
	t.Helper()
	return waitCounts(t, what+" (podman logs "+name+")", e.logLines(name), n)
}

// TestPodmanCounter checkpoints and restores a podman container running
// the counter, in place and through an exported archive, in each of the
// setups of TestRuncCounter.
func TestPodmanCounter(t *testing.T) {
	counter := func(name string) containers.RunOptions {
		return containers.RunOptions{Name: name, Args: []string{"/bin/counter"}}
	}
	for _, setup := range setups() {
		t.Run(setup.name, func(t *testing.T) {
			t.Run("checkpoint-restore", func(t *testing.T) {
				e := newPodman(t, setup.lib, setup.criuEnv(t)...)
				n := name(t)
				e.run(t, counter(n))
				e.counted(t, "before checkpoint", n, 2)
				setup.checkDumpLog(t, e.checkpoint(t, n, containers.PodmanCheckpointOptions{Keep: setup.daemon}))
				pre := e.counts(t, n)
				if err := e.p.Restore(n); err != nil {
					t.Fatal(err)
				}
				post := e.counted(t, "after restore", n, lastN(pre)+2)
				checkResumed(t, "podman container restore", pre, post[len(pre):])
			})

			t.Run("export-import", func(t *testing.T) {
				e := newPodman(t, setup.lib, setup.criuEnv(t)...)
				n := name(t)
				e.run(t, counter(n))
				e.counted(t, "before checkpoint", n, 2)
				archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
				setup.checkDumpLog(t, e.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive, Keep: setup.daemon}))
				pre := e.counts(t, n)
				e.remove(t, n)
				if err := e.p.RestoreImport(archive, n+"-imported"); err != nil {
					t.Fatal(err)
				}
				checkResumed(t, "podman container restore --import", pre, e.counted(t, "after restore", n+"-imported", lastN(pre)+2))
			})

			t.Run("leave-running", func(t *testing.T) {
				e := newPodman(t, setup.lib, setup.criuEnv(t)...)
				n := name(t)
				e.run(t, counter(n))
				e.counted(t, "before checkpoint", n, 2)
				archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
				setup.checkDumpLog(t, e.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive, LeaveRunning: true, Keep: setup.daemon}))
				pre := e.counts(t, n)
				checkContinued(t, "the container left running", e.counted(t, "after checkpoint --leave-running", n, lastN(pre)+2))
				e.remove(t, n)
				if err := e.p.RestoreImport(archive, n+"-imported"); err != nil {
					t.Fatal(err)
				}
				checkResumed(t, "restore of a --leave-running checkpoint", pre, e.counted(t, "after restore", n+"-imported", lastN(pre)+2))
			})

			t.Run("restore-twice", func(t *testing.T) {
				e := newPodman(t, setup.lib, setup.criuEnv(t)...)
				n := name(t)
				e.run(t, counter(n))
				e.counted(t, "before checkpoint", n, 2)
				archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
				setup.checkDumpLog(t, e.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive, Keep: setup.daemon}))
				pre := e.counts(t, n)
				e.remove(t, n)
				if err := e.p.RestoreImport(archive, n+"-1"); err != nil {
					t.Fatal(err)
				}
				post1 := e.counted(t, "first restore", n+"-1", lastN(pre)+5)
				checkResumed(t, "first restore", pre, post1)
				e.remove(t, n+"-1")
				if err := e.p.RestoreImport(archive, n+"-2"); err != nil {
					t.Fatal(err)
				}
				post2 := e.counted(t, "second restore", n+"-2", lastN(pre)+2)
				checkResumed(t, "second restore", pre, post2)
				if post2[0] != post1[0] {
					t.Fatalf("the second restore of one archive began with %+v, the first with %+v", post2[0], post1[0])
				}
			})
		})
	}
}
