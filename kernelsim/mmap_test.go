package kernelsim_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

const rw = unix.PROT_READ | unix.PROT_WRITE

func mapBO(t testing.TB, d *libdrm.Device, h uint32) *libdrm.Mapping {
	t.Helper()
	m := must(d.Map(h, 0, 0, rw))
	t.Cleanup(func() { m.Unmap() })
	return m
}

func debugBO(t testing.TB, k *kernelsim.Kernel, id uint64) (kernelsim.DebugBO, bool) {
	t.Helper()
	for _, b := range k.Debug().BOs {
		if b.ID == id {
			return b, true
		}
	}
	return kernelsim.DebugBO{}, false
}

// TestMapSharesMemoryWithGPU: a mapping is the BO's memory. What the CPU
// writes through it a job submitted afterwards reads; what a job writes
// is there once its fence signalled; every mapping of the BO, through the
// drm file or a dma-buf, and pread/pwrite see the same bytes.
func TestMapSharesMemoryWithGPU(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	d := env.Open(t, 128)
	a := must(d.BOCreate(64<<10, vram, 0, 0))
	b := must(d.BOCreate(64<<10, gtt, 0, 0))
	ok(t, d.Write(a, 4096, []byte("written before the first map")))
	ma := mapBO(t, d, a)
	if !bytes.Equal(ma.Data[4096:4096+28], []byte("written before the first map")) {
		t.Fatal("the mapping lacks what was written before it")
	}
	if !ma.WriteCombined {
		t.Error("a VRAM mapping is not write-combined")
	}
	mb := mapBO(t, d, b)
	if mb.WriteCombined {
		t.Error("a GTT mapping is write-combined")
	}

	// CPU writes, then the next job reads them.
	copy(ma.Data, pattern(64<<10, 0x11223344))
	ctx := must(d.CtxCreate(0))
	must(d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: b, Write: true}, {Handle: a}},
		Commands: []*uapi.Command{copyCmd(0, 1, 64<<10), fill(0, 0, 16, 0xdeadbeef)}}))
	must(d.WaitIdle(b, true, -1))
	want := pattern(64<<10, 0x11223344)
	copy(want, pattern(16, 0xdeadbeef))
	if !bytes.Equal(mb.Data, want) {
		t.Fatal("a job's writes are not in the mapping after its fence")
	}
	if !bytes.Equal(readBO(t, d, b, 64<<10), want) {
		t.Fatal("pread differs from the mapping")
	}

	// Another mapping, at an offset, and one through the dma-buf.
	m2 := must(d.Map(a, 8192, 4096, unix.PROT_READ))
	defer m2.Unmap()
	dfd := must(d.ExportDmaBuf(a))
	defer unix.Close(dfd)
	md := must(libdrm.MapDmaBuf(dfd, 0, 0, rw))
	defer md.Unmap()
	md.Data[8192] = 0x5a
	if m2.Data[0] != 0x5a || ma.Data[8192] != 0x5a {
		t.Fatal("mappings of one BO do not share memory")
	}
	// A BO on the other device, imported: the same memory again.
	x := env.Open(t, 129)
	xh := must(x.ImportDmaBuf(dfd))
	mx := mapBO(t, x, xh)
	if mx.Data[8192] != 0x5a {
		t.Fatal("the importer's mapping does not share memory")
	}
}

// TestMappingKeepsBOAlive: a mapping holds the BO after its handle, dma-buf
// and drm file are gone, as a VMA holds a GEM object; unmapping frees it.
func TestMappingKeepsBOAlive(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	h := must(d.BOCreate(8192, vram, 0, 0))
	id := must(d.BOInfo(h)).BoId
	m := must(d.Map(h, 0, 0, rw))
	copy(m.Data, "still here")
	dfd := must(d.ExportDmaBuf(h))
	md := must(libdrm.MapDmaBuf(dfd, 4096, 4096, rw))
	unix.Close(dfd)
	ok(t, d.BOClose(h))
	d.Close()
	eventually(t, "the drm file and dma-buf gone", func() bool {
		c := env.Kernel.Counts()
		return c.Files == 0 && c.DmaBufs == 0
	})
	bo, alive := debugBO(t, env.Kernel, id)
	if !alive || bo.CPU == nil || !bo.CPU.Referenced || bo.CPU.Handed != 2 {
		t.Fatalf("a mapped BO without handles: %+v (alive %v)", bo.CPU, alive)
	}
	if string(m.Data[:10]) != "still here" {
		t.Fatal("mapping lost its contents")
	}
	ok(t, m.Unmap())
	// One mapping left: it still holds the BO (through a while of the
	// kernel's rechecks).
	time.Sleep(50 * time.Millisecond)
	if _, alive := debugBO(t, env.Kernel, id); !alive {
		t.Fatal("BO freed while a mapping of it is left")
	}
	ok(t, md.Unmap())
	backToBaseline(t, env.Kernel, base)
}

// TestMappingHeldByAnotherProcess: the BO lives while a child process
// that received the file maps it, and goes when the child exits.
func TestMappingHeldByAnotherProcess(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	h := must(d.BOCreate(4096, gtt, 0, 0))
	id := must(d.BOInfo(h)).BoId
	fds := must(d.Conn().Call(uapi.OpGemMmap, &uapi.GemMmapRequest{Handle: h}, nil))
	d.Close()
	f := os.NewFile(uintptr(fds[0]), "bo")
	// A child that maps the file (its fd 3), says so and waits for stdin.
	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=map-hold")
	cmd.ExtraFiles = []*os.File{f}
	in := must(cmd.StdinPipe())
	out := must(cmd.StdoutPipe())
	ok(t, cmd.Start())
	f.Close()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "mapped\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	time.Sleep(50 * time.Millisecond)
	bo, alive := debugBO(t, env.Kernel, id)
	if !alive || !bo.CPU.Referenced {
		t.Fatal("BO freed while another process maps it")
	}
	in.Close()
	ok(t, cmd.Wait())
	backToBaseline(t, env.Kernel, base)
}

// mmapFD asks GEM_MMAP for the file of a handle's BO memory.
func mmapFD(t testing.TB, d *libdrm.Device, h uint32) int {
	t.Helper()
	fds := must(d.Conn().Call(uapi.OpGemMmap, &uapi.GemMmapRequest{Handle: h}, nil))
	if len(fds) != 1 {
		t.Fatalf("GEM_MMAP: %d fds", len(fds))
	}
	return fds[0]
}

// dataExtents lists the data extents of a file as "off+len".
func dataExtents(t testing.TB, fd int, size int64) string {
	t.Helper()
	var out []string
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		ok(t, err)
		h := must(unix.Seek(fd, d, unix.SEEK_HOLE))
		out = append(out, fmt.Sprintf("%d+%d", d, h-d))
		off = h
	}
	return strings.Join(out, " ")
}

// TestMapKeepsUntouchedPagesHoles: moving a BO's memory into its memfd at
// the first map copies only what was written, and checksumming it for a
// checkpoint does not touch the rest.
func TestMapKeepsUntouchedPagesHoles(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	d := env.Open(t, 128)
	const size = 32 << 20
	h := must(d.BOCreate(size, gtt, 0, 0))
	id := must(d.BOInfo(h)).BoId
	ok(t, d.Write(h, 5<<20, []byte{1}))
	ok(t, d.Write(h, 9<<20+4096, []byte{2}))
	fd := mmapFD(t, d, h)
	defer unix.Close(fd)
	want := fmt.Sprintf("%d+4096 %d+4096", 5<<20, 9<<20+4096)
	if got := dataExtents(t, fd, size); got != want {
		t.Fatalf("memfd data extents %q, want %q", got, want)
	}
	chunks := must(c.ChecksumBOs([]uint64{id}, uapi.DefaultChecksum))
	contents := make([]byte, size)
	contents[5<<20], contents[9<<20+4096] = 1, 2
	if len(chunks) != size/(4<<20) {
		t.Fatalf("%d chunks for %d bytes", len(chunks), size)
	}
	for i, ch := range chunks {
		if ch.BoId != id || ch.Offset != uint64(i)*(4<<20) || !bytes.Equal(ch.Checksum, uapi.DefaultChecksum.Sum(contents[ch.Offset:ch.Offset+ch.Length])) {
			t.Fatalf("chunk %d: %+v", i, ch)
		}
	}
	if got := dataExtents(t, fd, size); got != want {
		t.Fatalf("after checksumming, memfd data extents %q, want %q", got, want)
	}
}

// TestIdentifyMemory: the control socket names the BO a mapping's file
// is the memory of, by the device and inode /proc/PID/maps shows.
func TestIdentifyMemory(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	d := env.Open(t, 128)
	h := must(d.BOCreate(12288, vram, 0, 0))
	id := must(d.BOInfo(h)).BoId
	m := mapBO(t, d, h)
	dev, ino := mapsEntry(t, m.Data)
	got := must(c.IdentifyMemory([]*uapi.MemoryRef{{Dev: dev, Ino: ino}, {Dev: dev, Ino: ino + 1<<40}}))
	if len(got) != 2 || got[0].Bo.GetBoId() != id || got[0].Bo.Size != 12288 || got[1].Bo != nil {
		t.Fatalf("identify memory: %v", got)
	}
}

// mapsEntry finds the device and inode of the mapping at b in
// /proc/self/maps.
func mapsEntry(t testing.TB, b []byte) (dev, ino uint64) {
	t.Helper()
	start := fmt.Sprintf("%x-", uintptrOf(b))
	for _, line := range strings.Split(string(must(os.ReadFile("/proc/self/maps"))), "\n") {
		if !strings.HasPrefix(line, start) {
			continue
		}
		f := strings.Fields(line)
		maj, min, _ := strings.Cut(f[3], ":")
		ma := must(strconv.ParseUint(maj, 16, 32))
		mi := must(strconv.ParseUint(min, 16, 32))
		if !strings.Contains(line, "/memfd:kernelsim-bo") {
			t.Fatalf("mapping %q is not named as a BO memfd", line)
		}
		return unix.Mkdev(uint32(ma), uint32(mi)), must(strconv.ParseUint(f[4], 10, 64))
	}
	t.Fatalf("no mapping at %s in /proc/self/maps", start)
	return 0, 0
}

// TestCheckpointRefusesUnreadMmapReply: a GEM_MMAP reply carries a file,
// which a restore could not send again; a checkpoint that finds one
// unread fails with EAGAIN (retry) and leaves the file running.
func TestCheckpointRefusesUnreadMmapReply(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	d := env.Open(t, 128)
	h := must(d.BOCreate(4096, gtt, 0, 0))
	id := fileID(t, c, d)
	pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpGemMmap, Seq: 9}, &uapi.GemMmapRequest{Handle: h}))
	ok(t, uapi.Send(d.FD(), pkt))
	eventually(t, "the reply queued", func() bool {
		n, err := unix.IoctlGetInt(d.FD(), unix.SIOCINQ)
		return err == nil && n > 0
	})
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	must(c.CheckpointFile(id))
	_, err := c.CheckpointIO(id, inode(t, d.FD()), d.FD())
	wantErrno(t, err, syscall.EAGAIN)
	ok(t, c.Resume([]uint64{id}))
	_, _, fds := (&raw{t: t, fd: d.FD()}).recv()
	uapi.CloseFDs(fds)
	if len(fds) != 1 {
		t.Fatalf("GEM_MMAP reply carried %d fds", len(fds))
	}
	must(d.Version())
}

// TestDmaBufMmapIgnoresJunk: a dma-buf's socket takes DMABUF_MMAP with a
// reply socket; anything else is discarded, and errors go back on the
// reply socket.
func TestDmaBufMmapIgnoresJunk(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	d := env.Open(t, 128)
	h := must(d.BOCreate(4096, gtt, 0, 0))
	dfd := must(d.ExportDmaBuf(h))
	defer unix.Close(dfd)
	ok(t, uapi.Send(dfd, []byte("junk")))
	pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpDmaBufMmap}, &uapi.DmaBufMmapRequest{}))
	ok(t, uapi.Send(dfd, pkt)) // no reply socket: nowhere to answer
	m := must(libdrm.MapDmaBuf(dfd, 0, 0, rw))
	m.Data[0] = 1
	ok(t, m.Unmap())
	if _, err := libdrm.MapDmaBuf(dfd, 8192, 0, rw); err == nil {
		t.Fatal("a map beyond the BO succeeded")
	}
}

// TestMappedBOFDBudget: the descriptor the daemon keeps for a mapped BO
// counts against the limited users' share (-reserved-fds).
func TestMappedBOFDBudget(t *testing.T) {
	env, _ := startLimited(t, kernelsim.Limits{FDs: 2})
	d := must(openNode(env)) // one descriptor
	defer d.Close()
	h1 := must(d.BOCreate(4096, gtt, 0, 0))
	h2 := must(d.BOCreate(4096, gtt, 0, 0))
	m := must(d.Map(h1, 0, 0, rw)) // the second
	_, err := d.Map(h2, 0, 0, rw)
	wantRefusal(t, err, syscall.ENFILE, kernelsim.FlagReservedFDs)
	again := must(d.Map(h1, 0, 0, rw)) // the same BO: no new descriptor
	again.Unmap()
	m.Unmap()
	ok(t, d.BOClose(h1))
	eventually(t, "the mapped BO's descriptor back", func() bool {
		m, err := d.Map(h2, 0, 0, rw)
		if err == nil {
			m.Unmap()
		}
		return err == nil
	})
}

// childMapHold maps the file at fd 3, closes the fd, says "mapped" and
// holds the mapping until its standard input ends.
func childMapHold() error {
	m, err := unix.Mmap(3, 0, 4096, rw, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	unix.Close(3)
	fmt.Println("mapped")
	io.Copy(io.Discard, os.Stdin)
	return unix.Munmap(m)
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// restoredMemfd does what criu does for a dumped BO mapping: a memfd with
// the contents and the seals it had, mapped as the restored task maps it.
// It returns a description to hand over (as /proc/PID/map_files gives
// one) and the mapping.
func restoredMemfd(t testing.TB, contents []byte) (int, []byte) {
	t.Helper()
	mfd := must(unix.MemfdCreate("kernelsim-bo", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING))
	defer unix.Close(mfd)
	ok(t, unix.Ftruncate(mfd, int64(len(contents))))
	for off := 0; off < len(contents); off += 4096 {
		if !bytes.Equal(contents[off:off+4096], make([]byte, 4096)) {
			must(unix.Pwrite(mfd, contents[off:off+4096], int64(off)))
		}
	}
	must(unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL))
	m := must(unix.Mmap(mfd, 0, len(contents), rw, unix.MAP_SHARED))
	t.Cleanup(func() { unix.Munmap(m) })
	fd := must(unix.Open("/proc/self/fd/"+strconv.Itoa(mfd), unix.O_RDWR|unix.O_CLOEXEC, 0))
	return fd, m
}

// startHolder starts a process that maps fd (as a restored task does) and
// holds the mapping until stop is called.
func startHolder(t testing.TB, fd int) (pid int, stop func()) {
	t.Helper()
	f := os.NewFile(uintptr(must(unix.Dup(fd))), "memfd")
	defer f.Close()
	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=map-hold")
	cmd.ExtraFiles = []*os.File{f}
	in := must(cmd.StdinPipe())
	out := must(cmd.StdoutPipe())
	ok(t, cmd.Start())
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "mapped\n" {
		t.Fatalf("holder: %q %v", line, err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			in.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return cmd.Process.Pid, stop
}

// mappedImage checkpoints a file with BO A mapped (and used by the
// file), BO B not mapped, and BO C that only a mapping refers to: A and C
// checksummed only, as criu saves their memory, B into the pages file.
// It returns the image (A and C as mapped contents) and their contents.
func mappedImage(t *testing.T, env *ksimtest.Env) (img *image, ino uint64, a, c uint64, contents map[uint64][]byte) {
	t.Helper()
	cc := ctlClient(t, env)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	ha := must(d.BOCreate(32<<10, vram, 0, 0))
	hb := must(d.BOCreate(8192, gtt, 0, 0))
	hc := must(d.BOCreate(16<<10, gtt, 0, 0))
	ma := must(d.Map(ha, 0, 0, rw))
	mc := must(d.Map(hc, 0, 0, rw))
	copy(ma.Data[4096:], "mapped A")
	copy(mc.Data[8192:], "mapping-only C")
	ok(t, d.Write(hb, 0, []byte("plain B")))
	a, c = must(d.BOInfo(ha)).BoId, must(d.BOInfo(hc)).BoId
	b := must(d.BOInfo(hb)).BoId
	ok(t, d.BOClose(hc))
	contents = map[uint64][]byte{a: bytes.Clone(ma.Data), c: bytes.Clone(mc.Data)}
	ino = inode(t, d.FD())
	id := fileID(t, cc, d)
	ok(t, cc.Pause([]uint64{id}, 10*time.Second))
	cp := must(cc.CheckpointFile(id))
	img = &image{bos: map[uint64]*uapi.BoState{}, offsets: map[uint64]uint64{}, pages: t.TempDir() + "/pages",
		mapped: map[uint64][]*uapi.ContentChunk{}}
	img.files = []*uapi.RestoreFile{{Inode: ino, State: cp}}
	dev, mino := mapsEntry(t, mc.Data)
	for _, im := range must(cc.IdentifyMemory([]*uapi.MemoryRef{{Dev: dev, Ino: mino}})) {
		img.addBO(im.Bo) // C: no handle refers to it
	}
	for _, b := range cp.Bos {
		img.addBO(b)
	}
	for _, ch := range must(cc.ChecksumBOs([]uint64{a, c}, uapi.DefaultChecksum)) {
		img.mapped[ch.BoId] = append(img.mapped[ch.BoId], ch)
	}
	f := must(os.Create(img.pages))
	defer f.Close()
	r := must(checkpointInto(cc, []uint64{b}, f, uapi.DefaultChecksum))
	img.chunks = r.Chunks
	ok(t, ma.Unmap())
	ok(t, mc.Unmap())
	kill(t, cc, []uint64{id}, []*libdrm.Device{d}, nil)
	return img, ino, a, c, contents
}

// TestRestoreAdoptsMappedMemory: a mapped BO's memory comes back as the
// memfd criu restored for the task's mapping, checked against the
// checksums of the dump, and shared with the GPU: the restored file's
// BO and the restored mapping are the same memory. A BO only a mapping
// referred to is restored too, and lives until the restored tasks
// mapping it have exited.
func TestRestoreAdoptsMappedMemory(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	img, ino, a, c, contents := mappedImage(t, env)
	backToBaseline(t, env.Kernel, base)

	cc := ctlClient(t, env)
	s := openSession(t, env, cc, img)
	d := s.claim(ino)
	fa, ma := restoredMemfd(t, contents[a])
	fc, _ := restoredMemfd(t, contents[c])
	holder, stop := startHolder(t, fa)
	probe := must(unix.Dup(fa)) // closed below: a description held keeps the BO
	holes := dataExtents(t, probe, 32<<10)
	// Each fd is closed through its *os.File only (see adopt below).
	filA, filC := os.NewFile(uintptr(fa), "a"), os.NewFile(uintptr(fc), "c")
	ok(t, cc.AdoptMemory(s.token, a, filA, []int32{int32(holder)}))
	ok(t, cc.AdoptMemory(s.token, c, filC, []int32{int32(holder)}))
	filA.Close()
	filC.Close()
	// The check read the data in place and left the holes untouched.
	if got := dataExtents(t, probe, 32<<10); got != holes {
		t.Fatalf("restored memory's data %s after the check, %s before", got, holes)
	}
	unix.Close(probe)
	s.resume()
	s.close(false)

	// The file's handle 1 is A: the GPU writes into the restored mapping.
	if got := readBO(t, d, 1, 32<<10); !bytes.Equal(got, contents[a]) {
		t.Fatal("restored BO A differs from its mapping's contents")
	}
	ctx := must(d.CtxCreate(0))
	must(d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: 1, Write: true}}, Commands: []*uapi.Command{fill(0, 0, 8, 0x01020304)}}))
	must(d.WaitIdle(1, true, -1))
	if !bytes.Equal(ma[:8], pattern(8, 0x01020304)) {
		t.Fatal("a job's write is not in the restored mapping")
	}
	var restoredC *kernelsim.DebugBO
	for _, b := range env.Kernel.Debug().BOs {
		if b.Size == 16<<10 {
			restoredC = &b
		}
	}
	if restoredC == nil || restoredC.CPU == nil || len(restoredC.CPU.Holders) != 1 || restoredC.CPU.Holders[0] != int32(holder) {
		t.Fatalf("mapping-only BO C restored as %+v", restoredC)
	}
	d.Close()
	unix.Munmap(ma)
	// B goes with the file; A and C stay while the restored task (the
	// holder) maps them.
	eventually(t, "the restored file and BO B gone", func() bool {
		c := env.Kernel.Counts()
		return c.Files == 0 && c.BOs <= 2
	})
	time.Sleep(50 * time.Millisecond)
	if n := env.Kernel.Counts().BOs; n != 2 {
		t.Fatalf("%d BOs while the restored task maps A and C, want 2", n)
	}
	stop()
	backToBaseline(t, env.Kernel, base)
}

// TestResumeTimesOut: a task's resume waits for every BO of the
// checkpoint, at most its timeout (the plugin's DRMCR_RESUME_TIMEOUT):
// with the memory of a mapped BO never handed over it fails with
// ETIMEDOUT naming that BO, and the claimed file stays paused. Handed
// over later, the same resume succeeds.
func TestResumeTimesOut(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	img, ino, a, c, contents := mappedImage(t, env)
	cc := ctlClient(t, env)
	s := openSession(t, env, cc, img)
	d := s.claim(ino)
	adopt := func(id uint64, data []byte) {
		fd, _ := restoredMemfd(t, data)
		f := os.NewFile(uintptr(fd), "memfd")
		defer f.Close()
		ok(t, cc.AdoptMemory(s.token, id, f, nil))
	}
	adopt(a, contents[a])
	start := time.Now()
	err := cc.ResumeTask(s.token, os.Getpid(), 200*time.Millisecond)
	wantErrno(t, err, syscall.ETIMEDOUT)
	if !strings.Contains(err.Error(), fmt.Sprintf("BO %d", c)) || !strings.Contains(err.Error(), "still loading") {
		t.Fatalf("resume with BO %d's memory never handed over: %v", c, err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("the resume gave up after %v, before its timeout", waited)
	}
	if f := debugFile(t, env, cc, d); !f.Paused {
		t.Error("the file runs although the resume timed out")
	}
	adopt(c, contents[c])
	ok(t, cc.ResumeTask(s.token, os.Getpid(), 10*time.Second))
	if f := debugFile(t, env, cc, d); f.Paused {
		t.Error("the file is paused after a resume that succeeded")
	}
	s.close(false)
	d.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestAdoptRefusesDamagedOrForeignMemory: memory whose bytes differ from
// the dump's checksums fails the BO (and so the task's resume, naming
// it); memory handed over twice, for a BO that is not mapped, or that is
// another BO's already is refused.
func TestAdoptRefusesDamagedOrForeignMemory(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	img, ino, a, c, contents := mappedImage(t, env)
	cc := ctlClient(t, env)
	s := openSession(t, env, cc, img)
	s.claim(ino)
	// adopt hands fd to AdoptMemory and closes it through its *os.File
	// only (an fd also closed directly would be closed again by the
	// File's finalizer, maybe as someone else's).
	adopt := func(id uint64, fd int) error {
		f := os.NewFile(uintptr(fd), "memfd")
		defer f.Close()
		return cc.AdoptMemory(s.token, id, f, nil)
	}

	damaged := bytes.Clone(contents[a])
	damaged[4100] ^= 0xff
	fa, _ := restoredMemfd(t, damaged)
	err := adopt(a, fa)
	wantErrno(t, err, syscall.EIO)
	if !strings.Contains(err.Error(), fmt.Sprintf("BO %d", a)) || !strings.Contains(err.Error(), "does not match the checksum recorded at dump") {
		t.Fatalf("damaged memory: %v", err)
	}
	fa, _ = restoredMemfd(t, contents[a])
	wantErrno(t, adopt(a, fa), syscall.EBUSY)
	// A holder that is no pid is refused as such, before anything is
	// adopted (found by FuzzControl: EMFILE, once the memory was the BO's).
	fc, _ := restoredMemfd(t, contents[c])
	filC := os.NewFile(uintptr(fc), "c")
	err = cc.AdoptMemory(s.token, c, filC, []int32{-1})
	filC.Close()
	wantErrno(t, err, syscall.EINVAL)
	if !strings.Contains(err.Error(), "holder pid -1") {
		t.Fatalf("holder pid -1: %v", err)
	}
	err = cc.ResumeTask(s.token, os.Getpid(), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("BO %d", a)) {
		t.Fatalf("resume on damaged mapped memory: %v", err)
	}

	var plain uint64
	for _, id := range img.order {
		if id != a && id != c {
			plain = id
		}
	}
	fp, _ := restoredMemfd(t, make([]byte, 8192))
	wantErrno(t, adopt(plain, fp), syscall.EINVAL)

	// C's memory is a live BO's: refused.
	other := env.Open(t, 128)
	h := must(other.BOCreate(16<<10, gtt, 0, 0))
	fo := mmapFD(t, other, h)
	wantErrno(t, adopt(c, fo), syscall.EBUSY)
	other.Close()
	s.close(true)
	backToBaseline(t, env.Kernel, base)
}

// TestMappedBOWatchLimit: each mapped BO takes an inotify watch of the
// daemon's user; beyond fs.inotify.max_user_watches (here lowered in the
// daemon's own user namespace) GEM_MMAP fails with ENOSPC naming it, the
// daemon goes on, and a BO freed gives its watch back.
func TestMappedBOWatchLimit(t *testing.T) {
	dir := t.TempDir()
	ok(t, os.Chmod(dir, 0o755))
	wrapper := filepath.Join(dir, "kernelsimd")
	ok(t, os.WriteFile(wrapper, []byte("#!/bin/sh\necho 2 > /proc/sys/user/max_inotify_watches || exit 1\nexec "+kernelsimd(t)+" \"$@\"\n"), 0o755))
	env := ksimtest.StartDaemonWith(t, wrapper, ksimtest.DaemonOptions{UserNS: true})
	d := env.Open(t, 128)
	var hs []uint32
	for range 3 {
		hs = append(hs, must(d.BOCreate(4096, gtt, 0, 0)))
	}
	m1 := must(d.Map(hs[0], 0, 0, rw))
	m2 := must(d.Map(hs[1], 0, 0, rw))
	_, err := d.Map(hs[2], 0, 0, rw)
	wantErrno(t, err, syscall.ENOSPC)
	if !strings.Contains(err.Error(), "fs.inotify.max_user_watches") {
		t.Fatalf("refusal %q does not name the limit", err)
	}
	must(d.Version())
	m2.Unmap()
	ok(t, d.BOClose(hs[1]))
	eventually(t, "the freed BO's watch back", func() bool {
		m, err := d.Map(hs[2], 0, 0, rw)
		if err == nil {
			m.Unmap()
		}
		return err == nil
	})
	m1.Unmap()
}
