package main

import (
	"testing"
)

func TestShowSmoke(t *testing.T) {
	f := richFixture(t)
	code, out, errs := runCmd(t, nil, "show", f.dir)
	t.Logf("code %d\n%s\n%s", code, out, errs)
	code, out, errs = runCmd(t, nil, "verify", f.dir)
	t.Logf("code %d\n%s\n%s", code, out, errs)
	code, out, errs = runCmd(t, nil, "graph", f.dir)
	t.Logf("code %d\n%s\n%s", code, out, errs)
}
