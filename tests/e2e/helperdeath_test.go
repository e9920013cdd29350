package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelperDiesMidRestore: the plugin's helper process dies after criu
// restored the tree and before RESUME_DEVICES_LATE, whose result criu
// ignores. The GPU state was never checked to be complete, so the plugin
// kills the task there and criu fails the restore: no task of the tree
// resumes, the daemon holds nothing, and the same checkpoint then
// restores and gives the result of an uninterrupted run.
func TestHelperDiesMidRestore(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "pipeline")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)

	// criu runs the action script at post-restore, after it restored the
	// tree and before RESUME_DEVICES_LATE; the script kills the helper
	// whose pid the plugin logged.
	script := filepath.Join(t.TempDir(), "kill-helper.sh")
	must(t, os.WriteFile(script, []byte(`#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] || exit 0
pid=$(sed -n 's/.*drm_plugin: helper process \([0-9]*\) ready.*/\1/p' "`+img+`/restore.log" | tail -n 1)
[ -n "$pid" ] || { echo "no helper pid in restore.log" >&2; exit 1; }
kill -9 "$pid"
`), 0o755))
	c := criu
	c.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	log, err = c.Run(img, "restore", "-d", "--action-script", script)
	if err == nil {
		t.Fatalf("criu restored with the plugin's helper dead:\n%s", lastLines(log, 30))
	}
	for _, s := range []string{"is gone", "the GPU state was not checked: killed pid"} {
		if !strings.Contains(log, s) {
			t.Errorf("criu's log does not say %q:\n%s", s, lastLines(log, 30))
		}
	}
	if strings.Contains(log, "Restore finished successfully") {
		t.Errorf("criu reports success:\n%s", lastLines(log, 30))
	}
	waitGone(t, pids)
	waitIdle(t, d)

	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, d)
}
