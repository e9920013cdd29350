package containers

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"drmcr/internal/containers"
	"drmcr/internal/crrun"
	"drmcr/internal/crrun/crruntest"
)

// Moving a container to another machine: each host is a kernelsimd in a
// mount namespace of its own, at the usual /run/kernelsim, with devices
// of its own (crrun.Host), and a podman of its own (own storage and
// state) whose commands, containers, runc and criu run on that host.

// startHost starts a host whose kernelsimd has the given devices.
func startHost(t *testing.T, devices ...string) *crrun.Host {
	return crruntest.StartHost(t, kernelsimd, devices...)
}

// hostPodmanState is where a host's podman keeps its state (short: podman
// takes a run directory of at most 50 characters).
const hostPodmanState = "/tmp/drmcr-host-podman"

// podmanOn is a podman on host h, with the root filesystem imported as
// image: the same name on every host, as a registry would give it.
func podmanOn(t *testing.T, h *crrun.Host, image string) *podmanEnv {
	t.Helper()
	p, err := containers.NewPodman(podmanBin, runcBin, criuBin, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Wrap = h.Wrap()
	// Each host's podman keeps its state at one path, as on two nodes.
	if err := h.Bind(p.Dir, hostPodmanState); err != nil {
		p.Close()
		t.Fatal(err)
	}
	p.StateDir = hostPodmanState
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	e := &podmanEnv{p: p, image: image, conf: criuConfig(t, pluginDir)}
	if err := p.Import(tarball, e.image); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestPodmanMigrate moves a GPU container from host A to host B with
// podman's --export and --import: a multi-process job that shares a
// dma-buf and runs a long-running compute job, checkpointed mid-run on an
// amdgpu at renderD128, finishes bit-identically on host B, whose amdgpu
// is at renderD130 with another gpu id and memory size (its renderD128 is
// an xe). Both hosts' daemons sit at /run/kernelsim, which the container
// binds, as on two nodes; criu's restore log says where the device went.
func TestPodmanMigrate(t *testing.T) {
	a := startHost(t, "driver=amdgpu,minor=128,gpuid=0x1111,vram=1G")
	b := startHost(t, "driver=xe,minor=128", "driver=amdgpu,minor=130,gpuid=0x2222,vram=2G")
	image := "localhost/" + name(t) + ":test"
	ea, eb := podmanOn(t, a, image), podmanOn(t, b, image)

	// The job's progress and result go to a directory both hosts see.
	out := t.TempDir()
	j := &gpuJob{out: out, w: &crrun.Workload{Bin: gpuload, Scenario: "pipeline", Dir: out}}
	want := j.expected(t)
	n := name(t)
	ea.run(t, containers.RunOptions{
		Name:   n,
		Args:   j.args(),
		Env:    []string{"KERNELSIM_RUNTIME_DIR=" + containerRuntimeDir},
		Mounts: []containers.Mount{{Source: containerRuntimeDir, Destination: containerRuntimeDir}, {Source: out, Destination: "/out"}},
	})
	j.waitStep(t, 2, ea.running(n))
	archive := filepath.Join(t.TempDir(), "checkpoint.tar.gz")
	ea.checkpoint(t, n, containers.PodmanCheckpointOptions{Export: archive})
	j.notFinished(t)
	ea.remove(t, n)
	if err := a.WaitIdle(20e9); err != nil {
		t.Fatal(err)
	}

	moved := n + "-on-b"
	if err := eb.p.RestoreImport(archive, moved, containers.PodmanRestoreOptions{Keep: true}); err != nil {
		t.Fatal(err)
	}
	j.waitResult(t, want, eb.running(moved))
	log, err := eb.p.CriuLog(moved, "restore.log")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`drm_plugin: GPU devices: .*`).FindString(log)
	if w := "renderD128 (amdgpu, gpu id 0x1111) -> renderD130 (gpu id 0x2222)"; !strings.Contains(line, w) {
		t.Errorf("criu's restore log does not say %q; it says %q", w, line)
	}
	eb.remove(t, moved)
	if err := b.WaitIdle(20e9); err != nil {
		t.Fatal(err)
	}
}
