package containers

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"drmcr/internal/containers"
)

// newRunc is a runc with a state directory of its own for this test, run
// with env (which reaches criu); its containers are removed at the end.
func newRunc(t *testing.T, env ...string) *containers.Runc {
	t.Helper()
	r := &containers.Runc{Bin: runcBin, Criu: criuBin, Root: filepath.Join(t.TempDir(), "runc"), Env: env}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// newBundle makes a default-spec bundle running args, whose criu
// configuration file is conf.
func newBundle(t *testing.T, conf string, args ...string) *containers.Bundle {
	t.Helper()
	b, err := containers.NewBundle(runcBin, filepath.Join(t.TempDir(), "bundle"), rootfs, args...)
	if err != nil {
		t.Fatal(err)
	}
	b.Annotate(containers.CriuConfigAnnotation, conf)
	return b
}

func save(t *testing.T, b *containers.Bundle) {
	t.Helper()
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
}

func runContainer(t *testing.T, r *containers.Runc, id string, b *containers.Bundle) *containers.Container {
	t.Helper()
	c, err := r.Run(id, b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func restoreContainer(t *testing.T, r *containers.Runc, id string, b *containers.Bundle, img string) *containers.Container {
	t.Helper()
	c, err := r.Restore(id, b, img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkpoint checkpoints c and returns the images directory and criu's
// dump log. Without --leave-running it checks that the container is gone.
func checkpoint(t *testing.T, c *containers.Container, leaveRunning bool) (string, string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "images")
	work := t.TempDir()
	if err := c.Checkpoint(containers.CheckpointOptions{ImagePath: img, WorkPath: work, LeaveRunning: leaveRunning}); err != nil {
		t.Fatalf("%v\ncontainer output:\n%s", err, c.Out.String())
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case leaveRunning && st != "running":
		t.Fatalf("after checkpoint --leave-running the container is %q, not running", st)
	case !leaveRunning && st != "":
		t.Fatalf("after checkpoint the container is still known to runc (%q)", st)
	case !leaveRunning && !c.Out.WaitClosed(30*time.Second):
		t.Fatal("after checkpoint the container's processes still hold its stdout")
	}
	log, err := os.ReadFile(filepath.Join(work, "dump.log"))
	if err != nil {
		t.Fatal(err)
	}
	return img, string(log)
}

func deleteContainer(t *testing.T, c *containers.Container) {
	t.Helper()
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	if !c.Out.WaitClosed(30 * time.Second) {
		t.Fatal("after runc delete the container's processes still hold its stdout")
	}
}

func outLines(c *containers.Container) func() ([]string, error) {
	return func() ([]string, error) { return c.Out.Lines(), nil }
}

// counted waits until the container's counter is past n and returns its
// lines.
func counted(t *testing.T, what string, c *containers.Container, n int) []count {
	t.Helper()
	return waitCounts(t, what+" (output: "+c.ID+")", outLines(c), n)
}

// TestRuncCounter checkpoints and restores a container running the
// counter: with no plugin, with the plugin directory in place, and with the
// plugin and a kernelsimd running.
func TestRuncCounter(t *testing.T) {
	for _, setup := range setups() {
		t.Run(setup.name, func(t *testing.T) {
			t.Run("checkpoint-restore", func(t *testing.T) {
				r := newRunc(t, setup.criuEnv(t)...)
				b := newBundle(t, criuConfig(t, setup.lib), "/bin/counter")
				save(t, b)
				id := name(t)
				c := runContainer(t, r, id, b)
				counted(t, "before checkpoint", c, 2)
				img, log := checkpoint(t, c, false)
				setup.checkDumpLog(t, log)
				pre, err := parseCounts(c.Out.Lines())
				if err != nil {
					t.Fatal(err)
				}
				rc := restoreContainer(t, r, id, b, img)
				checkResumed(t, "runc restore", pre, counted(t, "after restore", rc, lastN(pre)+2))
			})

			t.Run("leave-running", func(t *testing.T) {
				r := newRunc(t, setup.criuEnv(t)...)
				b := newBundle(t, criuConfig(t, setup.lib), "/bin/counter")
				save(t, b)
				id := name(t)
				c := runContainer(t, r, id, b)
				counted(t, "before checkpoint", c, 2)
				img, log := checkpoint(t, c, true)
				setup.checkDumpLog(t, log)
				pre, err := parseCounts(c.Out.Lines())
				if err != nil {
					t.Fatal(err)
				}
				checkContinued(t, "the container left running", counted(t, "after checkpoint --leave-running", c, lastN(pre)+2))
				deleteContainer(t, c)
				rc := restoreContainer(t, r, id+"-restored", b, img)
				checkResumed(t, "restore of a --leave-running checkpoint", pre, counted(t, "after restore", rc, lastN(pre)+2))
			})

			t.Run("restore-twice", func(t *testing.T) {
				r := newRunc(t, setup.criuEnv(t)...)
				b := newBundle(t, criuConfig(t, setup.lib), "/bin/counter")
				save(t, b)
				id := name(t)
				c := runContainer(t, r, id, b)
				counted(t, "before checkpoint", c, 2)
				img, log := checkpoint(t, c, false)
				setup.checkDumpLog(t, log)
				pre, err := parseCounts(c.Out.Lines())
				if err != nil {
					t.Fatal(err)
				}
				first := restoreContainer(t, r, id+"-1", b, img)
				post1 := counted(t, "first restore", first, lastN(pre)+5)
				checkResumed(t, "first restore", pre, post1)
				deleteContainer(t, first)
				second := restoreContainer(t, r, id+"-2", b, img)
				post2 := counted(t, "second restore", second, lastN(pre)+2)
				checkResumed(t, "second restore", pre, post2)
				if post2[0] != post1[0] {
					t.Fatalf("the second restore of one checkpoint began with %+v, the first with %+v", post2[0], post1[0])
				}
			})
		})
	}
}

// TestRuncRestoreWithPlugin restores, with the plugin directory in place,
// a checkpoint taken before it was: installing the plugin must not break
// the restore of existing checkpoints.
func TestRuncRestoreWithPlugin(t *testing.T) {
	r := newRunc(t)
	b := newBundle(t, criuConfig(t, emptyLib), "/bin/counter")
	save(t, b)
	id := name(t)
	c := runContainer(t, r, id, b)
	counted(t, "before checkpoint", c, 2)
	img, _ := checkpoint(t, c, false)
	pre, err := parseCounts(c.Out.Lines())
	if err != nil {
		t.Fatal(err)
	}
	b.Annotate(containers.CriuConfigAnnotation, criuConfig(t, pluginDir))
	save(t, b)
	rc := restoreContainer(t, r, id, b, img)
	checkResumed(t, "restore with the plugin", pre, counted(t, "after restore", rc, lastN(pre)+2))
}
