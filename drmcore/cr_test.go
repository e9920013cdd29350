package drmcore_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/amdgpu"
	"drmcr/drmcore"
	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

const page = 4096

type checker struct{ t testing.TB }

func ck(t testing.TB) checker { return checker{t} }

// u32 returns v, failing the test on err.
func (c checker) u32(v uint32, err error) uint32 {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func read(t testing.TB, d *libdrm.Device, h uint32, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	must(t, d.Read(h, 0, p))
	return p
}

func fill(t testing.TB, d *libdrm.Device, ctx, h uint32, size uint64, seed uint64) {
	t.Helper()
	_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpRandFill), Dst: 0, Src: -1, Len: size, Value: seed}}})
	must(t, err)
	if busy, err := d.WaitIdle(h, true, 10*time.Second); err != nil || busy {
		t.Fatalf("wait idle: busy=%v err=%v", busy, err)
	}
}

func inode(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	return st.Ino
}

// TestSingleFileRoundTrip: BOs keep their handles, sizes, flags, VA
// mappings and contents; contexts keep their ids.
func TestSingleFileRoundTrip(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	h1 := ck(t).u32(d.BOCreate(2*page, uapi.Domain_DOMAIN_VRAM, 0x3, 0))
	h2 := ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 1<<16))
	h3 := ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	must(t, d.BOClose(h2)) // leave a hole: handles 1 and 3 remain
	ctx := ck(t).u32(d.CtxCreate(0))
	fill(t, d, ctx, h1, 2*page, 42)
	must(t, d.VMMap(h1, 0, 0x100000, 2*page, 1))
	must(t, d.VMMap(h3, 0, 0x200000, page, 0))
	want1 := read(t, d, h1, 2*page)

	dir, err := dump(t, env)
	must(t, err)
	t.Logf("images: %v", imageNames(t, dir))
	ino := inode(t, d.FD())
	d.Close()

	fds, err := restore(t, env, dir, concurrently, false)
	must(t, err)
	r := libdrm.FromFD(fds[ino])
	if got := read(t, r, h1, 2*page); !bytes.Equal(got, want1) {
		t.Fatal("BO 1 contents differ after restore")
	}
	info, err := r.BOInfo(h1)
	must(t, err)
	if info.Size != 2*page || info.Domain != uapi.Domain_DOMAIN_VRAM || info.Flags != 0x3 {
		t.Fatalf("BO 1 info %v", info)
	}
	if _, err := r.BOInfo(h2); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("closed handle 2 exists after restore: %v", err)
	}
	// The hole is kept: the next handle is 2, as before the dump.
	if h := ck(t).u32(r.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0)); h != 2 {
		t.Fatalf("next handle %d, want 2", h)
	}
	// Mappings came back: mapping over them fails, unmapping works.
	if err := r.VMMap(h3, 0, 0x100000, page, 0); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("VA 0x100000 not mapped after restore: %v", err)
	}
	must(t, r.VMUnmap(0x200000))
	// The context works.
	fill(t, r, ctx, h3, page, 7)
}

// TestDumpWithEachChecksum: DRMCR_CHECKSUM's algorithm checksums the
// dump's chunks and the index names it; the restore reads the name and
// restores bit for bit.
func TestDumpWithEachChecksum(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	for _, alg := range uapi.Checksums {
		t.Run(alg.String(), func(t *testing.T) {
			d := env.Open(t, 128)
			h := ck(t).u32(d.BOCreate(6<<20, uapi.Domain_DOMAIN_GTT, 0, 0))
			ctx := ck(t).u32(d.CtxCreate(0))
			fill(t, d, ctx, h, 6<<20, 9)
			want := read(t, d, h, 6<<20)
			dir, err := drmcoretest.DumpSelf(t, env.Dir, pauseTimeout, func(c *drmcore.Config) { c.Checksum = alg })
			must(t, err)
			x, err := openImages(t, dir).ReadIndex()
			must(t, err)
			if x.Header.Checksum != alg.String() || len(x.Chunks) < 2 {
				t.Fatalf("the index names %q and has %d chunks, want %v", x.Header.Checksum, len(x.Chunks), alg)
			}
			for _, c := range x.Chunks {
				if len(c.Chunk.Checksum) != alg.Size() {
					t.Fatalf("a chunk's checksum of %d bytes, %v has %d", len(c.Chunk.Checksum), alg, alg.Size())
				}
			}
			ino := inode(t, d.FD())
			d.Close()
			fds, err := restore(t, env, dir, concurrently, false)
			must(t, err)
			r := libdrm.FromFD(fds[ino])
			defer r.Close()
			if got := read(t, r, h, 6<<20); !bytes.Equal(got, want) {
				t.Fatalf("contents differ after a restore checksummed with %v", alg)
			}
		})
	}
}

// TestSharedCreatorReleased: A creates and exports a BO, B and C import it,
// A closes its handle and its dma-buf fd before the dump, so no restored
// task is the original exporter. Restore must give B and C one BO again,
// whichever claims first: claims one at a time in every order, and all at
// once. (In-process, the kernel's own reference to the dma-buf file is in
// the test's fd table too, so the dump also holds the dma-buf itself; the
// end-to-end tests cover real tasks that do not.)
func TestSharedCreatorReleased(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	base := env.Kernel.Counts()
	a, b, c := env.Open(t, 128), env.Open(t, 128), env.Open(t, 128)
	ha := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctxA := ck(t).u32(a.CtxCreate(0))
	fill(t, a, ctxA, ha, page, 99)
	want := read(t, a, ha, page)
	fd, err := a.ExportDmaBuf(ha)
	must(t, err)
	hb := ck(t).u32(b.ImportDmaBuf(fd))
	hc := ck(t).u32(c.ImportDmaBuf(fd))
	unix.Close(fd)
	must(t, a.BOClose(ha))

	dir, err := dump(t, env)
	must(t, err)
	inoB, inoC := inode(t, b.FD()), inode(t, c.FD())
	a.Close()
	b.Close()
	c.Close()
	waitCounts(t, env, base)

	check := func(t *testing.T, fds map[uint64]int) {
		rb, rc := libdrm.FromFD(fds[inoB]), libdrm.FromFD(fds[inoC])
		if !bytes.Equal(read(t, rb, hb, page), want) || !bytes.Equal(read(t, rc, hc, page), want) {
			t.Fatal("shared BO contents differ after restore")
		}
		// One BO: a write through B is seen through C.
		ctxB := ck(t).u32(rb.CtxCreate(0))
		fill(t, rb, ctxB, hb, page, 1234)
		if !bytes.Equal(read(t, rb, hb, page), read(t, rc, hc, page)) {
			t.Fatal("B and C do not share one BO after restore")
		}
		// The PRIME tables came back: B and C export the same dma-buf,
		// and importing it into B gives B's handle.
		fb, err := rb.ExportDmaBuf(hb)
		must(t, err)
		defer unix.Close(fb)
		fc, err := rc.ExportDmaBuf(hc)
		must(t, err)
		defer unix.Close(fc)
		if inode(t, fb) != inode(t, fc) {
			t.Fatal("B and C export different dma-bufs")
		}
		if h := ck(t).u32(rb.ImportDmaBuf(fc)); h != hb {
			t.Fatalf("import into B gave handle %d, want %d", h, hb)
		}
	}
	run := func(name string, order drmcoretest.Order) {
		t.Run(name, func(t *testing.T) {
			fds, err := restore(t, env, dir, order, false)
			must(t, err)
			check(t, fds)
			drmcoretest.CloseAll(fds)
			waitCounts(t, env, base)
		})
	}
	run("concurrent", concurrently)
	for k := 0; k < 24; k++ {
		run(fmt.Sprintf("order%d", k), nthOrder(k))
	}
}

// TestDmaBufOnlyTask: a task holding only a dma-buf fd, no drm file.
func TestDmaBufOnlyTask(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	a := env.Open(t, 128)
	h := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctx := ck(t).u32(a.CtxCreate(0))
	fill(t, a, ctx, h, page, 5)
	want := read(t, a, h, page)
	fd, err := a.ExportDmaBuf(h)
	must(t, err)
	a.Close() // only the dma-buf fd keeps the BO alive now

	dir, err := dump(t, env)
	must(t, err)
	ino := inode(t, fd)
	unix.Close(fd)

	fds, err := restore(t, env, dir, concurrently, false)
	must(t, err)
	if len(fds) != 1 {
		t.Fatalf("restored %d files, want the dma-buf only", len(fds))
	}
	d := env.Open(t, 128)
	h2 := ck(t).u32(d.ImportDmaBuf(fds[ino]))
	if !bytes.Equal(read(t, d, h2, page), want) {
		t.Fatal("dma-buf contents differ after restore")
	}
}

// TestLongRunningPreempted: a long-running compute job is preempted by the
// dump and resumes from its progress after restore, giving the result an
// uninterrupted run gives.
func TestLongRunningPreempted(t *testing.T) {
	dev := kernelsim.DefaultDevice()
	dev.IterTime = time.Millisecond
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	const iters = 600
	run := func(d *libdrm.Device) (src, dst, sync, ctx uint32) {
		src = ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
		dst = ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
		ctx = ck(t).u32(d.CtxCreate(0))
		sync = ck(t).u32(d.SyncobjCreate(false))
		fill(t, d, ctx, src, page, 77)
		_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, LongRunning: true, OutSyncobjs: []uint32{sync},
			Bos:      []*uapi.SubmitBo{{Handle: src}, {Handle: dst, Write: true}},
			Commands: []*uapi.Command{{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: page, Iterations: iters}}})
		must(t, err)
		return
	}
	// The uninterrupted run.
	ref := env.Open(t, 128)
	_, refDst, refSync, _ := run(ref)
	_, err := ref.SyncobjWait([]uint32{refSync}, -1, true, false)
	must(t, err)
	want := read(t, ref, refDst, 8)
	ref.Close()

	d := env.Open(t, 128)
	_, dst, sync, ctx := run(d)
	time.Sleep(100 * time.Millisecond) // well inside the 600 ms loop
	dir, err := dump(t, env)
	must(t, err)
	q, err := d.CtxQuery(ctx)
	must(t, err)
	if q.Completed == q.Submitted {
		t.Fatalf("the compute job finished before the dump (%v): test too slow to be meaningful", q)
	}
	ino := inode(t, d.FD())
	d.Close()

	fds, err := restore(t, env, dir, concurrently, false)
	must(t, err)
	r := libdrm.FromFD(fds[ino])
	_, err = r.SyncobjWait([]uint32{sync}, -1, true, false)
	must(t, err)
	if got := read(t, r, dst, 8); !bytes.Equal(got, want) {
		t.Fatalf("compute result %x after restore, uninterrupted run gives %x", got, want)
	}
	if q, err := r.SyncobjQuery(sync); err != nil || q.Error != 0 {
		t.Fatalf("out fence: %v %v", q, err)
	}
}

// TestPauseTimeout: a client that cannot drain makes the dump fail with a
// message naming the process and context, and keeps running.
func TestPauseTimeout(t *testing.T) {
	old := pauseTimeout
	pauseTimeout = 300 * time.Millisecond
	defer func() { pauseTimeout = old }()
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	h := ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctx := ck(t).u32(d.CtxCreate(0))
	tl := ck(t).u32(d.SwSyncCreate())
	in := ck(t).u32(d.SyncobjCreate(false))
	must(t, d.SwSyncFence(tl, 1, in))
	_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, InSyncobjs: []uint32{in}, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, Len: page, Value: 0x01020304}}})
	must(t, err)

	dir, err := dump(t, env)
	if err == nil {
		t.Fatal("dump of a client that cannot drain succeeded")
	}
	for _, want := range []string{"pid " + itoa(os.Getpid()), "context " + itoa(int(ctx))} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	inv := &images.Inventory{}
	idir, _ := images.OpenDir(dir)
	defer idir.Close()
	if err := idir.Read(images.InventoryName, inv); err == nil && inv.Complete {
		t.Error("failed dump left a complete inventory")
	}
	// The client keeps running: once it signals, its job completes.
	must(t, d.SwSyncInc(tl, 1))
	if busy, err := d.WaitIdle(h, false, 10*time.Second); err != nil || busy {
		t.Fatalf("job did not complete after the failed dump: busy=%v %v", busy, err)
	}
	if got := read(t, d, h, 4); binary.LittleEndian.Uint32(got) != 0x01020304 {
		t.Fatalf("job result %x", got)
	}
	// And restore refuses the failed dump.
	if _, err := restore(t, env, dir, concurrently, false); err == nil {
		t.Fatal("restore of a failed dump succeeded")
	}
}

// TestRestoreAbortDestroysAll: a restore that fails after the claims
// leaves nothing behind.
func TestRestoreAbortDestroysAll(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	base := env.Kernel.Counts()
	a, b := env.Open(t, 128), env.Open(t, 128)
	h := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	fd, err := a.ExportDmaBuf(h)
	must(t, err)
	ck(t).u32(b.ImportDmaBuf(fd))
	dir, err := dump(t, env)
	must(t, err)
	unix.Close(fd)
	a.Close()
	b.Close()
	waitCounts(t, env, base)

	fds, _ := restore(t, env, dir, concurrently, true)
	drmcoretest.CloseAll(fds)
	waitCounts(t, env, base)
}

// TestUnsupportedDriverFailsDump: a drm file of a driver without a
// sub-plugin (here a plugin built with amdgpu's only) cannot be
// checkpointed, and says so.
func TestUnsupportedDriverFailsDump(t *testing.T) {
	xe := kernelsim.DefaultDevice()
	xe.Driver, xe.Minor = "xe", 129
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{kernelsim.DefaultDevice(), xe}})
	d := env.Open(t, 129)
	ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	var inodes []uint64
	for _, ino := range drmcoretest.SocketInodes(t) {
		inodes = append(inodes, ino)
	}
	p := drmcoretest.Plugin(t, env.Dir, t.TempDir(), pauseTimeout, func(c *drmcore.Config) {
		c.Drivers = []drmcore.DriverPlugin{amdgpu.New()}
	})
	err := drmcoretest.Dump(t, p, os.Getpid(), inodes)
	if err == nil || !strings.Contains(err.Error(), "is on a xe device, which no sub-plugin handles") {
		t.Fatalf("dump with an xe file: %v", err)
	}
}

// waitCounts waits until the kernel's object counts are back to base.
func waitCounts(t testing.TB, env *ksimtest.Env, base kernelsim.Counts) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := env.Kernel.Counts()
		if c == base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects left: %+v, baseline %+v", c, base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestPreDumpWritesNothing: a pre-dump pauses and resumes GPU work but
// writes no GPU images (criu dumps no fds in a pre-dump).
func TestPreDumpWritesNothing(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	ctx := ck(t).u32(d.CtxCreate(0))
	h := ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	dir := t.TempDir()
	p := drmcoretest.Plugin(t, env.Dir, dir, pauseTimeout)
	must(t, p.Init(drmcore.StagePreDump))
	must(t, p.PauseDevices(os.Getpid()))
	p.Fini(drmcore.StagePreDump, 0)
	if names := imageNames(t, dir); len(names) != 0 {
		t.Fatalf("pre-dump wrote %v", names)
	}
	// The context took work again.
	fill(t, d, ctx, h, page, 3)
}

// TestRestoreWithoutDaemonFails: a checkpoint with GPU state cannot be
// restored without kernelsimd, and says so.
func TestRestoreWithoutDaemonFails(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	dir, err := dump(t, env)
	must(t, err)
	_, err = drmcoretest.Restore(t, t.TempDir(), dir, concurrently, false)
	if err == nil || !strings.Contains(err.Error(), "no kernelsimd") {
		t.Fatalf("restore without a daemon: %v", err)
	}
}

// TestRestoreRefusesNewerImages: images of an unknown format version are
// refused with a message naming the version.
func TestRestoreRefusesNewerImages(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	dir, err := dump(t, env)
	must(t, err)
	idir, err := images.OpenDir(dir)
	must(t, err)
	defer idir.Close()
	inv := &images.Inventory{}
	must(t, idir.Read(images.InventoryName, inv))
	inv.Version = images.Version + 1
	must(t, idir.Write(images.InventoryName, inv))
	_, err = restore(t, env, dir, concurrently, false)
	if err == nil || !strings.Contains(err.Error(), "format version") {
		t.Fatalf("restore of newer images: %v", err)
	}
}

// TestWorkQueuedBehindPreemptedJob: a context queued a regular job (a copy
// of the result) behind a long-running compute job; the dump preempts the
// compute job and keeps the copy queued behind it, and after restore both
// run in order to the result an uninterrupted run gives.
func TestWorkQueuedBehindPreemptedJob(t *testing.T) {
	dev := kernelsim.DefaultDevice()
	dev.IterTime = time.Millisecond
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	run := func(d *libdrm.Device) (out, done uint32) {
		src := ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
		acc := ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
		out = ck(t).u32(d.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
		ctx := ck(t).u32(d.CtxCreate(0))
		done = ck(t).u32(d.SyncobjCreate(false))
		fill(t, d, ctx, src, page, 11)
		_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, LongRunning: true,
			Bos:      []*uapi.SubmitBo{{Handle: src}, {Handle: acc, Write: true}},
			Commands: []*uapi.Command{{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: page, Iterations: 500}}})
		must(t, err)
		_, err = d.Submit(&uapi.SubmitRequest{CtxId: ctx, OutSyncobjs: []uint32{done},
			Bos:      []*uapi.SubmitBo{{Handle: acc}, {Handle: out, Write: true}},
			Commands: []*uapi.Command{{Op: uint32(gpu.OpCopy), Dst: 1, Src: 0, Len: 8}, {Op: uint32(gpu.OpAddCounter), Dst: 1, DstOff: 8, Value: 5}}})
		must(t, err)
		return out, done
	}
	ref := env.Open(t, 128)
	refOut, refDone := run(ref)
	_, err := ref.SyncobjWait([]uint32{refDone}, -1, true, false)
	must(t, err)
	want := read(t, ref, refOut, 16)
	ref.Close()

	d := env.Open(t, 128)
	out, done := run(d)
	time.Sleep(100 * time.Millisecond) // inside the 500 ms compute loop
	dir, err := dump(t, env)
	must(t, err)
	if q, err := d.SyncobjQuery(done); err != nil || q.Signaled {
		t.Fatalf("the copy ran before the dump (%v, %v): test too slow to be meaningful", q, err)
	}
	ino := inode(t, d.FD())
	d.Close()

	fds, err := restore(t, env, dir, concurrently, false)
	must(t, err)
	r := libdrm.FromFD(fds[ino])
	_, err = r.SyncobjWait([]uint32{done}, -1, true, false)
	must(t, err)
	if got := read(t, r, out, 16); !bytes.Equal(got, want) {
		t.Fatalf("result %x after restore, uninterrupted run gives %x", got, want)
	}
}

// TestWaitOnAnotherFilesPreemptedJob: file B queued a job that reads the
// output of file A's long-running job (implicit sync through a shared BO).
// The dump preempts A's job; B's job cannot run before it, so it is parked
// work too and the pause completes; restore rebuilds B's wait on A's job,
// whichever file is claimed first, and the result is the uninterrupted one.
func TestWaitOnAnotherFilesPreemptedJob(t *testing.T) {
	dev := kernelsim.DefaultDevice()
	dev.IterTime = time.Millisecond
	dev.Driver = "amdgpu"
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	setup := func() (a, b *libdrm.Device, out, done uint32) {
		a, b = env.Open(t, 128), env.Open(t, 128)
		src := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
		acc := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
		ctxA := ck(t).u32(a.CtxCreate(0))
		fill(t, a, ctxA, src, page, 21)
		fd, err := a.ExportDmaBuf(acc)
		must(t, err)
		accB := ck(t).u32(b.ImportDmaBuf(fd))
		unix.Close(fd)
		out = ck(t).u32(b.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
		ctxB := ck(t).u32(b.CtxCreate(0))
		done = ck(t).u32(b.SyncobjCreate(false))
		_, err = a.Submit(&uapi.SubmitRequest{CtxId: ctxA, LongRunning: true,
			Bos:      []*uapi.SubmitBo{{Handle: src}, {Handle: acc, Write: true}},
			Commands: []*uapi.Command{{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: page, Iterations: 500}}})
		must(t, err)
		_, err = b.Submit(&uapi.SubmitRequest{CtxId: ctxB, OutSyncobjs: []uint32{done},
			Bos:      []*uapi.SubmitBo{{Handle: accB}, {Handle: out, Write: true}},
			Commands: []*uapi.Command{{Op: uint32(gpu.OpChecksum), Dst: 1, Src: 0, Len: page}}})
		must(t, err)
		return a, b, out, done
	}
	refA, refB, refOut, refDone := setup()
	_, err := refB.SyncobjWait([]uint32{refDone}, -1, true, false)
	must(t, err)
	want := read(t, refB, refOut, 8)
	refA.Close()
	refB.Close()

	a, b, out, done := setup()
	time.Sleep(100 * time.Millisecond) // inside A's 500 ms compute loop
	dir, err := dump(t, env)
	must(t, err)
	if q, err := b.SyncobjQuery(done); err != nil || q.Signaled {
		t.Fatalf("B's job ran before the dump (%v, %v): test too slow to be meaningful", q, err)
	}
	inoB := inode(t, b.FD())
	a.Close()
	b.Close()

	for name, order := range map[string]drmcoretest.Order{"concurrent": concurrently, "first": nthOrder(0), "last": nthOrder(5)} {
		t.Run(name, func(t *testing.T) {
			fds, err := restore(t, env, dir, order, false)
			must(t, err)
			r := libdrm.FromFD(fds[inoB])
			_, err = r.SyncobjWait([]uint32{done}, -1, true, false)
			must(t, err)
			if got := read(t, r, out, 8); !bytes.Equal(got, want) {
				t.Fatalf("B's checksum %x after restore, uninterrupted run gives %x", got, want)
			}
			drmcoretest.CloseAll(fds)
		})
	}
}

// TestDamagedContentsFailTheResume: contents changed after the dump do
// not run: RESUME_DEVICES_LATE fails naming the BO and the pages file,
// and kills the task (criu ignores the hook's result but not a dead
// task); the aborted session leaves nothing behind.
func TestDamagedContentsFailTheResume(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	base := env.Kernel.Counts()
	d := env.Open(t, 128)
	// Large enough that the loader is usually still at it when the file
	// is claimed, damaged at the end, so the resume is what fails.
	const size = 32 << 20
	h := ck(t).u32(d.BOCreate(size, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctx := ck(t).u32(d.CtxCreate(0))
	fill(t, d, ctx, h, size, 42)
	dir, err := dump(t, env)
	must(t, err)
	d.Close()
	pages := filepath.Join(dir, images.PagesName(1))
	b, err := os.ReadFile(pages)
	must(t, err)
	b[size-page] ^= 0x10
	must(t, os.WriteFile(pages, b, 0o600))

	drmcoretest.Killed = nil
	_, err = restore(t, env, dir, concurrently, false)
	if err == nil {
		t.Fatal("restore of damaged contents succeeded")
	}
	// The damage shows at the first point it is known: the claim fails if
	// the loader found it before, else the resume fails and kills.
	want := []string{"of drm-pages-1.img)", "does not match the checksum recorded at dump"}
	if strings.Contains(err.Error(), "claim inode") {
		want = append(want, "input/output error")
	} else {
		want = append(want, "resume GPU work of pid")
		if len(drmcoretest.Killed) != 1 || drmcoretest.Killed[0] != os.Getpid() {
			t.Errorf("killed %v, want this task", drmcoretest.Killed)
		}
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	waitCounts(t, env, base)
}
