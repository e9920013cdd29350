package drmcore_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
	"drmcr/subplugins"
)

// damageFixture is a checkpoint of this process with the state every kind
// of damage below edits: drm file A with two BOs mapped (the first
// exported, its dma-buf fd held), drm file B importing that BO, with a
// preempted long-running compute job, a job queued behind it waiting on
// it, and a syncobj holding the compute job's fence.
type damageFixture struct {
	env        *ksimtest.Env
	dir        string
	inoA, inoB uint64
	inoDmaBuf  uint64
	hA1, hB    uint32 // A's handle on the shared BO, B's
	base       kernelsim.Counts
}

func newDamageFixture(t *testing.T) *damageFixture {
	t.Helper()
	dev := kernelsim.DefaultDevice()
	dev.IterTime = time.Millisecond
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	f := &damageFixture{env: env, base: env.Kernel.Counts()}
	a, b := env.Open(t, 128), env.Open(t, 128)
	f.hA1 = ck(t).u32(a.BOCreate(2*page, uapi.Domain_DOMAIN_VRAM, 0x3, 0))
	hA2 := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxA := ck(t).u32(a.CtxCreate(0))
	fill(t, a, ctxA, f.hA1, 2*page, 7)
	fill(t, a, ctxA, hA2, page, 8)
	must(t, a.VMMap(f.hA1, 0, 0x100000, 2*page, 0))
	must(t, a.VMMap(hA2, 0, 0x200000, page, 0))
	fd, err := a.ExportDmaBuf(f.hA1)
	must(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	f.hB = ck(t).u32(b.ImportDmaBuf(fd))
	acc := ck(t).u32(b.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	out := ck(t).u32(b.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxB := ck(t).u32(b.CtxCreate(0))
	done := ck(t).u32(b.SyncobjCreate(false))
	// Hours of GPU time: the dump preempts it.
	_, err = b.Submit(&uapi.SubmitRequest{CtxId: ctxB, LongRunning: true, OutSyncobjs: []uint32{done},
		Bos:      []*uapi.SubmitBo{{Handle: f.hB}, {Handle: acc, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: page, Iterations: 1 << 30}}})
	must(t, err)
	_, err = b.Submit(&uapi.SubmitRequest{CtxId: ctxB,
		Bos:      []*uapi.SubmitBo{{Handle: acc}, {Handle: out, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpCopy), Dst: 1, Src: 0, Len: 8}}})
	must(t, err)
	f.dir, err = dump(t, env)
	must(t, err)
	f.inoA, f.inoB, f.inoDmaBuf = inode(t, a.FD()), inode(t, b.FD()), inode(t, fd)
	a.Close()
	b.Close()
	unix.Close(fd)
	return f
}

// copyDir copies a checkpoint directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return dst
}

func openImages(t *testing.T, dir string) *images.Dir {
	t.Helper()
	d, err := images.OpenDir(dir)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// The edits below change images as a person would on purpose and, unless
// told not to, re-seal them (drmcrit encode --reseal), so that the check
// of the field itself is what refuses them.

func editFile(t *testing.T, dir string, ino uint64, reseal bool, edit func(*images.DrmFile)) {
	t.Helper()
	d := openImages(t, dir)
	m := &images.DrmFile{}
	must(t, d.Read(images.FileName(ino), m))
	edit(m)
	must(t, d.Write(images.FileName(ino), m))
	if reseal {
		must(t, d.Reseal(images.FileName(ino)))
	}
}

func editBlob(t *testing.T, dir string, ino uint64, edit func(*uapi.DriverPrivate, *uapi.FileCheckpoint)) {
	t.Helper()
	editFile(t, dir, ino, true, func(m *images.DrmFile) {
		priv := &uapi.DriverPrivate{}
		must(t, proto.Unmarshal(m.State.DriverPrivate, priv))
		edit(priv, m.State)
		b, err := proto.Marshal(priv)
		must(t, err)
		m.State.DriverPrivate = b
	})
}

func editIndex(t *testing.T, dir string, reseal bool, edit func(*images.Index)) {
	t.Helper()
	d := openImages(t, dir)
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
	if reseal {
		must(t, d.Reseal(images.IndexName))
	}
}

func editInventory(t *testing.T, dir string, edit func(*images.Inventory)) {
	t.Helper()
	d := openImages(t, dir)
	inv := &images.Inventory{}
	must(t, d.Read(images.InventoryName, inv))
	edit(inv)
	must(t, d.WriteInventory(inv))
}

func job(priv *uapi.DriverPrivate, i int) *uapi.JobState { return priv.Contexts[0].Jobs[i] }

// mapping returns the file's mapping at va.
func mapping(st *uapi.FileCheckpoint, va uint64) *uapi.VaMapping {
	for _, m := range st.Mappings {
		if m.Va == va {
			return m
		}
	}
	return nil
}

// renumber gives handle h of a file image the number to, everywhere the
// image names it: an edit that leaves the image consistent in itself.
func renumber(t *testing.T, m *images.DrmFile, h, to uint32) {
	t.Helper()
	for _, x := range m.State.Handles {
		if x.Handle == h {
			x.Handle = to
		}
	}
	for _, x := range m.State.Mappings {
		if x.Handle == h {
			x.Handle = to
		}
	}
	priv := &uapi.DriverPrivate{}
	must(t, proto.Unmarshal(m.State.DriverPrivate, priv))
	for _, c := range priv.Contexts {
		for _, j := range c.Jobs {
			for _, b := range j.Bos {
				if b.Handle == h {
					b.Handle = to
				}
			}
		}
	}
	b, err := proto.Marshal(priv)
	must(t, err)
	m.State.DriverPrivate = b
}

// problemsOf runs the validation drmcrit verify and a restore both run.
func problemsOf(t *testing.T, dir string) string {
	t.Helper()
	ck, err := drmcore.ReadCheckpoint(openImages(t, dir), subplugins.All())
	must(t, err)
	var out []string
	for _, p := range ck.Problems {
		out = append(out, p.String())
	}
	return strings.Join(out, "\n")
}

// TestDamagedImagesAreRefused is the project's own test for each kind of
// damage to the plugin's images: the validation finds it, naming the
// image and the field, and the restore is refused before the kernel
// creates anything. The edits are re-sealed unless the case is about the
// seal.
func TestDamagedImagesAreRefused(t *testing.T) {
	f := newDamageFixture(t)
	if p := problemsOf(t, f.dir); p != "" {
		t.Fatalf("problems in a good checkpoint:\n%s", p)
	}
	pagesOf := func(dir string) string { return filepath.Join(dir, images.PagesName(1)) }
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   []string // in the problems and in the restore's error
	}{
		// Seals.
		{"GEM handle renumbered everywhere in its file", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoB, false, func(m *images.DrmFile) { renumber(t, m, f.hB, 77) })
		}, []string{images.FileName(f.inoB) + ": changed after the dump: its blake3-256 digest is "}},
		{"file image not sealed", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) {
				inv.Images = inv.Images[:0:0]
			})
		}, []string{images.FileName(f.inoA) + ": not sealed", images.IndexName + ": not sealed"}},
		{"inventory edited", func(t *testing.T, dir string) {
			d := openImages(t, dir)
			inv := &images.Inventory{}
			must(t, d.Read(images.InventoryName, inv))
			inv.Processes[0].Comm = "other"
			b, err := proto.Marshal(inv) // keeps the old seal
			must(t, err)
			must(t, d.WriteBytes(images.InventoryName, b))
		}, []string{"drm-inventory.img: seal: changed after the dump"}},
		{"wrong checksum", func(t *testing.T, dir string) {
			editIndex(t, dir, false, func(x *images.Index) { x.Chunks[0].Chunk.Checksum[0] ^= 1 })
		}, []string{"drm-bo-index.img: changed after the dump"}},

		// The core's fields.
		{"minor 129", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoA, true, func(m *images.DrmFile) { m.State.Minor = 129 })
		}, []string{images.FileName(f.inoA) + ": state.minor: renderD129 is not one of the devices (renderD128 amdgpu)"}},
		{"pid of another process", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoA, true, func(m *images.DrmFile) { m.Pid = 4242 })
		}, []string{images.FileName(f.inoA) + ": pid: 4242 does not hold it"}},
		{"runtime directory too long", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].RuntimeDir = "/" + strings.Repeat("x", 100) })
		}, []string{"drm-inventory.img: processes[0].runtime_dir: ", "is too long"}},
		{"runtime directory not absolute", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].RuntimeDir = "../run/kernelsim" })
		}, []string{"drm-inventory.img: processes[0].runtime_dir: \"../run/kernelsim\" is not a clean absolute path"}},
		{"incomplete", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Complete = false })
		}, []string{"drm-inventory.img: complete: false: the dump failed or missed objects"}},
		{"pages file pointing outside", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Header.PagesFiles[0] = "../other/drm-pages-1.img" })
		}, []string{`drm-bo-index.img: pages_files[0]: "../other/drm-pages-1.img", want drm-pages-1.img`}},
		{"pages file /etc/passwd", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Header.PagesFiles[0] = "/etc/passwd" })
		}, []string{`drm-bo-index.img: pages_files[0]: "/etc/passwd", want drm-pages-1.img`}},

		// The driver's blob.
		{"duplicate context id", func(t *testing.T, dir string) {
			editBlob(t, dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
				priv.Contexts = append(priv.Contexts, &uapi.ContextState{CtxId: priv.Contexts[0].CtxId})
			})
		}, []string{images.FileName(f.inoB) + ": state.driver_private.contexts[1].ctx_id: context 1 is listed twice"}},
		{"job command offset past its BO", func(t *testing.T, dir string) {
			editBlob(t, dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 1).Commands[0].SrcOff = page })
		}, []string{images.FileName(f.inoB) + ": state.driver_private.contexts[0].jobs[1].commands: gpu: command 0 (copy): src range [4096,+8) exceeds buffer 0 of 4096 bytes"}},
		{"unknown job BO handle", func(t *testing.T, dir string) {
			editBlob(t, dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 0).Bos[0].Handle = 99 })
		}, []string{images.FileName(f.inoB) + ": state.driver_private.contexts[0].jobs[0].bos[0].handle: 99 is not a handle of the file"}},
		{"job waiting on a fence that does not exist", func(t *testing.T, dir string) {
			editBlob(t, dir, f.inoB, func(priv *uapi.DriverPrivate, st *uapi.FileCheckpoint) {
				job(priv, 1).DepFenceIds = []uint64{999}
				st.WaitsOnFences = []uint64{999}
			})
		}, []string{images.FileName(f.inoB) + ": state.waits_on_fences[0]: saved work waits on fence 999, which no saved job of the checkpoint provides"}},
		{"syncobj pointing at a fence that does not exist", func(t *testing.T, dir string) {
			editBlob(t, dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[0].FenceId = 12345 })
		}, []string{images.FileName(f.inoB) + ": state.driver_private.syncobjs[0].fence_id: syncobj 1 holds fence 12345, which no saved job of the file has"}},
		{"unknown progress command", func(t *testing.T, dir string) {
			editBlob(t, dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { job(priv, 0).ProgressCmd = 3 })
		}, []string{images.FileName(f.inoB) + ": state.driver_private.contexts[0].jobs[0].progress_cmd: gpu: progress at command 3 of a 1-command job"}},

		// The kernel's objects.
		{"overlapping VAs", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoA, true, func(m *images.DrmFile) { mapping(m.State, 0x200000).Va = 0x101000 })
		}, []string{images.FileName(f.inoA) + ": state.mappings[1]: [0x101000, 0x102000) overlaps mappings[0] [0x100000, 0x102000)"}},
		{"mapping larger than its BO", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoA, true, func(m *images.DrmFile) { mapping(m.State, 0x200000).Size = 2 * page })
		}, []string{images.FileName(f.inoA) + ": state.mappings[1].size: 0x2000 bytes from offset 0x0 do not fit in BO"}},
		{"mapping offset past the end of its BO", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoA, true, func(m *images.DrmFile) { mapping(m.State, 0x200000).BoOffset = 4 * page })
		}, []string{images.FileName(f.inoA) + ": state.mappings[1].bo_offset: 0x4000 is past the end of BO"}},
		{"garbage in-flight request", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoA, true, func(m *images.DrmFile) {
				m.State.Io = &uapi.PendingIO{Request: []byte("\x00\x01garbage, not a request\xff")}
			})
		}, []string{images.FileName(f.inoA) + ": state.io.request: not a packet: bad magic"}},
		{"GEM handle near 2^32", func(t *testing.T, dir string) {
			editFile(t, dir, f.inoB, true, func(m *images.DrmFile) { renumber(t, m, f.hB, 1<<32-2) })
		}, []string{images.FileName(f.inoB) + ": state.handles[0].handle: 4294967294 is not a GEM handle (1 to 2147483647)"}},
		{"doubled BO size", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Bos[0].State.Size *= 2 })
		}, []string{images.FileName(f.inoA) + ": state.bos[0]: BO 1 (8192 bytes DOMAIN_VRAM flags 0x3 alignment 4096 on renderD128, dma-buf inode ", ") differs from its record (16384 bytes"}},
		{"doubled BO size everywhere", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Bos[0].State.Size *= 2 })
			for _, ino := range []uint64{f.inoA, f.inoB} {
				editFile(t, dir, ino, true, func(m *images.DrmFile) { m.State.Bos[0].Size *= 2 })
			}
		}, []string{images.IndexName + ": BO ", " offset: bytes [8192, 12288) of drm-pages-1.img are BO 1's too"}},
		{"doubled size of the last BO", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Bos[len(x.Bos)-1].State.Size *= 2 })
		}, []string{images.IndexName + ": BO ", " contents: bytes [4096, 8192) of its 8192 are covered by no checksummed chunk of drm-pages-1.img"}},
		{"empty checksum", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Chunks[0].Chunk.Checksum = nil })
		}, []string{images.IndexName + ": drm-pages-1.img chunk [0, ", "a checksum of 0 bytes, want 16 (xxh3-128): its bytes could not be checked"}},

		// Image files that are not regular files of the directory.
		{"FIFO in place of the pages file", func(t *testing.T, dir string) {
			must(t, os.Remove(pagesOf(dir)))
			must(t, unix.Mkfifo(pagesOf(dir), 0o600))
		}, []string{"open image drm-pages-1.img: not a regular file (a FIFO)"}},
		{"FIFO in place of a file image", func(t *testing.T, dir string) {
			p := filepath.Join(dir, images.FileName(f.inoA))
			must(t, os.Remove(p))
			must(t, unix.Mkfifo(p, 0o600))
		}, []string{images.FileName(f.inoA) + ": open image " + images.FileName(f.inoA) + ": not a regular file (a FIFO)"}},
		{"pages file a symlink out", func(t *testing.T, dir string) {
			must(t, os.Remove(pagesOf(dir)))
			must(t, os.Symlink(pagesOf(f.dir), pagesOf(dir)))
		}, []string{"open image drm-pages-1.img: "}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, f.dir)
			tc.damage(t, dir)
			probs := problemsOf(t, dir)
			_, err := restore(t, f.env, dir, concurrently, false)
			if err == nil {
				t.Fatalf("restore of a damaged checkpoint succeeded; problems:\n%s", probs)
			}
			contentsOnly := strings.HasPrefix(tc.name, "FIFO in place of the pages") || strings.HasPrefix(tc.name, "pages file a symlink")
			for _, w := range tc.want {
				if !contentsOnly && !strings.Contains(probs, w) {
					t.Errorf("the checks do not say %q:\n%s", w, probs)
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the restore's error does not say %q:\n%v", w, err)
				}
			}
			// Nothing was created, or what was is gone.
			waitCounts(t, f.env, f.base)
		})
	}
}

// TestDamagedContentsAreRefused: contents that changed after the dump fail
// the restore once the kernel loads them (criu's RESUME_DEVICES_LATE),
// before any context resumes: a pages file swapped in from another
// checkpoint, and a chunk whose checksum was changed and re-sealed.
func TestDamagedContentsAreRefused(t *testing.T) {
	f := newDamageFixture(t)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"pages from another checkpoint", func(t *testing.T, dir string) {
			b, err := os.ReadFile(filepath.Join(f.dir, images.PagesName(1)))
			must(t, err)
			for i := range b {
				b[i] ^= 0x55 // another checkpoint's bytes, same size
			}
			must(t, os.WriteFile(filepath.Join(dir, images.PagesName(1)), b, 0o600))
		}},
		{"wrong checksum, re-sealed", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { x.Chunks[0].Chunk.Checksum[0] ^= 1 })
		}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, f.dir)
			tc.damage(t, dir)
			if p := problemsOf(t, dir); p != "" {
				t.Fatalf("the images' checks (which read no contents) found:\n%s", p)
			}
			_, err := restore(t, f.env, dir, concurrently, false)
			if err == nil || !strings.Contains(err.Error(), "does not match the checksum recorded at dump") || !strings.Contains(err.Error(), "of drm-pages-1.img)") {
				t.Fatalf("restore of damaged contents: %v", err)
			}
			waitCounts(t, f.env, f.base)
		})
	}
}

// TestHandleRenumberedOnPurpose: an image edited on purpose and re-sealed
// restores: a GEM handle of 2^24, renumbered everywhere in its file,
// comes back under that number at once (the kernel takes any handle up to
// 2^31-1 in O(1) memory).
func TestHandleRenumberedOnPurpose(t *testing.T) {
	f := newDamageFixture(t)
	dir := copyDir(t, f.dir)
	editFile(t, dir, f.inoB, true, func(m *images.DrmFile) { renumber(t, m, f.hB, 1<<24) })
	if p := problemsOf(t, dir); p != "" {
		t.Fatalf("problems:\n%s", p)
	}
	fds, err := restore(t, f.env, dir, concurrently, false)
	must(t, err)
	b := libdrm.FromFD(fds[f.inoB])
	info, err := b.BOInfo(1 << 24)
	if err != nil || info.Size != 2*page {
		t.Fatalf("BO at handle 2^24 after restore: %v %v", info, err)
	}
	if _, err := b.BOInfo(f.hB); err == nil {
		t.Fatalf("the old handle %d still exists", f.hB)
	}
}

// TestDumpSealsEveryImage: a dump seals every image but the pages files,
// records the devices its files and BOs are on, and marks nothing in
// flight that a task held.
func TestDumpSealsEveryImage(t *testing.T) {
	f := newDamageFixture(t)
	d := openImages(t, f.dir)
	inv, probs, err := d.ReadInventory()
	must(t, err)
	if len(probs) != 0 {
		t.Fatalf("inventory: %v", probs)
	}
	var sealed []string
	for _, s := range inv.Images {
		sealed = append(sealed, s.Name)
	}
	want := []string{images.IndexName, images.DmaBufName(f.inoDmaBuf), images.FileName(f.inoA), images.FileName(f.inoB)}
	for _, w := range want {
		found := false
		for _, s := range sealed {
			found = found || s == w
		}
		if !found {
			t.Errorf("%s not sealed (sealed: %v)", w, sealed)
		}
	}
	if len(sealed) != len(want) {
		t.Errorf("sealed %v, want %v", sealed, want)
	}
	if len(inv.Devices) != 1 || inv.Devices[0].Minor != 128 || inv.Devices[0].Driver != "amdgpu" || inv.Devices[0].GpuId == 0 {
		t.Errorf("devices %v", inv.Devices)
	}
	ck, err := drmcore.ReadCheckpoint(d, subplugins.All())
	must(t, err)
	for _, fi := range ck.FileList {
		if fi.InFlight {
			t.Errorf("drm file inode %d marked in flight", fi.Inode)
		}
	}
}

// TestInFlightDmaBuf: a dma-buf that no task held at the dump, dumped by
// criu from a unix socket's queue, is marked in flight and is no problem;
// one that no task held and is not marked in flight is.
func TestInFlightDmaBuf(t *testing.T) {
	f := newDamageFixture(t)
	dir := copyDir(t, f.dir)
	d := openImages(t, dir)
	m := &images.DmaBuf{}
	must(t, d.Read(images.DmaBufName(f.inoDmaBuf), m))
	m.Pid, m.InFlight = 0, true
	must(t, d.Write(images.DmaBufName(f.inoDmaBuf), m))
	must(t, d.Reseal(images.DmaBufName(f.inoDmaBuf)))
	editInventory(t, dir, func(inv *images.Inventory) {
		var keep []uint64
		for _, ino := range inv.Processes[0].Inodes {
			if ino != f.inoDmaBuf {
				keep = append(keep, ino)
			}
		}
		inv.Processes[0].Inodes = keep
	})
	if p := problemsOf(t, dir); p != "" {
		t.Fatalf("a dma-buf in flight:\n%s", p)
	}
	m.InFlight = false
	must(t, d.Write(images.DmaBufName(f.inoDmaBuf), m))
	must(t, d.Reseal(images.DmaBufName(f.inoDmaBuf)))
	if p := problemsOf(t, dir); !strings.Contains(p, images.DmaBufName(f.inoDmaBuf)+": held by none of the inventory's processes, and not in flight") {
		t.Fatalf("a dma-buf no task held, not in flight:\n%s", p)
	}
}
