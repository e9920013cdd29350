package kernelsim_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

func boCount(env *ksimtest.Env) int { return env.Kernel.Counts().BOs }

func TestPrimeExportImportAcrossFilesAndDevices(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	a := env.Open(t, 128)
	b := env.Open(t, 128)
	x := env.Open(t, 129)
	must(b.BOCreate(4096, gtt, 0, 0)) // b's handle 1 is something else

	h := must(a.BOCreate(8192, vram, 0, 0))
	ok(t, a.Write(h, 0, pattern(8192, 0x11223344)))
	boID := must(a.BOInfo(h)).BoId

	fd1 := must(a.ExportDmaBuf(h))
	fd2 := must(a.ExportDmaBuf(h))
	if fd1 == fd2 {
		t.Fatalf("two exports returned the same descriptor number")
	}
	ino := inode(t, fd1)
	if inode(t, fd2) != ino {
		t.Fatalf("exporting twice gave two dma-bufs: inodes %d and %d", ino, inode(t, fd2))
	}

	// Importing into the exporting file gives the exporting handle back.
	if got := must(a.ImportDmaBuf(fd2)); got != h {
		t.Fatalf("self-import: handle %d, want %d", got, h)
	}
	// Another file of the same device: a new handle to the same BO.
	hb := must(b.ImportDmaBuf(fd1))
	if hb != 2 {
		t.Fatalf("import into b: handle %d, want 2", hb)
	}
	if got := must(b.ImportDmaBuf(fd2)); got != hb {
		t.Fatalf("re-import into b: handle %d, want %d", got, hb)
	}
	if id := must(b.BOInfo(hb)).BoId; id != boID {
		t.Fatalf("b's handle is BO %d, want %d", id, boID)
	}
	// Another device: an import attachment, a GEM object of the importing
	// device standing for the dma-buf, not the exporter's object.
	hx := must(x.ImportDmaBuf(fd1))
	info := must(x.BOInfo(hx))
	if info.BoId == boID || info.Size != 8192 || importOf(t, env, info.BoId) != boID {
		t.Fatalf("xe import: %v, an attachment of BO %d", info, importOf(t, env, info.BoId))
	}
	if got := must(x.ImportDmaBuf(fd2)); got != hx {
		t.Fatalf("re-import into x: handle %d, want %d", got, hx)
	}
	// Exporting from an importer gives the same dma-buf.
	fd3 := must(x.ExportDmaBuf(hx))
	if inode(t, fd3) != ino {
		t.Fatalf("re-export from the importer: inode %d, want %d", inode(t, fd3), ino)
	}
	unix.Close(fd3)

	// Same memory: write through one, read through the others.
	ok(t, x.Write(hx, 4096, pattern(4096, 0xcafef00d)))
	want := append(pattern(4096, 0x11223344), pattern(4096, 0xcafef00d)...)
	if !bytes.Equal(readBO(t, a, h, 8192), want) || !bytes.Equal(readBO(t, b, hb, 8192), want) {
		t.Fatal("importers do not see the same memory")
	}
	if boCount(env) != base.BOs+3 {
		t.Fatalf("%d BOs, want %d", boCount(env), base.BOs+3)
	}

	// The BO lives while any handle or dma-buf fd refers to it: the
	// exporter's handle and every fd gone, the attachment keeps it.
	unix.Close(fd1)
	unix.Close(fd2)
	ok(t, a.BOClose(h))
	ok(t, b.BOClose(hb))
	if !bytes.Equal(readBO(t, x, hx, 8192), want) {
		t.Fatal("the last importer lost the contents")
	}
	if _, err := a.BOInfo(h); err == nil {
		t.Fatal("closed handle still answers")
	}
	// The exporting process is gone altogether.
	a.Close()
	ok(t, x.Write(hx, 0, []byte{7}))
	if got := readBO(t, x, hx, 1); got[0] != 7 {
		t.Fatal("the attachment lost its memory with the exporter's file")
	}
	ok(t, x.BOClose(hx))
	eventually(t, "the BO and its dma-buf to be freed", func() bool {
		c := env.Kernel.Counts()
		return c.BOs == base.BOs+1 && c.DmaBufs == base.DmaBufs
	})
}

func TestPrimeDmaBufFDKeepsBOAlive(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	a := env.Open(t, 128)
	x := env.Open(t, 129)
	h := must(a.BOCreate(4096, gtt, 0, 0))
	ok(t, a.Write(h, 0, pattern(4096, 0xabcdef01)))
	fd := must(a.ExportDmaBuf(h))
	ino := inode(t, fd)
	ok(t, a.BOClose(h))
	// No handle left; only the fd holds the BO.
	st := env.Kernel.Debug()
	if len(st.BOs) != 1 || len(st.DmaBufs) != 1 || st.DmaBufs[0].Inode != ino || st.DmaBufs[0].PrimeRefs != 0 {
		t.Fatalf("after closing the only handle: bos %+v dmabufs %+v", st.BOs, st.DmaBufs)
	}
	// A dup is the same file: closing one copy keeps it.
	dup := must(unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0))
	unix.Close(fd)
	hx := must(x.ImportDmaBuf(dup))
	if !bytes.Equal(readBO(t, x, hx, 4096), pattern(4096, 0xabcdef01)) {
		t.Fatal("contents lost while only a dma-buf fd held the BO")
	}
	// Import again into a: a new handle, the lowest free (1 again).
	if ha := must(a.ImportDmaBuf(dup)); ha != 1 {
		t.Fatalf("re-import into the original exporter: handle %d", ha)
	}
	ok(t, a.BOClose(1))
	ok(t, x.BOClose(hx))
	if boCount(env) != base.BOs+1 {
		t.Fatal("BO freed while a dma-buf fd is open")
	}
	unix.Close(dup)
	eventually(t, "closing the last dma-buf fd to free the BO", func() bool {
		c := env.Kernel.Counts()
		return c.BOs == base.BOs && c.DmaBufs == base.DmaBufs
	})
	// The inode is forgotten.
	c := ctlClient(t, env)
	if o := must(c.Identify([]uint64{ino})); o[0].Kind != uapi.ObjectKind_OBJECT_UNKNOWN {
		t.Fatalf("released dma-buf still identified: %v", o[0])
	}
}

func TestPrimeImportAfterFileClose(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	a, err := libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128))
	ok(t, err)
	h := must(a.BOCreate(4096, vram, 0, 0))
	ok(t, a.Write(h, 0, pattern(4096, 7)))
	fd := must(a.ExportDmaBuf(h))
	a.Close() // the exporter's file goes; the dma-buf keeps the BO
	x := env.Open(t, 129)
	hx := must(x.ImportDmaBuf(fd))
	if !bytes.Equal(readBO(t, x, hx, 4096), pattern(4096, 7)) {
		t.Fatal("contents lost with the exporting file")
	}
	unix.Close(fd)
	x.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestPrimeBetweenProcesses passes a dma-buf to another process with
// SCM_RIGHTS; the child imports it on the xe device, checks and rewrites
// the contents and exports it again.
func TestPrimeBetweenProcesses(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	base := takeCensus(env.Kernel)
	a := env.Open(t, 128)
	h := must(a.BOCreate(8192, vram, 0, 0))
	ok(t, a.Write(h, 0, pattern(8192, 0x01020304)))
	fd := must(a.ExportDmaBuf(h))

	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	ok(t, err)
	parent, childEnd := sp[0], os.NewFile(uintptr(sp[1]), "child-sock")
	defer unix.Close(parent)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=prime-import",
		"KSIM_NODE="+kernelsim.RenderNodePath(env.Dir, 129),
		"KSIM_INO="+strconv.FormatUint(inode(t, fd), 10))
	cmd.ExtraFiles = []*os.File{childEnd}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ok(t, cmd.Start())
	childEnd.Close()
	ok(t, uapi.Send(parent, []byte("dmabuf"), fd))
	unix.Close(fd) // now only the child holds the dma-buf fd
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	want := append(pattern(4096, 0x01020304), pattern(4096, 0x0badcafe)...)
	if got := readBO(t, a, h, 8192); !bytes.Equal(got, want) {
		t.Fatalf("the child's write is not visible: %x", got[4096:4112])
	}
	ok(t, a.BOClose(h))
	a.Close()
	backToBaseline(t, env.Kernel, base)
}

// childPrimeImport is the child of TestPrimeBetweenProcesses.
func childPrimeImport() error {
	buf := make([]byte, 64)
	n, fds, err := uapi.Recv(3, buf, 0)
	if err != nil || len(fds) != 1 || string(buf[:n]) != "dmabuf" {
		return fmt.Errorf("receive dma-buf: %v (%d fds)", err, len(fds))
	}
	fd := fds[0]
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if want := os.Getenv("KSIM_INO"); strconv.FormatUint(st.Ino, 10) != want {
		return fmt.Errorf("received inode %d, the parent exported %s", st.Ino, want)
	}
	d, err := libdrm.Open(os.Getenv("KSIM_NODE"))
	if err != nil {
		return err
	}
	h, err := d.ImportDmaBuf(fd)
	if err != nil {
		return err
	}
	p := make([]byte, 8192)
	if err := d.Read(h, 0, p); err != nil {
		return err
	}
	if !bytes.Equal(p, pattern(8192, 0x01020304)) {
		return fmt.Errorf("imported contents differ")
	}
	if err := d.Write(h, 4096, pattern(4096, 0x0badcafe)); err != nil {
		return err
	}
	efd, err := d.ExportDmaBuf(h)
	if err != nil {
		return err
	}
	var est unix.Stat_t
	unix.Fstat(efd, &est)
	if est.Ino != st.Ino {
		return fmt.Errorf("re-export in the child: inode %d, want %d", est.Ino, st.Ino)
	}
	// Exit without closing anything: the kernel cleans up after the process.
	return nil
}
