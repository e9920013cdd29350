package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// twoDrivers is a kernelsimd with an amdgpu device at renderD128 and an
// xe device at renderD129.
var twoDrivers = []string{"-device", "driver=amdgpu,minor=128", "-device", "driver=xe,minor=129"}

// TestXeDumpKillRestore: the xe scenarios and a dma-buf shared between
// an xe and an amdgpu device (both ways round) are dumped mid-run with
// real criu, killed and restored, and finish with the result of an
// uninterrupted run, bit for bit.
func TestXeDumpKillRestore(t *testing.T) {
	for _, sc := range []struct {
		name, scenario string
		args           []string
		step           int
		show           []string
	}{
		// A long-running compute on an LR VM: preempted through the
		// queue's preempt fence at the dump, resumed where it stopped.
		{"xe-lr", "xe-lr", []string{"-minor", "129"}, 1, []string{"long-running job fence", "xe: VM 1 (regular)", "xe: VM 2 (long-running)", "preempted 1 time(s)"}},
		{"xe-ooo", "xe-ooo", []string{"-minor", "129"}, 2, []string{"xe: exec queue 1 on VM 1", "xe: exec queue 2 on VM 1"}},
		// The importer's handle is an import attachment of the exporter's
		// BO; restore makes the BO on the exporter's device and a new
		// attachment on the importer's.
		{"xe exporter, amdgpu importer", "xcross", []string{"-minor", "129", "-minor2", "128"}, 2, []string{"xe: VM 1", "prime, import attachment"}},
		{"amdgpu exporter, xe importer", "xcross", []string{"-minor", "128", "-minor2", "129"}, 2, []string{"xe: VM 1", "prime, import attachment"}},
	} {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			d := startDaemon(t, twoDrivers...)
			w := startWorkload(t, d, sc.scenario, sc.args...)
			want := expected(t, w)
			waitStep(t, w, sc.step)
			pids := w.Tree()
			img, log, err := dump(t, d, w)
			if err != nil {
				t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
			}
			show := checkImages(t, img, pids)
			for _, s := range sc.show {
				if !strings.Contains(show, s) {
					t.Errorf("drmcrit show of the checkpoint lacks %q:\n%s", s, show)
				}
			}
			waitGone(t, pids)
			if w.Result() != "" {
				t.Fatal("the workload finished before the dump: it must be dumped mid-run")
			}
			log, err = restore(t, d, img)
			if err != nil {
				t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
			}
			if got := result(t, w); got != want {
				t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
			}
			waitIdle(t, d)
		})
	}
}

// TestDamagedXeBlobFailsTheRestore: a real checkpoint of xe-lr whose xe
// blob is damaged (re-sealed, so only the blob's own checks can tell) is
// refused by drmcrit verify and by criu restore, with the image and the
// field named, before any task runs; the undamaged checkpoint restores.
func TestDamagedXeBlobFailsTheRestore(t *testing.T) {
	d := startDaemon(t, twoDrivers...)
	w := startWorkload(t, d, "xe-lr", "-minor", "129")
	want := expected(t, w)
	waitStep(t, w, 1)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	name := xeFileWithJob(t, img)
	edit := func(f func(*uapi.XeDriverPrivate)) func(m *images.DrmFile) {
		return func(m *images.DrmFile) {
			priv := &uapi.XeDriverPrivate{}
			must(t, proto.Unmarshal(m.State.DriverPrivate, priv))
			f(priv)
			b, err := proto.Marshal(priv)
			must(t, err)
			m.State.DriverPrivate = b
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(m *images.DrmFile)
		want   string
	}{
		{"overlapping bindings", edit(func(p *uapi.XeDriverPrivate) {
			for _, v := range p.Vms {
				if len(v.Bindings) > 1 {
					v.Bindings[1].Va = v.Bindings[0].Va
				}
			}
		}), ".bindings[1].va: "},
		{"exec queue on a VM that is not there", edit(func(p *uapi.XeDriverPrivate) { p.ExecQueues[0].VmId = 77 }),
			"state.driver_private.exec_queues[0].vm_id: VM 77 is not in the blob"},
		{"progress beyond the commands", edit(func(p *uapi.XeDriverPrivate) {
			for _, q := range p.ExecQueues {
				for _, j := range q.Queue.Jobs {
					j.ProgressCmd = 99
				}
			}
		}), ".queue.jobs[0].progress_cmd: gpu: progress at command 99"},
		{"amdgpu's blob on an xe file", func(m *images.DrmFile) {
			b, err := proto.Marshal(&uapi.DriverPrivate{Version: 1, Driver: "amdgpu"})
			must(t, err)
			m.State.DriverPrivate = b
		}, `state.driver_private: driver blob is for "amdgpu", not xe`},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			bad := t.TempDir()
			if out, err := exec.Command("cp", "-a", img+"/.", bad).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			editFile(t, bad, name, true, tc.damage)
			wantMsg := name + ": " + tc.want
			if strings.HasPrefix(tc.want, ".") {
				wantMsg = tc.want
			}
			if out, code := runDrmcrit(t, "verify", bad); code != 1 || !strings.Contains(out, wantMsg) {
				t.Errorf("drmcrit verify: exit %d, does not say %q:\n%s", code, wantMsg, out)
			}
			log, err := restore(t, d, bad)
			if err == nil {
				t.Fatal("criu restored a damaged checkpoint")
			}
			if !strings.Contains(log, wantMsg) {
				t.Errorf("criu's log does not say %q:\n%s", wantMsg, lastLines(log, 30))
			}
			if strings.Contains(log, "Restore finished successfully") || strings.Contains(log, "Forking task with") {
				t.Errorf("criu went on restoring:\n%s", lastLines(log, 30))
			}
			waitGone(t, pids)
			waitIdle(t, d)
		})
	}
	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, d)
}

// xeFileWithJob names the drm file image of an xe file with a saved job.
func xeFileWithJob(t *testing.T, dir string) string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "drm-file-*.img"))
	must(t, err)
	for _, p := range names {
		m := &images.DrmFile{}
		readImage(t, dir, filepath.Base(p), m)
		if m.Driver == "xe" && len(m.State.JobFences) > 0 {
			return filepath.Base(p)
		}
	}
	t.Fatal("the checkpoint has no xe file with a saved job")
	return ""
}
