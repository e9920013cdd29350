package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"drmcr/internal/crrun"
)

// criuWatch samples a running criu: its thread count, and whether any of
// its children is the plugin's helper (which must be nobody's child that
// criu would wait for).
type criuWatch struct {
	mu         sync.Mutex
	samples    int
	maxThreads int
	helperKid  string // a child of criu's named drm_plugin
	done       chan struct{}
	stopped    chan struct{}
}

func watchCriu(pid int) *criuWatch {
	w := &criuWatch{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
		status := fmt.Sprintf("/proc/%d/status", pid)
		children := fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)
		for i := 0; ; i++ {
			select {
			case <-w.done:
				return
			default:
			}
			b, err := os.ReadFile(status)
			if err != nil || strings.Contains(string(b), "State:\tZ") {
				return // criu is gone
			}
			m := regexp.MustCompile(`(?m)^Threads:\s+(\d+)$`).FindSubmatch(b)
			if m == nil {
				continue
			}
			n, _ := strconv.Atoi(string(m[1]))
			w.mu.Lock()
			w.samples++
			w.maxThreads = max(w.maxThreads, n)
			w.mu.Unlock()
			if i%8 == 0 {
				kids, _ := os.ReadFile(children)
				for _, k := range strings.Fields(string(kids)) {
					comm, _ := os.ReadFile("/proc/" + k + "/comm")
					if strings.TrimSpace(string(comm)) == "drm_plugin" {
						w.mu.Lock()
						w.helperKid = k
						w.mu.Unlock()
					}
				}
			}
		}
	}()
	return w
}

func (w *criuWatch) stop() (samples, maxThreads int, helperKid string) {
	close(w.done)
	<-w.stopped
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.maxThreads, w.helperKid
}

// runWatched runs criu with the plugin, sampling it all along.
func runWatched(t *testing.T, d *crrun.Daemon, img, action string, args ...string) (string, *criuWatch) {
	t.Helper()
	var w *criuWatch
	c := criu
	c.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	c.Started = func(pid int) { w = watchCriu(pid) }
	log, err := c.Run(img, action, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, lastLines(log, 40))
	}
	return log, w
}

// TestCriuStaysSingleThreaded: criu's process has exactly one thread at
// every moment of a GPU dump and restore (the plugin's Go code runs in a
// helper process), the helper is never criu's child, and it is gone once
// criu is.
func TestCriuStaysSingleThreaded(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "pipeline")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img := imagesDir(t)
	for _, step := range []struct {
		action string
		args   []string
	}{
		{"dump", []string{"-t", strconv.Itoa(w.PID)}},
		{"restore", []string{"-d"}},
	} {
		if step.action == "restore" {
			waitGone(t, pids)
		}
		log, watch := runWatched(t, d, img, step.action, step.args...)
		samples, maxThreads, kid := watch.stop()
		t.Logf("%s: %d samples of criu's thread count, at most %d", step.action, samples, maxThreads)
		if samples < 20 {
			t.Errorf("%s: only %d samples of criu: the check saw too little", step.action, samples)
		}
		if maxThreads != 1 {
			t.Errorf("%s: criu had %d threads", step.action, maxThreads)
		}
		if kid != "" {
			t.Errorf("%s: the plugin's helper %s was criu's child", step.action, kid)
		}
		m := regexp.MustCompile(`drm_plugin: helper process (\d+) ready`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("%s: no helper started:\n%s", step.action, pluginLines(log))
		}
		if !crrun.Poll(10*time.Second, func() bool {
			_, err := os.Stat("/proc/" + m[1])
			return err != nil
		}) {
			t.Errorf("%s: helper %s still runs after criu exited", step.action, m[1])
		}
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave %s, want %s", got, want)
	}
	waitIdle(t, d)
}
