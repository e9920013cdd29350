package criu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestInstallUninstall: make install puts both files of the plugin into
// criu's plugin directory (under DESTDIR), and make uninstall takes away
// exactly those, leaving what else is there.
func TestInstallUninstall(t *testing.T) {
	root := repoRoot(t)
	dest := t.TempDir()
	other := filepath.Join(dest, "usr/lib/criu/amdgpu_plugin.so")
	make := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "--no-print-directory", "-C", root, target, "DESTDIR="+dest, "LIB_DIR="+filepath.Join(t.TempDir(), "lib"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("install")
	for _, f := range []string{"usr/lib/criu/drm_plugin.so", "usr/lib/criu/drm_plugin.d/drm_plugin_core.so"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	make("uninstall")
	var left []string
	filepath.Walk(dest, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != dest {
			left = append(left, p[len(dest):])
		}
		return nil
	})
	want := []string{"/usr", "/usr/lib", "/usr/lib/criu", "/usr/lib/criu/amdgpu_plugin.so"}
	if len(left) != len(want) {
		t.Fatalf("after make uninstall: %v, want %v", left, want)
	}
	for i := range want {
		if left[i] != want[i] {
			t.Fatalf("after make uninstall: %v, want %v", left, want)
		}
	}
}
