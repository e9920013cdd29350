package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/internal/crrun"
)

// The scale tests run gpuload's "many" scenario at a size CI can afford
// but beyond every size limit the control path and the image format once
// had (about 4,900 BOs per checkpoint, 7,800 handles per drm file, two
// image files per BO). make bench runs the same at full size.

// manyRun is one many workload, dumped once set up and restored.
type manyRun struct {
	args []string
	bos  int
}

func (m manyRun) start(t *testing.T, d *crrun.Daemon) (*crrun.Workload, string, string) {
	t.Helper()
	goFile := filepath.Join(t.TempDir(), "go")
	w := startWorkload(t, d, "many", append(m.args, "-wait-for", goFile)...)
	want := expected(t, w)
	waitStep(t, w, 0)
	return w, want, goFile
}

// TestManyBOsDumpRestore: 9,000 BOs in one drm file, and 7,000 BOs over 3
// processes sharing every 5th BO through dma-bufs, dump and restore bit
// for bit; the checkpoint has a fixed number of image files whatever the
// number of BOs; drmcrit verify passes.
func TestManyBOsDumpRestore(t *testing.T) {
	for name, m := range map[string]manyRun{
		"one-file":       {[]string{"-bos", "9000", "-procs", "1", "-bo-sizes", "4K,8K,64K"}, 9000},
		"three-procs":    {[]string{"-bos", "7000", "-procs", "3", "-bo-sizes", "4K,16K", "-share-every", "5"}, 7000},
		"large-and-anon": {[]string{"-bos", "24", "-procs", "2", "-bo-sizes", "4K,9M", "-share-every", "3", "-anon", "64M"}, 24},
	} {
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t)
			w, want, goFile := m.start(t, d)
			pids := w.Tree()
			img, log, err := dump(t, d, w)
			if err != nil {
				t.Fatalf("%v\nplugin log:\n%s", err, lastLines(pluginLines(log), 30))
			}
			if out, code := runDrmcrit(t, "verify", img); code != 0 {
				t.Fatalf("drmcrit verify: exit %d\n%s", code, lastLines(out, 20))
			}
			countImages(t, img, m.bos)
			waitGone(t, pids)
			if log, err := restore(t, d, img); err != nil {
				t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
			}
			if err := os.WriteFile(goFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if got := result(t, w); got != want {
				t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
			}
			waitIdle(t, d)
		})
	}
}

// countImages checks that the plugin's image files do not grow with the
// number of BOs: an inventory, an index, one pages file, and one image per
// drm file and per dma-buf fd.
func countImages(t *testing.T, img string, bos int) {
	t.Helper()
	d, err := images.OpenDir(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names, err := d.Names()
	if err != nil {
		t.Fatal(err)
	}
	inv := &images.Inventory{}
	if err := d.Read(images.InventoryName, inv); err != nil {
		t.Fatal(err)
	}
	if len(inv.Bos) != bos {
		t.Errorf("inventory lists %d BOs, the workload has %d", len(inv.Bos), bos)
	}
	x, err := d.ReadIndex()
	if err != nil {
		t.Fatal(err)
	}
	// One pages file per CPU, at most drmcore.MaxPagesFiles, whatever the
	// number of BOs.
	pages := len(x.Header.PagesFiles)
	if want := min(runtime.NumCPU(), drmcore.MaxPagesFiles); pages != want {
		t.Errorf("%d pages files, want %d (one per CPU, at most %d)", pages, want, drmcore.MaxPagesFiles)
	}
	if want := 2 + pages + len(inv.Files) + len(inv.Dmabufs); len(names) != want {
		t.Errorf("%d DRM image files for %d BOs, want %d: %v", len(names), bos, want, names)
	}
}

// TestDamagedContentsFailTheRestore: a checkpoint whose BO contents were
// changed after the dump does not restore: criu's restore fails before any
// task resumes, no task of the tree is left and the daemon holds nothing;
// the undamaged checkpoint then restores fine. The contents load while
// criu restores the tasks' memory, so the damage is found either before a
// task claims its drm file (the claim fails) or by RESUME_DEVICES_LATE,
// whose result criu ignores: the plugin then kills the task, and criu,
// still attached to it, fails the restore.
func TestDamagedContentsFailTheRestore(t *testing.T) {
	d := startDaemon(t)
	m := manyRun{[]string{"-bos", "40", "-procs", "2", "-bo-sizes", "4K,8M", "-share-every", "4"}, 40}
	w, want, goFile := m.start(t, d)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	bad := t.TempDir()
	if out, err := exec.Command("cp", "-a", img+"/.", bad).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	pages := filepath.Join(bad, images.PagesName(1))
	f, err := os.OpenFile(pages, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	b := []byte{0}
	f.ReadAt(b, st.Size()-100)
	b[0] ^= 0x01
	f.WriteAt(b, st.Size()-100)
	f.Close()

	log, err = restore(t, d, bad)
	if err == nil {
		t.Fatal("a checkpoint with damaged BO contents restored")
	}
	t.Logf("failed restore, plugin log:\n%s\ncriu log tail:\n%s", pluginLines(log), lastLines(log, 12))
	plugin := pluginLines(log)
	switch {
	case strings.Contains(plugin, "kernelsimd refused") && strings.Contains(plugin, "does not match the checksum recorded at dump"):
	case strings.Contains(plugin, "does not match the checksum recorded at dump") && strings.Contains(plugin, "so that criu fails the restore"):
	default:
		t.Errorf("the restore failed for another reason:\n%s", lastLines(log, 40))
	}
	if strings.Contains(log, "Restore finished successfully") {
		t.Error("criu says the restore finished")
	}
	// No task of the tree survives it (criu kills what it forked).
	waitGone(t, pids)
	waitIdle(t, d)

	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, d)
}
