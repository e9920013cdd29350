// Package crruntest holds the test-side helpers of crrun: what the e2e
// and container tests would otherwise each write again.
package crruntest

import (
	"testing"

	"drmcr/internal/crrun"
)

// StartHost starts a host (crrun.StartHost) whose kernelsimd has the given
// devices (kernelsimd -device specs), stops it when the test ends and, if
// the test failed, logs the daemon's log.
func StartHost(t testing.TB, kernelsimd string, devices ...string) *crrun.Host {
	t.Helper()
	var args []string
	for _, d := range devices {
		args = append(args, "-device", d)
	}
	h, err := crrun.StartHost(kernelsimd, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kernelsimd log (%s):\n%s", h.MountNS, h.Log())
		}
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
	})
	return h
}
