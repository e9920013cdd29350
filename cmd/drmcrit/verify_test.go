package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

func TestVerifyGood(t *testing.T) {
	f := richFixture(t)
	code, out, errs := runCmd(t, nil, "verify", f.dir)
	if code != 0 || !strings.Contains(out, "GPU state OK") || errs != "" {
		t.Fatalf("verify of a good dump: %d\n%s%s", code, out, errs)
	}
}

// TestVerifyDamage: each kind of damage is reported with its own message
// and a non-zero exit.
func TestVerifyDamage(t *testing.T) {
	f := richFixture(t)
	editFile := func(dir string, ino uint64, edit func(*images.DrmFile)) {
		m := &images.DrmFile{}
		readImg(t, dir, images.FileName(ino), m)
		edit(m)
		writeImg(t, dir, images.FileName(ino), m)
	}
	editIndex := func(dir string, edit func(*images.Index)) {
		d, err := images.OpenDir(dir)
		must(t, err)
		defer d.Close()
		x, err := d.ReadIndex()
		must(t, err)
		edit(x)
		writeIndex(t, d, x)
	}
	editBo := func(dir string, id uint64, edit func(*images.Bo)) {
		editIndex(dir, func(x *images.Index) {
			for _, b := range x.Bos {
				if b.State.BoId == id {
					edit(b)
				}
			}
		})
	}
	dropBo := func(dir string, id uint64) {
		editIndex(dir, func(x *images.Index) {
			var keep []*images.Bo
			for _, b := range x.Bos {
				if b.State.BoId != id {
					keep = append(keep, b)
				}
			}
			x.Bos = keep
		})
	}
	editInv := func(dir string, edit func(*images.Inventory)) {
		m := &images.Inventory{}
		readImg(t, dir, images.InventoryName, m)
		edit(m)
		writeImg(t, dir, images.InventoryName, m)
	}
	pages := func(dir string) string { return filepath.Join(dir, images.PagesName(1)) }
	offsetOf := func(id uint64) int {
		d, err := images.OpenDir(f.dir)
		must(t, err)
		defer d.Close()
		x, err := d.ReadIndex()
		must(t, err)
		for _, b := range x.Bos {
			if b.State.BoId == id {
				return int(b.Offset)
			}
		}
		t.Fatalf("BO %d not in the index", id)
		return 0
	}
	without := func(l []uint64, x uint64) []uint64 {
		var out []uint64
		for _, v := range l {
			if v != x {
				out = append(out, v)
			}
		}
		return out
	}
	shared := f.sharedBo
	for _, tc := range []struct {
		name   string
		damage func(dir string)
		want   []string
	}{
		{"pages deleted", func(dir string) { must(t, os.Remove(pages(dir))) },
			[]string{"open image drm-pages-1.img: no such file"}},
		{"pages truncated", func(dir string) { must(t, os.Truncate(pages(dir), page)) },
			[]string{"drm-pages-1.img: chunk [0, ", ") is cut short at byte 4096"}},
		{"pages byte flipped", func(dir string) {
			b, err := os.ReadFile(pages(dir))
			must(t, err)
			b[offsetOf(shared)+100] ^= 0x40
			must(t, os.WriteFile(pages(dir), b, 0o600))
		}, []string{"drm-pages-1.img: chunk [", ") does not match its blake3-256 checksum (BO", fmt.Sprint(shared)}},
		{"checksum emptied", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Chunks[0].Chunk.Checksum = nil })
		}, []string{"drm-bo-index.img: chunk [0, ", ") of drm-pages-1.img has no checksum"}},
		{"chunk dropped", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Chunks = x.Chunks[1:] })
		}, []string{"are covered by no checksummed chunk"}},
		{"stray pages file", func(dir string) { must(t, os.WriteFile(filepath.Join(dir, images.PagesName(2)), nil, 0o600)) },
			[]string{"drm-pages-2.img: a pages file the index does not list"}},
		{"wait on an undumped job", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.WaitsOnFences = append(m.State.WaitsOnFences, 987654) })
		}, []string{fmt.Sprintf("drm file inode %d: queued work waits on fence 987654, which no dumped job provides", f.inoA)}},
		{"handle duplicated", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.Handles[1].Handle = m.State.Handles[0].Handle })
		}, []string{fmt.Sprintf("drm file inode %d: handle %d is used twice (BOs %d and %d)", f.inoA, f.hA1, shared, shared+1)}},
		{"VA overlap", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) {
				for _, mp := range m.State.Mappings {
					if mp.Va == 0x200000 {
						mp.Va = 0x101000
					}
				}
			})
		}, []string{fmt.Sprintf("drm file inode %d: VA ranges overlap: [0x100000, 0x102000) of handle %d and [0x101000, 0x102000) of handle %d", f.inoA, f.hA1, f.hA2)}},
		{"BO record missing", func(dir string) { dropBo(dir, f.dstBo) },
			[]string{fmt.Sprintf("inventory: BO %d has no record in drm-bo-index.img", f.dstBo),
				fmt.Sprintf("handle 3 refers to BO %d, which was not dumped", f.dstBo),
				fmt.Sprintf("job 5 refers to BO %d, which was not dumped", f.dstBo)}},
		{"BO not dumped", func(dir string) {
			editInv(dir, func(m *images.Inventory) { m.Bos = without(m.Bos, shared) })
			dropBo(dir, shared)
		}, []string{
			fmt.Sprintf("drm file inode %d: handle %d refers to BO %d, which was not dumped", f.inoA, f.hA1, shared),
			fmt.Sprintf("dma-buf inode %d: BO %d was not dumped (no record)", f.inoDmaB, shared)}},
		{"bad version", func(dir string) { editBo(dir, shared, func(m *images.Bo) { m.Version = 1 }) },
			[]string{"image drm-bo-index.img record ", ": format version 1, this plugin reads version 2"}},
		{"bad inventory version", func(dir string) { editInv(dir, func(m *images.Inventory) { m.Version = 9 }) },
			[]string{"image drm-inventory.img: format version 9"}},
		{"incomplete inventory", func(dir string) { editInv(dir, func(m *images.Inventory) { m.Complete = false }) },
			[]string{"inventory: marked incomplete"}},
		{"inventory misses a file", func(dir string) {
			editInv(dir, func(m *images.Inventory) { m.Files = without(m.Files, f.inoB) })
		}, []string{fmt.Sprintf("drm-file-%d.img: not listed in the inventory", f.inoB),
			fmt.Sprintf("inventory: pid %d holds inode %d, which is neither", f.pid, f.inoB)}},
		{"inventory missing", func(dir string) { must(t, os.Remove(filepath.Join(dir, images.InventoryName))) },
			[]string{"DRM images without drm-inventory.img: the dump did not finish"}},
		{"index missing", func(dir string) { must(t, os.Remove(filepath.Join(dir, images.IndexName))) },
			[]string{"open image drm-bo-index.img: no such file"}},
		{"shared key twice", func(dir string) {
			editBo(dir, f.srcBo, func(m *images.Bo) { m.State.DmabufInode = f.inoDmaB })
		}, []string{fmt.Sprintf("shared key: dma-buf inode %d has 2 BO records (BOs [%d %d])", f.inoDmaB, shared, f.srcBo)}},
		{"dma-buf of another BO", func(dir string) {
			m := &images.DmaBuf{}
			readImg(t, dir, images.DmaBufName(f.inoDmaB), m)
			m.BoId = 777
			writeImg(t, dir, images.DmaBufName(f.inoDmaB), m)
		}, []string{fmt.Sprintf("dma-buf inode %d: BO 777 was not dumped (no record)", f.inoDmaB)}},
		{"driver blob garbled", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.State.DriverPrivate = []byte{0xff, 0xff} })
		}, []string{fmt.Sprintf("drm file inode %d: driver blob:", f.inoB)}},
		{"driver blob of another version", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.DriverVersion = 3 })
		}, []string{fmt.Sprintf("drm file inode %d: driver blob version 1, image says 3", f.inoB)}},
		{"unknown driver", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.Driver, m.State.Driver = "xe", "xe" })
		}, []string{fmt.Sprintf("drm file inode %d: no decoder for driver \"xe\"", f.inoB)}},
		{"mapping past its BO", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) {
				m.State.Mappings = append(m.State.Mappings, &uapi.VaMapping{Handle: uint32(f.hA2), BoOffset: page, Va: 0x900000, Size: page})
			})
		}, []string{"VA mapping at 0x900000 (BO offset 0x1000, size 0x1000) does not fit in BO"}},
		{"file state differs from the BO record", func(dir string) {
			editBo(dir, shared, func(m *images.Bo) { m.State.Flags = 0x80 })
		}, []string{fmt.Sprintf("BO %d: the file's state (8192 bytes, VRAM, flags 0x3, minor 128) differs from its record (8192 bytes, VRAM, flags 0x80, minor 128)", shared)}},
		{"garbled file image", func(dir string) {
			must(t, os.WriteFile(filepath.Join(dir, images.FileName(f.inoA)), []byte("\x22\xff\xff\xff"), 0o600))
		}, []string{fmt.Sprintf("image drm-file-%d.img: ", f.inoA)}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, f.dir)
			tc.damage(dir)
			code, out, errs := runCmd(t, nil, "verify", dir)
			if code != 1 {
				t.Fatalf("verify of a damaged dump: status %d\n%s%s", code, out, errs)
			}
			all := out + errs
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("verify does not say %q:\n%s", w, all)
				}
			}
			// One problem per line, each naming the directory.
			if out != "" {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				for _, l := range lines[:len(lines)-1] {
					if !strings.HasPrefix(l, filepath.Clean(dir)+": ") {
						t.Errorf("line %q does not start with the directory", l)
					}
				}
				if last := lines[len(lines)-1]; last != fmt.Sprintf("%d problem(s)", len(lines)-1) {
					t.Errorf("last line %q", last)
				}
			}
			t.Logf("\n%s%s", out, errs)
		})
	}
}

// writeIndex rewrites a directory's BO index from x.
func writeIndex(t *testing.T, d *images.Dir, x *images.Index) {
	t.Helper()
	w, err := d.CreateIndex(x.Header)
	must(t, err)
	for _, b := range x.Bos {
		must(t, w.AddBo(b))
	}
	for _, c := range x.Chunks {
		must(t, w.AddChunk(c))
	}
	must(t, w.Close())
}
