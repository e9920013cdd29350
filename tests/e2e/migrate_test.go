package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"drmcr/internal/crrun"
	"drmcr/internal/crrun/crruntest"
)

// Restoring on another machine. Each host is a kernelsimd in a mount
// namespace of its own, at the usual /run/kernelsim, with devices of its
// own (crrun.Host); gpuload and criu run on a host by entering its mount
// namespace, and find its kernelsimd where they look by default. The
// checkpoint moves from one host to the other as a copy of the images
// directory.

// startHost starts a host whose kernelsimd has the given devices.
func startHost(t *testing.T, devices ...string) *crrun.Host {
	return crruntest.StartHost(t, kernelsimd, devices...)
}

// onHost is criu on host h with env added to its environment, at criu's
// default verbosity: what a user sees is what the tests check.
func onHost(h *crrun.Host, env ...string) crrun.Criu {
	c := criu
	c.Wrap = h.Wrap()
	c.Env = env
	c.Verbosity = 2
	return c
}

// startOn starts gpuload on host h.
func startOn(t *testing.T, h *crrun.Host, scenario string, args ...string) *crrun.Workload {
	t.Helper()
	w, err := h.StartWorkload(gpuload, t.TempDir(), scenario, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Kill()
		if t.Failed() {
			t.Logf("gpuload log:\n%s", w.Log())
		}
	})
	return w
}

// dumpOn dumps the workload on host h, kills it (criu does) and returns a
// copy of the images in a new directory: the checkpoint moved to another
// machine.
func dumpOn(t *testing.T, h *crrun.Host, w *crrun.Workload) string {
	t.Helper()
	img := imagesDir(t)
	pids := w.Tree()
	c := onHost(h)
	c.Verbosity = 4
	log, err := c.Run(img, "dump", "-t", strconv.Itoa(w.PID))
	if err != nil {
		t.Fatalf("dump on host A: %v\nlog:\n%s", err, lastLines(log, 60))
	}
	waitGone(t, pids)
	if w.Result() != "" {
		t.Fatal("the workload finished before the dump: it must be dumped mid-run")
	}
	moved := imagesDir(t)
	if out, err := exec.Command("cp", "-a", img+"/.", moved).CombinedOutput(); err != nil {
		t.Fatalf("move the images: %v: %s", err, out)
	}
	os.RemoveAll(img)
	return moved
}

// deviceLine is the plugin's line saying where the devices went.
var deviceLine = regexp.MustCompile(`drm_plugin: GPU devices: .*`)

// TestMigrate dumps a running GPU job on host A, moves the checkpoint and
// restores it on host B, whose devices have other minors, gpu ids and
// memory sizes: the job finishes there with the result an uninterrupted
// run gives, bit for bit, and criu's log at its default verbosity says
// where each device went.
func TestMigrate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		scenario string
		args     []string
		step     int
		a, b     []string // the hosts' devices
		env      []string // criu's environment on host B
		want     []string // in the device line
	}{
		// A preempted long-running job and a dma-buf between two
		// processes, from one device to another.
		{"pipeline", "pipeline", nil, 2,
			[]string{"driver=amdgpu,minor=128,gpuid=0x1111,vram=1G"},
			[]string{"driver=amdgpu,minor=131,gpuid=0x2222,vram=2G,gtt=4G"}, nil,
			[]string{"renderD128 (amdgpu, gpu id 0x1111) -> renderD131 (gpu id 0x2222): first free device of its driver with enough memory"}},
		// Two devices and a dma-buf shared across them, onto two other
		// devices: renderD128 of host B is of another driver.
		{"crossdev", "crossdev", nil, 2,
			[]string{"driver=amdgpu,minor=128,gpuid=0x1111", "driver=amdgpu,minor=129,gpuid=0x1112"},
			[]string{"driver=xe,minor=128", "driver=amdgpu,minor=130,gpuid=0x2222,vram=512M", "driver=amdgpu,minor=133,gpuid=0x2223,vram=2G"}, nil,
			[]string{"renderD128 (amdgpu, gpu id 0x1111) -> renderD130 (gpu id 0x2222): first free device of its driver with enough memory",
				"renderD129 (amdgpu, gpu id 0x1112) -> renderD133 (gpu id 0x2223): first free device of its driver with enough memory"}},
		// The same, as DRMCR_DEVICE_MAP states it, by minor and gpu id.
		{"crossdev-explicit", "crossdev", nil, 2,
			[]string{"driver=amdgpu,minor=128,gpuid=0x1111", "driver=amdgpu,minor=129,gpuid=0x1112"},
			[]string{"driver=xe,minor=128", "driver=amdgpu,minor=130,gpuid=0x2222,vram=512M", "driver=amdgpu,minor=133,gpuid=0x2223,vram=2G"},
			[]string{"DRMCR_DEVICE_MAP=renderD128=0x2223,0x1112=renderD130"},
			[]string{"renderD128 (amdgpu, gpu id 0x1111) -> renderD133 (gpu id 0x2223): by DRMCR_DEVICE_MAP",
				"renderD129 (amdgpu, gpu id 0x1112) -> renderD130 (gpu id 0x2222): by DRMCR_DEVICE_MAP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startHost(t, tc.a...), startHost(t, tc.b...)
			w := startOn(t, a, tc.scenario, tc.args...)
			want := expected(t, w)
			waitStep(t, w, tc.step)
			img := dumpOn(t, a, w)
			waitIdle(t, a.Daemon)

			log, err := onHost(b, tc.env...).Run(img, "restore", "-d")
			if err != nil {
				t.Fatalf("restore on host B: %v\nrestore log:\n%s", err, lastLines(log, 40))
			}
			line := deviceLine.FindString(log)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("criu's log (-v2) does not say\n  %s\nit says\n  %s\nplugin lines:\n%s", w, line, pluginLines(log))
				}
			}
			if got := result(t, w); got != want {
				t.Fatalf("restored on host B, the job gave\n  %s\nan uninterrupted run gives\n  %s", got, want)
			}
			waitIdle(t, b.Daemon)
		})
	}
}

// TestMigrateRefused: a host that lacks the checkpoint's driver, or a
// device with the memory it needs, or that a DRMCR_DEVICE_MAP names wrong,
// refuses the restore: criu exits non-zero before it forks a task, its log
// names the device and says why, and the host's kernelsimd holds nothing.
// The same images then restore on a host that can take them.
func TestMigrateRefused(t *testing.T) {
	a := startHost(t, "driver=amdgpu,minor=128,gpuid=0x1111")
	w := startOn(t, a, "single", "-size", "256K")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img := dumpOn(t, a, w)

	for _, tc := range []struct {
		name    string
		devices []string
		env     []string
		want    string
	}{
		{"no such driver", []string{"driver=xe,minor=128", "driver=xe,minor=129"}, nil,
			"GPU device renderD128 (amdgpu, gpu id 0x1111, 512.0 KiB of VRAM and 4.0 KiB of GTT used) of the checkpoint: there is no amdgpu device here (renderD128 xe, renderD129 xe)"},
		{"not enough memory", []string{"driver=amdgpu,minor=128,vram=256K", "driver=amdgpu,minor=129,vram=384K"}, nil,
			"GPU device renderD128 (amdgpu, gpu id 0x1111, 512.0 KiB of VRAM and 4.0 KiB of GTT used) of the checkpoint: no amdgpu device here has enough memory: renderD128 has 256.0 KiB of VRAM and 2.0 GiB of GTT, renderD129 has 384.0 KiB of VRAM and 2.0 GiB of GTT"},
		{"map to a missing device", []string{"driver=amdgpu,minor=128"}, []string{"DRMCR_DEVICE_MAP=renderD128=renderD140"},
			"GPU device renderD128 (amdgpu, gpu id 0x1111, 512.0 KiB of VRAM and 4.0 KiB of GTT used) of the checkpoint: DRMCR_DEVICE_MAP maps it to renderD140, which is none of the devices here (renderD128 amdgpu)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startHost(t, tc.devices...)
			log, err := onHost(b, tc.env...).Run(img, "restore", "-d")
			if err == nil {
				t.Fatalf("restored on a host that cannot take the checkpoint\n%s", pluginLines(log))
			}
			if !strings.Contains(log, "Error (criu/plugin.c") && !strings.Contains(log, `Failed in init(2) of "drm_plugin"`) {
				t.Errorf("criu did not fail in the plugin's init:\n%s", lastLines(log, 20))
			}
			if !strings.Contains(log, "drm_plugin: "+tc.want) {
				t.Errorf("criu's log (-v2) does not say\n  %s\nplugin lines:\n%s", tc.want, pluginLines(log))
			}
			for _, p := range pids {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil {
					t.Errorf("pid %d exists after the refused restore", p)
				}
			}
			waitIdle(t, b.Daemon)
		})
	}

	// A host that can take it: the images were never the problem.
	b := startHost(t, "driver=amdgpu,minor=129,vram=1M")
	log, err := onHost(b).Run(img, "restore", "-d")
	if err != nil {
		t.Fatalf("restore on host B: %v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored on host B, the job gave\n  %s\nan uninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, b.Daemon)
}
