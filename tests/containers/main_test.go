// Package containers checkpoints and restores real runc and podman
// containers with criu and the DRM plugin directory in place: a non-GPU
// container whose counter proves it resumed, and a GPU container running a
// multi-process gpuload scenario that shares a dma-buf, which must finish
// bit-identically after its restore.
//
// The bundles are `runc spec` defaults (own pid, network, mount, ipc and
// uts namespaces; tmpfs /dev; cgroups). criu is the project's wrapper
// (build/bin/criu, `make criu`), and the plugin directory is built from this
// checkout by `make plugin` into a temporary directory, named to criu through a per-test
// configuration file in the org.criu.config annotation. The tests need root,
// runc, iptables and podman (`make containers`); without them they fail,
// they never skip.
//
// DRMCR_PLUGIN_DIR=DIR makes the tests use another plugin directory, an
// empty one for instance.
package containers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"drmcr/internal/containers"
	"drmcr/internal/crrun"
)

var (
	repo      string // repository root
	tmp       string // what TestMain builds
	criuBin   string // build/bin/criu
	pluginDir string // the plugin directory under test
	emptyLib  string // an empty plugin directory: criu with no plugin
	runcBin   string
	podmanBin string
	rootfs    string // /bin/counter and /bin/gpuload, static
	tarball   string // rootfs as a tar archive, for podman import
	// host binaries
	kernelsimd string
	gpuload    string
	drmcrit    string
)

func TestMain(m *testing.M) {
	err := setup()
	code := 1
	if err == nil {
		code = m.Run()
	} else {
		fmt.Fprintln(os.Stderr, "containers setup:", err)
	}
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

func setup() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	repo = filepath.Dir(filepath.Dir(wd))
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return fmt.Errorf("repository root not found from %s", wd)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the container tests run runc, podman and criu and need root")
	}
	criuBin = filepath.Join(repo, "build", "bin", "criu")
	if _, err := os.Stat(criuBin); err != nil {
		return fmt.Errorf("%s missing: run `make criu` first (make test does): %w", criuBin, err)
	}
	if tmp, err = os.MkdirTemp("", "drmcr-containers-"); err != nil {
		return err
	}
	// The plugin as this checkout builds it (never a stale build/), unless
	// DRMCR_PLUGIN_DIR names one to test.
	pluginDir = os.Getenv("DRMCR_PLUGIN_DIR")
	if pluginDir == "" {
		pluginDir = filepath.Join(tmp, "lib")
		if err := crrun.BuildPlugin(repo, pluginDir); err != nil {
			return err
		}
	}
	if pluginDir, err = filepath.Abs(pluginDir); err != nil {
		return err
	}
	// runc and iptables-restore live in sbin, which a non-login root
	// shell may not have on PATH; criu runs iptables-restore from PATH.
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/local/sbin:/usr/sbin:/sbin")
	for _, tool := range []string{"runc", "podman", "conmon", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s missing: run `make containers` first (make test does): %w", tool, err)
		}
	}
	runcBin, _ = exec.LookPath("runc")
	podmanBin, _ = exec.LookPath("podman")

	emptyLib = filepath.Join(tmp, "empty-lib")
	if err := os.Mkdir(emptyLib, 0o755); err != nil {
		return err
	}
	rootfs = filepath.Join(tmp, "rootfs")
	if err := containers.BuildRootfs(repo, rootfs,
		containers.Binary{Name: "counter", Package: "./internal/containers/counter"},
		containers.Binary{Name: "gpuload", Package: "./cmd/gpuload"},
	); err != nil {
		return err
	}
	tarball = filepath.Join(tmp, "rootfs.tar")
	if err := containers.Tarball(rootfs, tarball); err != nil {
		return err
	}
	kernelsimd = filepath.Join(tmp, "bin", "kernelsimd")
	gpuload = filepath.Join(tmp, "bin", "gpuload")
	drmcrit = filepath.Join(tmp, "bin", "drmcrit")
	for out, pkg := range map[string]string{kernelsimd: "./cmd/kernelsimd", gpuload: "./cmd/gpuload", drmcrit: "./cmd/drmcrit"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = repo
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return nil
}

// criuSetup is how criu runs for a non-GPU test.
type criuSetup struct {
	name string
	lib  string // plugin directory
	// daemon: a kernelsimd runs and criu's environment names it, so the
	// plugin starts its helper for the dump and asks it about the
	// container's tasks, which hold no GPU state.
	daemon bool
}

// setups are the ways the non-GPU tests run criu: with no plugin (the
// baseline), with the plugin directory and no kernelsimd, and with the
// plugin and a kernelsimd. Installing the plugin must never make criu worse
// for a container that does not use the GPU.
func setups() []criuSetup {
	return []criuSetup{{"no-plugin", emptyLib, false}, {"plugin", pluginDir, false}, {"plugin-with-daemon", pluginDir, true}}
}

// criuEnv starts what the setup needs and returns what criu's environment
// must hold for it.
func (s criuSetup) criuEnv(t *testing.T) []string {
	t.Helper()
	if !s.daemon {
		return nil
	}
	d, err := crrun.StartDaemon(kernelsimd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})
	return []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
}

// checkDumpLog checks criu's dump log for the setup: with a kernelsimd,
// the plugin's helper served the dump. (podman keeps the log only when
// asked to: the podman tests ask in that setup.)
func (s criuSetup) checkDumpLog(t *testing.T, log string) {
	t.Helper()
	if s.daemon && !regexp.MustCompile(`drm_plugin: helper process [0-9]+ ready`).MatchString(log) {
		t.Errorf("with a kernelsimd running, the plugin started no helper for the dump; plugin lines:\n%s", crrun.PluginLines(log))
	}
}

// criuConfig writes a criu configuration file naming lib as the plugin
// directory, for the org.criu.config annotation.
func criuConfig(t *testing.T, lib string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "criu.conf")
	if err := containers.WriteCriuConfig(path, lib); err != nil {
		t.Fatal(err)
	}
	return path
}

// name is a container or image name unique to this test and run.
func name(t *testing.T) string {
	return strings.ToLower(containers.UniqueName("drmcr-" + t.Name()))
}
