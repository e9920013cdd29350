package drmcore_test

import (
	"strings"
	"testing"

	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// TestRefusalLogIsBounded: a checkpoint with more problems than criu's
// log should carry logs the first 50, one line each, and a line saying
// how many more there are and where to see them all (drmcrit verify,
// which lists every one); the restore is refused and creates nothing.
func TestRefusalLogIsBounded(t *testing.T) {
	f := newDamageFixture(t)
	dir := copyDir(t, f.dir)
	editFile(t, dir, f.inoA, true, func(m *images.DrmFile) {
		for range 60 { // two problems each: the handle and the size
			m.State.Mappings = append(m.State.Mappings, &uapi.VaMapping{Handle: 9999, Va: 0x40000000})
		}
	})
	if n := strings.Count(problemsOf(t, dir), "\n") + 1; n != 120 {
		t.Fatalf("%d problems, want 120", n)
	}
	log := &lineLog{Log: drmcoretest.Log{T: t}}
	_, err := drmcoretest.Restore(t, f.env.Dir, dir, concurrently, false, withLog(log))
	if err == nil || !strings.Contains(err.Error(), "refusing to restore the GPU state: 120 problem(s) in the GPU images") {
		t.Fatalf("restore: %v", err)
	}
	lines := log.String()
	if n := strings.Count(lines, "E: GPU image "); n != 50 {
		t.Errorf("%d problem lines in the log, want 50:\n%s", n, lines)
	}
	if !strings.Contains(lines, "E: ... and 70 more problem(s) (drmcrit verify lists them all)") {
		t.Errorf("the log does not say how many more:\n%s", lines)
	}
	waitCounts(t, f.env, f.base)
}
