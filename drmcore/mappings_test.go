package drmcore_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"drmcr/drmcore"
	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
	"drmcr/subplugins"
)

const rw = unix.PROT_READ | unix.PROT_WRITE

// dumpedMapping is a BO mapping of this process as the dump saw it.
type dumpedMapping struct {
	addr     unsafe.Pointer // not Go memory: the GC ignores it
	contents []byte
}

// unmapForRestore saves a mapping's contents and unmaps it, as the dumped
// process's death does.
func unmapForRestore(t testing.TB, m *libdrm.Mapping) dumpedMapping {
	t.Helper()
	dm := dumpedMapping{addr: unsafe.Pointer(&m.Data[0]), contents: bytes.Clone(m.Data)}
	must(t, m.Unmap())
	return dm
}

// restoreAs does what criu does for a dumped mapping of a BO memfd: a
// memfd of the same name and seals holding the BO's contents, mapped at
// addr from offset for n bytes. It returns the mapping.
func restoreAs(t testing.TB, addr unsafe.Pointer, offset, n int, bo []byte) []byte {
	t.Helper()
	fd, err := unix.MemfdCreate("kernelsim-bo", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	must(t, err)
	defer unix.Close(fd)
	must(t, unix.Ftruncate(fd, int64(len(bo))))
	_, err = unix.Pwrite(fd, bo, 0)
	must(t, err)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL)
	must(t, err)
	p, err := unix.MmapPtr(fd, int64(offset), addr, uintptr(n), rw, unix.MAP_SHARED|unix.MAP_FIXED_NOREPLACE)
	must(t, err)
	if p != addr {
		t.Fatalf("restored mapping at %p, want %p", p, addr)
	}
	b := unsafe.Slice((*byte)(p), n)
	t.Cleanup(func() { unix.MunmapPtr(p, uintptr(n)) })
	return b
}

var (
	daemonOnce sync.Once
	daemonBin  string
	daemonErr  error
)

// startDaemon runs kernelsimd in a process of its own: its memory
// mappings of BOs must not be in the dumped task's (this process's)
// address space, as they are with an in-process kernel.
func startDaemon(t *testing.T) (*ksimtest.Env, *ctl.Client) {
	t.Helper()
	daemonOnce.Do(func() {
		dir, err := os.MkdirTemp("", "drmcore-ksimd")
		if err != nil {
			daemonErr = err
			return
		}
		daemonBin = filepath.Join(dir, "kernelsimd")
		if out, err := exec.Command("go", "build", "-o", daemonBin, "drmcr/cmd/kernelsimd").CombinedOutput(); err != nil {
			daemonErr = fmt.Errorf("go build kernelsimd: %v\n%s", err, out)
		}
	})
	if daemonErr != nil {
		t.Fatal(daemonErr)
	}
	env := ksimtest.StartDaemon(t, daemonBin)
	c, err := ctl.Dial(env.Dir)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return env, c
}

// liveBOs is the daemon's census of BOs, by size.
func liveBOs(t testing.TB, c *ctl.Client) map[uint64]kernelsim.DebugBO {
	t.Helper()
	st, err := c.Debug()
	must(t, err)
	out := map[uint64]kernelsim.DebugBO{}
	for _, b := range st.BOs {
		out[b.Size] = b
	}
	return out
}

// mappedWorkload makes a drm file with BO A mapped (and used by the
// file), BO B that only a mapping refers to, and BO C not mapped.
func mappedWorkload(t *testing.T, env *ksimtest.Env) (d *libdrm.Device, ma, mb *libdrm.Mapping, a, c uint32) {
	t.Helper()
	d = env.Open(t, 128)
	a = ck(t).u32(d.BOCreate(64<<10, uapi.Domain_DOMAIN_VRAM, 0, 0))
	b := ck(t).u32(d.BOCreate(3*page, uapi.Domain_DOMAIN_GTT, 0, 0))
	c = ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	var err error
	ma, err = d.Map(a, 0, 0, rw)
	must(t, err)
	mb, err = d.Map(b, page, 2*page, rw)
	must(t, err)
	copy(ma.Data[5*page:], "A through its mapping")
	copy(mb.Data, "B, mapped only")
	must(t, d.BOClose(b))
	must(t, d.Write(c, 0, []byte("C, never mapped")))
	return d, ma, mb, a, c
}

// TestMappedBOsRoundTrip: the BOs a process maps are dumped as records
// with checksums only (criu saves their memory) and mappings; restore
// adopts the memory criu put back at the same addresses: the restored
// BO and the restored mapping share it, and a BO only a mapping
// referred to comes back too.
func TestMappedBOsRoundTrip(t *testing.T) {
	env, cc := startDaemon(t)
	d, ma, mb, a, c := mappedWorkload(t, env)
	dir, err := dump(t, env)
	must(t, err)

	dirImgs, err := images.OpenDir(dir)
	must(t, err)
	defer dirImgs.Close()
	x, err := dirImgs.ReadIndex()
	must(t, err)
	var mapped, plain int
	for _, b := range x.Bos {
		if b.CpuMapped {
			mapped++
			if len(b.MappedChunks) == 0 || b.Version != images.MappedBoVersion {
				t.Errorf("mapped BO record %v", b)
			}
		} else {
			plain++
		}
	}
	inv := &images.Inventory{}
	must(t, dirImgs.Read(images.InventoryName, inv))
	if mapped != 2 || plain != 1 || len(inv.Processes) != 1 || len(inv.Processes[0].Mappings) != 2 {
		t.Fatalf("%d mapped and %d plain BO records, processes %v", mapped, plain, inv.Processes)
	}
	for _, m := range inv.Processes[0].Mappings {
		if m.Prot != rw || !m.Shared || m.End-m.Start < page {
			t.Errorf("mapping record %v", m)
		}
	}

	ino := inode(t, d.FD())
	da, db := unmapForRestore(t, ma), unmapForRestore(t, mb)
	d.Close()
	ra := restoreAs(t, da.addr, 0, len(da.contents), da.contents)
	// B was mapped from its second page: criu's memfd is the whole BO.
	restoreAs(t, db.addr, page, 2*page, append(make([]byte, page), db.contents...))

	fds, err := restore(t, env, dir, concurrently, false)
	must(t, err)
	r := libdrm.FromFD(fds[ino])
	if got := read(t, r, a, 64<<10); !bytes.Equal(got, da.contents) {
		t.Fatal("restored BO A differs from its mapping")
	}
	ctx := ck(t).u32(r.CtxCreate(0))
	fill(t, r, ctx, a, 64<<10, 9)
	if !bytes.Equal(ra, read(t, r, a, 64<<10)) {
		t.Fatal("the GPU's writes into restored BO A are not in its restored mapping")
	}
	if got := read(t, r, c, 15); string(got) != "C, never mapped" {
		t.Fatalf("BO C restored as %q", got)
	}
	if b, ok := liveBOs(t, cc)[3*page]; !ok || b.CPU == nil || len(b.CPU.Holders) != 1 || b.CPU.Holders[0] != int32(os.Getpid()) {
		t.Fatalf("BO B, referred to by a mapping only, restored as %+v (%v)", b.CPU, ok)
	}
}

// TestMappedBOsRestoreChecks: restored memory that differs from the dump
// fails the restore (killing the task, so that criu fails it), naming
// the BO; so does a mapping that is not back where it was.
func TestMappedBOsRestoreChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		how  func(t *testing.T, da dumpedMapping)
		want string
	}{
		{"damaged", func(t *testing.T, da dumpedMapping) {
			da.contents[5*page] ^= 1
			restoreAs(t, da.addr, 0, len(da.contents), da.contents)
		}, "does not match the checksum recorded at dump"},
		{"moved", func(t *testing.T, da dumpedMapping) {
			restoreAs(t, unsafe.Add(da.addr, page), page, len(da.contents)-page, da.contents)
		}, "did not come back as it was dumped (nothing is mapped there)"},
		{"read-only", func(t *testing.T, da dumpedMapping) {
			m := restoreAs(t, da.addr, 0, len(da.contents), da.contents)
			must(t, unix.Mprotect(m, unix.PROT_READ))
		}, "did not come back as it was dumped (now ["},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, cc := startDaemon(t)
			d, ma, mb, _, _ := mappedWorkload(t, env)
			dir, err := dump(t, env)
			must(t, err)
			da, db := unmapForRestore(t, ma), unmapForRestore(t, mb)
			d.Close()
			tc.how(t, da)
			restoreAs(t, db.addr, page, 2*page, append(make([]byte, page), db.contents...))
			drmcoretest.Killed = nil
			_, err = restore(t, env, dir, concurrently, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "BO ") {
				t.Fatalf("restore: %v, want %q", err, tc.want)
			}
			if len(drmcoretest.Killed) != 1 || drmcoretest.Killed[0] != os.Getpid() {
				t.Errorf("killed %v, want this task", drmcoretest.Killed)
			}
			// The failed restore destroyed what it made.
			if st, err := cc.Debug(); err != nil || len(st.BOs) != 0 || len(st.Files) != 0 {
				t.Errorf("after the failed restore: %v, %+v", err, st)
			}
		})
	}
}

// TestMappingOnlyTask: a task that holds no kernelsim file, only a
// mapping of a BO, is dumped for that mapping alone (at the exit hook:
// criu asks for no socket of it).
func TestMappingOnlyTask(t *testing.T) {
	env, cc := startDaemon(t)
	d := env.Open(t, 128)
	h := ck(t).u32(d.BOCreate(2*page, uapi.Domain_DOMAIN_GTT, 0, 0))
	m, err := d.Map(h, 0, 0, rw)
	must(t, err)
	copy(m.Data, "only a mapping")
	d.Close()
	dir := t.TempDir()
	p := drmcoretest.Plugin(t, env.Dir, dir, pauseTimeout)
	must(t, drmcoretest.Dump(t, p, os.Getpid(), nil))
	imgs, err := images.OpenDir(dir)
	must(t, err)
	defer imgs.Close()
	inv := &images.Inventory{}
	must(t, imgs.Read(images.InventoryName, inv))
	if !inv.Complete || len(inv.Processes) != 1 || inv.Processes[0].Pid != int32(os.Getpid()) || len(inv.Processes[0].Mappings) != 1 || len(inv.Bos) != 1 {
		t.Fatalf("inventory %v", inv)
	}
	dm := unmapForRestore(t, m)
	restoreAs(t, dm.addr, 0, len(dm.contents), dm.contents)
	_, err = restore(t, env, dir, concurrently, false)
	must(t, err)
	if b, ok := liveBOs(t, cc)[2*page]; !ok || b.CPU == nil || b.CPU.Holders[0] != int32(os.Getpid()) {
		t.Fatalf("restored BO %+v (%v)", b.CPU, ok)
	}
}

// TestDamagedMappingsAreRefused: the checks of the CPU mappings and of
// mapped BOs' records, as a restore and drmcrit verify run them: each
// kind of damage is found, naming the image and the field, and the
// restore is refused before the kernel creates anything.
func TestDamagedMappingsAreRefused(t *testing.T) {
	env, cc := startDaemon(t)
	d, ma, mb, _, _ := mappedWorkload(t, env)
	dir0, err := dump(t, env)
	must(t, err)
	ma.Unmap()
	mb.Unmap()
	d.Close()
	if p := problemsOf(t, dir0); p != "" {
		t.Fatalf("problems in a good checkpoint:\n%s", p)
	}
	firstMapped := func(x *images.Index) *images.Bo {
		for _, b := range x.Bos {
			if b.CpuMapped {
				return b
			}
		}
		t.Fatal("no mapped BO")
		return nil
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"mapping of an unknown BO", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].Mappings[0].BoId = 999 })
		}, "drm-inventory.img: processes[0].mappings[0].bo_id: BO 999 has no record in drm-bo-index.img"},
		{"mapping not of whole pages", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].Mappings[0].End++ })
		}, "drm-inventory.img: processes[0].mappings[0]: [0x"},
		{"mapping past its BO", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].Mappings[0].Offset = 1 << 30 })
		}, "drm-inventory.img: processes[0].mappings[0].offset: "},
		{"mapping protection", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].Mappings[0].Prot = 0x10 })
		}, "drm-inventory.img: processes[0].mappings[0].prot: 0x10 is not a combination of PROT_READ, PROT_WRITE and PROT_EXEC"},
		{"mapped BO nobody maps", func(t *testing.T, dir string) {
			editInventory(t, dir, func(inv *images.Inventory) { inv.Processes[0].Mappings = nil })
		}, "cpu_mapped: true, but no process of the inventory maps it"},
		{"mapped BO's chunk without checksum", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { firstMapped(x).MappedChunks[0].Checksum = nil })
		}, "contents.chunks: chunk 0 has a checksum of 0 bytes, want 16 (xxh3-128)"},
		{"mapped BO's chunks short", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { firstMapped(x).MappedChunks[0].Length -= page })
		}, "are covered by no checksummed chunk"},
		{"mapped BO's record of the format before mapped BOs", func(t *testing.T, dir string) {
			editIndex(t, dir, true, func(x *images.Index) { firstMapped(x).Version = images.Version })
		}, fmt.Sprintf("a mapped BO's record of format version %d, this plugin reads version %d", images.Version, images.MappedBoVersion)},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, dir0)
			tc.damage(t, dir)
			var probs string
			if ck, err := drmcore.ReadCheckpoint(openImages(t, dir), subplugins.All()); err != nil {
				probs = err.Error()
			} else {
				for _, p := range ck.Problems {
					probs += p.String() + "\n"
				}
			}
			if !strings.Contains(probs, tc.want) {
				t.Errorf("the checks do not say %q:\n%s", tc.want, probs)
			}
			_, err := restore(t, env, dir, concurrently, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("restore: %v, want %q", err, tc.want)
			}
			if st, err := cc.Debug(); err != nil || len(st.BOs) != 0 || st.Sessions != 0 {
				t.Errorf("the refused restore left %v, %+v", err, st)
			}
		})
	}
}
