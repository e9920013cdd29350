package drmcore_test

import (
	"path/filepath"
	"testing"
	"time"

	"drmcr/drmcore/drmcoretest"
	"drmcr/kernelsim/ksimtest"
)

// The tests drive drmcore the way criu drives the plugin, without criu
// (package drmcoretest): the whole dump/restore logic runs against an
// in-process kernelsim, with the test process standing in for the task.

// pauseTimeout is the PAUSE_DEVICES timeout of the tests.
var pauseTimeout = 5 * time.Second

// dump checkpoints this process; the error is the dump's failure.
func dump(t testing.TB, env *ksimtest.Env) (string, error) {
	t.Helper()
	return drmcoretest.DumpSelf(t, env.Dir, pauseTimeout)
}

// restore restores dir into this process.
func restore(t testing.TB, env *ksimtest.Env, dir string, order drmcoretest.Order, failAfterClaims bool) (map[uint64]int, error) {
	t.Helper()
	return drmcoretest.Restore(t, env.Dir, dir, order, failAfterClaims)
}

var (
	concurrently = drmcoretest.Concurrently
	nthOrder     = drmcoretest.NthOrder
)

func imageNames(t testing.TB, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "drm-*"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}
