package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

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
		t.Helper()
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
	editBlob := func(dir string, ino uint64, edit func(*uapi.DriverPrivate, *uapi.FileCheckpoint)) {
		editFile(dir, ino, func(m *images.DrmFile) {
			priv := &uapi.DriverPrivate{}
			must(t, proto.Unmarshal(m.State.DriverPrivate, priv))
			edit(priv, m.State)
			b, err := proto.Marshal(priv)
			must(t, err)
			m.State.DriverPrivate = b
		})
	}
	fileA, fileB := images.FileName(f.inoA), images.FileName(f.inoB)
	shared := f.sharedBo
	for _, tc := range []struct {
		name   string
		damage func(dir string)
		want   []string
	}{
		// Contents.
		{"pages deleted", func(dir string) { must(t, os.Remove(pages(dir))) },
			[]string{"drm-pages-1.img: open image drm-pages-1.img: no such file"}},
		{"pages truncated", func(dir string) { must(t, os.Truncate(pages(dir), page)) },
			[]string{"drm-pages-1.img: chunk [0, ", "): cut short at byte 4096"}},
		{"pages byte flipped", func(dir string) {
			b, err := os.ReadFile(pages(dir))
			must(t, err)
			b[offsetOf(shared)+100] ^= 0x40
			must(t, os.WriteFile(pages(dir), b, 0o600))
		}, []string{"drm-pages-1.img: chunk [", "): does not match its xxh3-128 checksum (BO", fmt.Sprint(shared)}},
		{"pages swapped in from another checkpoint", func(dir string) {
			b, err := os.ReadFile(pages(dir))
			must(t, err)
			for i := range b {
				b[i] = byte(i)
			}
			must(t, os.WriteFile(pages(dir), b, 0o600))
		}, []string{"drm-pages-1.img: chunk [0, ", "): does not match its xxh3-128 checksum"}},
		{"FIFO in place of the pages file", func(dir string) {
			must(t, os.Remove(pages(dir)))
			must(t, unix.Mkfifo(pages(dir), 0o600))
		}, []string{"drm-pages-1.img: open image drm-pages-1.img: not a regular file (a FIFO)"}},
		{"FIFO in place of a file image", func(dir string) {
			p := filepath.Join(dir, fileA)
			must(t, os.Remove(p))
			must(t, unix.Mkfifo(p, 0o600))
		}, []string{fileA + ": open image " + fileA + ": not a regular file (a FIFO)"}},
		{"checksum emptied", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Chunks[0].Chunk.Checksum = nil })
		}, []string{"drm-bo-index.img: drm-pages-1.img chunk [0, ", "): a checksum of 0 bytes, want 16 (xxh3-128): its bytes could not be checked"}},
		{"wrong checksum", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Chunks[0].Chunk.Checksum[3] ^= 1 })
		}, []string{"drm-pages-1.img: chunk [0, ", "): does not match its xxh3-128 checksum"}},
		{"chunk dropped", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Chunks = x.Chunks[1:] })
		}, []string{"are covered by no checksummed chunk of drm-pages-1.img"}},
		{"stray pages file", func(dir string) { must(t, os.WriteFile(filepath.Join(dir, images.PagesName(3)), nil, 0o600)) },
			[]string{"drm-pages-3.img: a pages file the index does not list"}},
		{"pages file ../other", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Header.PagesFiles[0] = "../other/drm-pages-1.img" })
		}, []string{`drm-bo-index.img: pages_files[0]: "../other/drm-pages-1.img", want drm-pages-1.img`}},
		{"pages file /etc/passwd", func(dir string) {
			editIndex(dir, func(x *images.Index) { x.Header.PagesFiles[0] = "/etc/passwd" })
		}, []string{`drm-bo-index.img: pages_files[0]: "/etc/passwd", want drm-pages-1.img`}},

		// Seals.
		{"file edited, not re-sealed", func(dir string) {
			m := &images.DrmFile{}
			readImg(t, dir, fileA, m)
			m.State.Handles[0].Handle = 77
			writeRaw(t, dir, fileA, m)
		}, []string{fileA + ": changed after the dump: its blake3-256 digest is ", "(drmcrit encode --reseal re-seals an image edited on purpose)"}},

		// The seven kinds of damage verify used to miss.
		{"minor 129", func(dir string) { editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.Minor = 129 }) },
			[]string{fileA + ": state.minor: renderD129 is not one of the devices (renderD128 amdgpu)"}},
		{"garbage in-flight request", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.Io = &uapi.PendingIO{Request: []byte("\x10garbage!")} })
		}, []string{fileA + ": state.io.request: not a packet"}},
		{"duplicate context id", func(dir string) {
			editBlob(dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
				priv.Contexts = append(priv.Contexts, &uapi.ContextState{CtxId: f.ctxB})
			})
		}, []string{fmt.Sprintf("%s: state.driver_private.contexts[1].ctx_id: context %d is listed twice", fileB, f.ctxB)}},
		{"job command offset past its BO", func(dir string) {
			editBlob(dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
				priv.Contexts[0].Jobs[0].Commands[0].SrcOff = page
			})
		}, []string{fileB + ": state.driver_private.contexts[0].jobs[0].commands: gpu: command 0 (compute): src range [4096,+4096) exceeds buffer 0 of 4096 bytes"}},
		{"unknown job BO handle", func(dir string) {
			editBlob(dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Contexts[0].Jobs[0].Bos[0].Handle = 99 })
		}, []string{fileB + ": state.driver_private.contexts[0].jobs[0].bos[0].handle: 99 is not a handle of the file"}},
		{"job waiting on a fence that does not exist", func(dir string) {
			editBlob(dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) {
				priv.Contexts[0].Jobs[0].DepFenceIds = []uint64{987654}
			})
		}, []string{fileB + ": state.driver_private.contexts[0].jobs[0].dep_fence_ids[0]: fence 987654 is missing from state.waits_on_fences"}},
		{"syncobj pointing at a fence that does not exist", func(dir string) {
			editBlob(dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Syncobjs[0].FenceId = 4242 })
		}, []string{fileB + ": state.driver_private.syncobjs[0].fence_id: syncobj 1 holds fence 4242, which no saved job of the file has"}},

		// The rest of the list.
		{"wait on an undumped job", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.WaitsOnFences = append(m.State.WaitsOnFences, 987654) })
		}, []string{fileA + ": state.waits_on_fences[0]: saved work waits on fence 987654, which no saved job of the checkpoint provides"}},
		{"unknown progress command", func(dir string) {
			editBlob(dir, f.inoB, func(priv *uapi.DriverPrivate, _ *uapi.FileCheckpoint) { priv.Contexts[0].Jobs[0].ProgressCmd = 4 })
		}, []string{fileB + ": state.driver_private.contexts[0].jobs[0].progress_cmd: gpu: progress at command 4 of a 1-command job"}},
		{"handle duplicated", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.Handles[1].Handle = m.State.Handles[0].Handle })
		}, []string{fmt.Sprintf("%s: state.handles[1].handle: %d is used twice", fileA, f.hA1)}},
		{"GEM handle near 2^32", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) { m.State.Handles[1].Handle = 1<<32 - 1 })
		}, []string{fileA + ": state.handles[1].handle: 4294967295 is not a GEM handle (1 to 2147483647)"}},
		{"VA overlap", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) {
				for _, mp := range m.State.Mappings {
					if mp.Va == 0x200000 {
						mp.Va = 0x101000
					}
				}
			})
		}, []string{fileA + ": state.mappings[1]: [0x101000, 0x102000) overlaps mappings[0] [0x100000, 0x102000)"}},
		{"mapping larger than its BO", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) {
				m.State.Mappings = append(m.State.Mappings, &uapi.VaMapping{Handle: uint32(f.hA2), Va: 0x900000, Size: 2 * page})
			})
		}, []string{fileA + ": state.mappings[2].size: 0x2000 bytes from offset 0x0 do not fit in BO"}},
		{"mapping offset past its BO", func(dir string) {
			editFile(dir, f.inoA, func(m *images.DrmFile) {
				m.State.Mappings = append(m.State.Mappings, &uapi.VaMapping{Handle: uint32(f.hA2), BoOffset: 2 * page, Va: 0x900000, Size: page})
			})
		}, []string{fileA + ": state.mappings[2].bo_offset: 0x2000 is past the end of BO"}},
		{"doubled BO size", func(dir string) {
			editIndex(dir, func(x *images.Index) {
				for _, b := range x.Bos {
					if b.State.BoId == shared {
						b.State.Size *= 2
					}
				}
			})
		}, []string{fmt.Sprintf("%s: state.bos[0]: BO %d (8192 bytes DOMAIN_VRAM", fileA, shared), ") differs from its record (16384 bytes"}},
		{"BO record missing", func(dir string) { dropBo(dir, f.dstBo) },
			[]string{fmt.Sprintf("drm-inventory.img: bos: BO %d has no record in drm-bo-index.img", f.dstBo),
				fmt.Sprintf("%s: state.handles[2].bo_id: BO %d is not a BO of the checkpoint", fileB, f.dstBo),
				fmt.Sprintf("%s: state.driver_private.contexts[0].jobs[0].bo_ids[1]: BO %d is not a BO of the checkpoint", fileB, f.dstBo)}},
		{"BO not dumped", func(dir string) {
			editInv(dir, func(m *images.Inventory) { m.Bos = without(m.Bos, shared) })
			dropBo(dir, shared)
		}, []string{
			fmt.Sprintf("%s: state.handles[0].bo_id: BO %d is not a BO of the checkpoint", fileA, shared),
			fmt.Sprintf("%s: bo_id: BO %d is not a BO of the checkpoint", images.DmaBufName(f.inoDmaB), shared)}},
		{"bad version", func(dir string) { editBo(dir, shared, func(m *images.Bo) { m.Version = 1 }) },
			[]string{"drm-bo-index.img: image drm-bo-index.img record ", fmt.Sprintf(": format version 1, this plugin reads versions %d to %d", images.MinVersion, images.Version)}},
		{"bad inventory version", func(dir string) {
			m := &images.Inventory{}
			readImg(t, dir, images.InventoryName, m)
			m.Version = 9
			writeRaw(t, dir, images.InventoryName, m)
		}, []string{"image drm-inventory.img: format version 9"}},
		{"incomplete inventory", func(dir string) { editInv(dir, func(m *images.Inventory) { m.Complete = false }) },
			[]string{"drm-inventory.img: complete: false: the dump failed or missed objects"}},
		{"inventory misses a file", func(dir string) {
			editInv(dir, func(m *images.Inventory) { m.Files = without(m.Files, f.inoB) })
		}, []string{fileB + ": not listed in the inventory",
			fmt.Sprintf("pid %d holds inode %d, which is neither a dumped drm file, reply channel nor dma-buf", f.pid, f.inoB)}},
		{"inventory missing", func(dir string) { must(t, os.Remove(filepath.Join(dir, images.InventoryName))) },
			[]string{"DRM images without drm-inventory.img: the dump did not finish"}},
		{"index missing", func(dir string) { must(t, os.Remove(filepath.Join(dir, images.IndexName))) },
			[]string{"drm-bo-index.img: open image drm-bo-index.img: no such file"}},
		{"shared key twice", func(dir string) {
			editBo(dir, f.srcBo, func(m *images.Bo) { m.State.DmabufInode = f.inoDmaB })
		}, []string{fmt.Sprintf("drm-bo-index.img: BO %d dmabuf_inode: %d, the dma-buf of BO %d too", f.srcBo, f.inoDmaB, shared)}},
		{"dma-buf of another BO", func(dir string) {
			m := &images.DmaBuf{}
			readImg(t, dir, images.DmaBufName(f.inoDmaB), m)
			m.BoId = 777
			writeImg(t, dir, images.DmaBufName(f.inoDmaB), m)
		}, []string{fmt.Sprintf("%s: bo_id: BO 777 is not a BO of the checkpoint", images.DmaBufName(f.inoDmaB))}},
		{"driver blob garbled", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.State.DriverPrivate = []byte{0xff, 0xff} })
		}, []string{fileB + ": state.driver_private: driver blob:"}},
		{"driver blob of another version", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.DriverVersion = 3 })
		}, []string{fileB + ": driver_version: 3, the blob's is 1"}},
		{"unknown driver", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.Driver, m.State.Driver = "i915", "i915" })
		}, []string{fileB + `: driver: no sub-plugin for driver "i915"`, fileB + `: state.driver: "i915", but renderD128 is amdgpu`}},
		{"an amdgpu file said to be xe", func(dir string) {
			editFile(dir, f.inoB, func(m *images.DrmFile) { m.Driver, m.State.Driver = "xe", "xe" })
		}, []string{fileB + `: state.driver_private: driver blob is for "amdgpu", not xe`, fileB + `: state.driver: "xe", but renderD128 is amdgpu`}},
		{"file state differs from the BO record", func(dir string) {
			editBo(dir, shared, func(m *images.Bo) { m.State.Flags = 0x80 })
		}, []string{fmt.Sprintf("%s: state.bos[0]: BO %d (8192 bytes DOMAIN_VRAM flags 0x3 alignment 4096 on renderD128, dma-buf inode %d) differs from its record (8192 bytes DOMAIN_VRAM flags 0x80", fileA, shared, f.inoDmaB)}},
		{"garbled file image", func(dir string) {
			must(t, os.WriteFile(filepath.Join(dir, fileA), []byte("\x22\xff\xff\xff"), 0o600))
			reseal(t, dir, fileA)
		}, []string{fmt.Sprintf("%s: image %s: ", fileA, fileA)}},
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
	must(t, d.Reseal(images.IndexName))
}
