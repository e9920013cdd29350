package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// TestDamagedImagesFailTheRestore: a real checkpoint of the pipeline
// workload (a long-running job preempted, a dma-buf shared between two
// processes), damaged in one way per case, makes `criu restore` exit
// non-zero with the plugin's message naming the image and the field in
// criu's log, before criu forks any task: no task of the tree runs and
// the daemon holds nothing. The undamaged checkpoint then restores and
// gives the result of an uninterrupted run.
func TestDamagedImagesFailTheRestore(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "pipeline")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	files := fileImages(t, img)

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string) string // returns what the log must say
	}{
		{"a GEM handle renumbered everywhere, not re-sealed", func(t *testing.T, dir string) string {
			name := files.withHandles
			editFile(t, dir, name, false, func(m *images.DrmFile) {
				old := m.State.Handles[0].Handle
				m.State.Handles[0].Handle = 77
				for _, mp := range m.State.Mappings {
					if mp.Handle == old {
						mp.Handle = 77
					}
				}
			})
			return name + ": changed after the dump: its blake3-256 digest is"
		}},
		{"overlapping VAs, re-sealed with drmcrit", func(t *testing.T, dir string) string {
			name := files.withMappings
			m := &images.DrmFile{}
			readImage(t, dir, name, m)
			m.State.Mappings[1].Va = m.State.Mappings[0].Va
			// Through drmcrit: decode the edited message, encode --reseal.
			js := decodeJSON(t, m, name)
			cmd := exec.Command(drmcrit, "encode", "-o", filepath.Join(dir, name), "--reseal")
			cmd.Stdin = strings.NewReader(js)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("drmcrit encode --reseal: %v\n%s", err, out)
			}
			return name + ": state.mappings[1]: ["
		}},
		{"garbage in-flight request", func(t *testing.T, dir string) string {
			name := files.withHandles
			editFile(t, dir, name, true, func(m *images.DrmFile) {
				m.State.Io = &uapi.PendingIO{Request: []byte("this is not a request packet")}
			})
			return name + ": state.io.request: not a packet"
		}},
		{"minor 129", func(t *testing.T, dir string) string {
			name := files.withHandles
			editFile(t, dir, name, true, func(m *images.DrmFile) { m.State.Minor = 129 })
			return name + ": state.minor: renderD129 is not one of the devices (renderD128 amdgpu)"
		}},
		{"unknown progress command", func(t *testing.T, dir string) string {
			name := files.withJob
			editFile(t, dir, name, true, func(m *images.DrmFile) {
				priv := &uapi.DriverPrivate{}
				must(t, proto.Unmarshal(m.State.DriverPrivate, priv))
				for _, c := range priv.Contexts {
					for _, j := range c.Jobs {
						j.ProgressCmd = 99
					}
				}
				b, err := proto.Marshal(priv)
				must(t, err)
				m.State.DriverPrivate = b
			})
			return name + ": state.driver_private.contexts[0].jobs[0].progress_cmd: gpu: progress at command 99"
		}},
		{"a FIFO in place of the pages file", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, images.PagesName(1))
			must(t, os.Remove(p))
			must(t, unix.Mkfifo(p, 0o600))
			return "open image drm-pages-1.img: not a regular file (a FIFO)"
		}},
		{"pages file /etc/passwd", func(t *testing.T, dir string) string {
			editIndex(t, dir, func(x *images.Index) { x.Header.PagesFiles[0] = "/etc/passwd" })
			return `drm-bo-index.img: pages_files[0]: "/etc/passwd", want drm-pages-1.img`
		}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			bad := t.TempDir()
			if out, err := exec.Command("cp", "-a", img+"/.", bad).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			wantMsg := tc.damage(t, bad)
			// drmcrit verify, with the same checks, refuses it too.
			if out, code := runDrmcrit(t, "verify", bad); code != 1 || !strings.Contains(out, wantMsg) {
				t.Errorf("drmcrit verify: exit %d, does not say %q:\n%s", code, wantMsg, out)
			}
			log, err := restore(t, d, bad)
			if err == nil {
				t.Fatal("criu restored a damaged checkpoint")
			}
			t.Logf("criu's log:\n%s", lastLines(log, 12))
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

// imageFiles names drm file images of a checkpoint by what they hold.
type imageFiles struct {
	withHandles  string // a file with GEM handles
	withMappings string // a file with two VA mappings or more
	withJob      string // a file with a saved job
}

func fileImages(t *testing.T, dir string) imageFiles {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "drm-file-*.img"))
	must(t, err)
	var f imageFiles
	for _, p := range names {
		name := filepath.Base(p)
		m := &images.DrmFile{}
		readImage(t, dir, name, m)
		if len(m.State.Handles) > 0 && f.withHandles == "" {
			f.withHandles = name
		}
		if len(m.State.Mappings) > 1 && f.withMappings == "" {
			f.withMappings = name
		}
		if len(m.State.JobFences) > 0 && f.withJob == "" {
			f.withJob = name
		}
	}
	if f.withHandles == "" || f.withMappings == "" || f.withJob == "" {
		t.Fatalf("the checkpoint lacks a file of each kind: %+v", f)
	}
	return f
}

func readImage(t *testing.T, dir, name string, m images.Versioned) {
	t.Helper()
	d, err := images.OpenDir(dir)
	must(t, err)
	defer d.Close()
	must(t, d.Read(name, m))
}

// editFile edits a file image and, when reseal is set, re-seals it as
// drmcrit encode --reseal does.
func editFile(t *testing.T, dir, name string, reseal bool, edit func(*images.DrmFile)) {
	t.Helper()
	d, err := images.OpenDir(dir)
	must(t, err)
	defer d.Close()
	m := &images.DrmFile{}
	must(t, d.Read(name, m))
	edit(m)
	must(t, d.Write(name, m))
	if reseal {
		must(t, d.Reseal(name))
	}
}

func editIndex(t *testing.T, dir string, edit func(*images.Index)) {
	t.Helper()
	d, err := images.OpenDir(dir)
	must(t, err)
	defer d.Close()
	x, err := d.ReadIndex()
	must(t, err)
	edit(x)
	w, err := d.CreateIndex(x.Header)
	must(t, err)
	for _, b := range x.Bos {
		must(t, w.AddBo(b))
	}
	for _, c := range x.Chunks {
		must(t, w.AddChunk(c))
	}
	must(t, w.Close())
	must(t, d.Reseal(images.IndexName))
}

// decodeJSON is drmcrit decode of a message: written to a scratch image
// and decoded by the drmcrit binary.
func decodeJSON(t *testing.T, m *images.DrmFile, name string) string {
	t.Helper()
	b, err := proto.Marshal(m)
	must(t, err)
	p := filepath.Join(t.TempDir(), name)
	must(t, os.WriteFile(p, b, 0o600))
	out, err := exec.Command(drmcrit, "decode", p).Output()
	if err != nil {
		t.Fatalf("drmcrit decode: %v", err)
	}
	return string(out)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
