package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scenarios are the gpuload runs dumped mid-run and restored.
var scenarios = []struct {
	name string
	args []string
	step int    // dump once this step is reported
	show string // what drmcrit show must find in the checkpoint
}{
	{"single", nil, 2, "drm file"},
	{"prodcons", nil, 2, "drm file"},
	{"released", nil, 2, "drm file"},
	{"dmabuf-only", nil, 2, "drm file"},
	{"longrun", nil, 1, "long-running job fence"},
	{"pipeline", nil, 2, "long-running job fence"},
	// The consumer's job waits, in another process, on the producer's
	// preempted job: it is checkpointed as queued work.
	{"handoff", nil, 1, "waits on fence"},
	// Past half-way the shared BO exists only as a dma-buf in flight in
	// a unix socket's queue, held by no task: criu dumps it from the
	// queue and restores it there.
	{"inflight", nil, 25, "in flight at the dump"},
	// Threads of one process share a drm file: at the dump some wait in
	// the kernel (for submission, for jobs) while others submit; every
	// request caught in flight is replayed after restore.
	{"threads", nil, 3, "request SYNCOBJ_WAIT"},
	// A child uses the drm fd it inherited at the same time as its parent,
	// through a reply channel of its own.
	{"forked", nil, 3, "reply channel"},
	// BOs mapped by both processes, one only through its mapping, and a
	// long-running job preempted mid-loop.
	{"mapped", nil, 2, "mapped at"},
}

// TestDumpKillRestore: dump each scenario mid-run (criu kills it), restore
// it from the images, and check it finishes with the result an
// uninterrupted run gives, bit for bit.
func TestDumpKillRestore(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			d := startDaemon(t)
			w := startWorkload(t, d, sc.name, sc.args...)
			want := expected(t, w)
			waitStep(t, w, sc.step)
			pids := w.Tree()
			img, log, err := dump(t, d, w)
			if err != nil {
				t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
			}
			t.Logf("dump:\n%s", pluginLines(log))
			if show := checkImages(t, img, pids); !strings.Contains(show, sc.show) {
				t.Errorf("drmcrit show of the checkpoint lacks %q:\n%s", sc.show, show)
			}
			waitGone(t, pids)
			if w.Result() != "" {
				t.Fatal("the workload finished before the dump: it must be dumped mid-run")
			}
			log, err = restore(t, d, img)
			if err != nil {
				t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
			}
			t.Logf("restore:\n%s", pluginLines(log))
			if got := result(t, w); got != want {
				t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
			}
			waitIdle(t, d)
		})
	}
}

// TestLeaveRunning: after a dump with --leave-running the tree goes on and
// finishes correctly: every paused context resumed, and requests caught in
// flight were answered.
func TestLeaveRunning(t *testing.T) {
	for _, name := range []string{"single", "prodcons", "longrun", "threads", "forked", "mapped"} {
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t)
			w := startWorkload(t, d, name)
			want := expected(t, w)
			waitStep(t, w, 1)
			_, log, err := dump(t, d, w, "--leave-running")
			if err != nil {
				t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
			}
			if !w.Alive() {
				t.Fatal("--leave-running dump killed the workload")
			}
			if got := result(t, w); got != want {
				t.Fatalf("after --leave-running: got %s, want %s", got, want)
			}
			waitIdle(t, d)
		})
	}
}

// TestDumpFailsWhenClientCannotDrain: a job waiting on a fence only the
// client will signal cannot drain; the dump fails within the pause timeout
// with a message naming the process and context, and the client keeps
// running and finishes correctly.
func TestDumpFailsWhenClientCannotDrain(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "stuck", "-stuck-for", "15s")
	want := expected(t, w)
	waitStep(t, w, 1)
	start := time.Now()
	_, log, err := dump(t, d, w)
	if err == nil {
		t.Fatal("dump of a client that cannot drain succeeded")
	}
	if took := time.Since(start); took > 12*time.Second {
		t.Errorf("the dump took %v to fail", took)
	}
	msg := pluginLines(log)
	for _, want := range []string{"did not drain", "context"} {
		if !strings.Contains(msg, want) {
			t.Errorf("plugin log does not say %q:\n%s", want, msg)
		}
	}
	if !w.Alive() {
		t.Fatal("the failed dump killed the client")
	}
	if got := result(t, w); got != want {
		t.Fatalf("after the failed dump: got %s, want %s", got, want)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestDemo runs the demo, which must end in success.
func TestDemo(t *testing.T) {
	libDir := criu.LibDir
	out, err := exec.Command(filepath.Join(binDir, "drmdemo"), "-criu", criu.Bin, "-lib", libDir, "-bin", binDir).CombinedOutput()
	if err != nil {
		t.Fatalf("drmdemo: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "bit-identical") {
		t.Fatalf("drmdemo output:\n%s", out)
	}
	t.Logf("drmdemo:\n%s", out)
}

// TestFailedRestoreLeavesNothing: a second restore of the same checkpoint
// while the first restored tree runs fails (its pids are taken) after the
// plugin opened its restore session; the session must destroy everything
// it created, and the first tree must finish undisturbed.
func TestFailedRestoreLeavesNothing(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "prodcons")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\n%s", err, lastLines(log, 40))
	}
	log, err = restore(t, d, img)
	if err == nil {
		t.Fatal("a second restore into the same pids succeeded")
	}
	if !strings.Contains(pluginLines(log), "destroyed the GPU objects") {
		t.Errorf("the failed restore's plugin log does not say it cleaned up:\n%s", pluginLines(log))
	}
	if got := result(t, w); got != want {
		t.Fatalf("first restored tree: got %s, want %s", got, want)
	}
	waitIdle(t, d)
}

// TestRestoreIntoNewDaemon: the images hold everything, so a checkpoint
// restores into a kernelsimd started after the dump, in another runtime
// directory: nothing of the GPU state lived only in the old daemon.
func TestRestoreIntoNewDaemon(t *testing.T) {
	old := startDaemon(t)
	w := startWorkload(t, old, "pipeline")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img, log, err := dump(t, old, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t)
	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored into a new kernelsimd: got %s, want %s", got, want)
	}
	waitIdle(t, d)
}

// TestRestoreNeedsPlugin: a GPU checkpoint lists drm_plugin in criu's
// inventory, so criu refuses to restore it without the plugin, saying
// which plugin is missing, instead of failing on the first GPU socket.
// With the plugin the same images restore.
func TestRestoreNeedsPlugin(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "single")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	c := criu
	c.LibDir = t.TempDir() // a plugin directory without the plugin
	log, err = c.Run(img, "restore", "-d")
	if err == nil {
		t.Fatal("restored a GPU checkpoint without the plugin")
	}
	if !strings.Contains(log, "Missing required plugin: drm_plugin") {
		t.Errorf("criu's log does not name the missing plugin:\n%s", lastLines(log, 20))
	}
	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestSummaryAtDefaultVerbosity: at criu's default verbosity a successful
// dump and restore each leave one line of the plugin's in criu's log,
// saying what was done.
func TestSummaryAtDefaultVerbosity(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "prodcons")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	c := criu
	c.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	c.Verbosity = 2 // criu's default
	img := imagesDir(t)
	log, err := c.Run(img, "dump", "-t", strconv.Itoa(w.PID))
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if lines := pluginLines(log); !regexp.MustCompile(`^drm_plugin: GPU state dumped: 2 process\(es\), 2 drm file\(s\), 1 dma-buf\(s\), 3 BO\(s\), [0-9.]+ KiB of contents, in [0-9.]+m?s; complete\n$`).MatchString(lines) {
		t.Errorf("the plugin's lines at criu's default verbosity:\n%s", lines)
	}
	waitGone(t, pids)
	log, err = c.Run(img, "restore", "-d")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if lines := pluginLines(log); !regexp.MustCompile(`^drm_plugin: GPU state restored: 2 drm file\(s\), 1 dma-buf\(s\), 3 BO\(s\), [0-9.]+ KiB of contents, in [0-9.]+m?s\n$`).MatchString(lines) {
		t.Errorf("the plugin's lines at criu's default verbosity:\n%s", lines)
	}
	if got := result(t, w); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
