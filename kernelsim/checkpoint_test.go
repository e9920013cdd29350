package kernelsim_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// image is what a checkpoint of some drm files and dma-bufs produced, as
// the plugin would store it: files by client inode, dma-bufs by inode, BO
// states and contents.
type image struct {
	files    []*uapi.RestoreFile
	channels []*uapi.RestoreChannel
	dmabufs  []*uapi.RestoreDmaBuf
	bos      map[uint64]*uapi.BoState
	order    []uint64
	pages    string // the pages file
	offsets  map[uint64]uint64
	chunks   []*uapi.ContentChunk
	mapped   map[uint64][]*uapi.ContentChunk // BOs whose memory criu restores
	checksum uapi.Checksum                   // of the chunks
}

func (img *image) addBO(st *uapi.BoState) {
	if _, ok := img.bos[st.BoId]; !ok {
		img.bos[st.BoId] = st
		img.order = append(img.order, st.BoId)
	}
}

func (img *image) file(ino uint64) *uapi.FileCheckpoint {
	for _, f := range img.files {
		if f.Inode == ino {
			return f.State
		}
	}
	return nil
}

// checkpoint pauses the devices' files, checkpoints them and the dma-bufs
// and writes every BO's contents to image files. The files stay paused
// and frozen: the caller "kills" the process and resumes them.
func checkpoint(t testing.TB, c *ctl.Client, devs []*libdrm.Device, dmabufs []int) (*image, []uint64) {
	t.Helper()
	return checkpointWith(t, c, devs, dmabufs, uapi.DefaultChecksum)
}

// checkpointWith is checkpoint with the chunks checksummed with alg.
func checkpointWith(t testing.TB, c *ctl.Client, devs []*libdrm.Device, dmabufs []int, alg uapi.Checksum) (*image, []uint64) {
	t.Helper()
	img := &image{bos: map[uint64]*uapi.BoState{}, offsets: map[uint64]uint64{}, pages: filepath.Join(t.TempDir(), "pages"), checksum: alg}
	var ids []uint64
	for _, d := range devs {
		ids = append(ids, fileID(t, c, d))
	}
	ok(t, c.Pause(ids, 10*time.Second))
	for i, d := range devs {
		cp := must(c.CheckpointFile(ids[i]))
		cp.Io = must(c.CheckpointIO(ids[i], inode(t, d.FD()), d.FD()))
		img.files = append(img.files, &uapi.RestoreFile{Inode: inode(t, d.FD()), State: cp})
		for _, b := range cp.Bos {
			img.addBO(b)
		}
		for _, r := range cp.Io.UnreadReplies {
			if r.Bo != nil {
				img.addBO(r.Bo)
			}
		}
	}
	for _, fd := range dmabufs {
		ino := inode(t, fd)
		st := must(c.CheckpointDmaBuf(ino))
		img.addBO(st)
		img.dmabufs = append(img.dmabufs, &uapi.RestoreDmaBuf{Inode: ino, BoId: st.BoId})
	}
	f := must(os.Create(img.pages))
	defer f.Close()
	var size uint64
	for _, id := range img.order {
		img.offsets[id] = size
		size += img.bos[id].Size
	}
	r := must(checkpointInto(c, img.order, f, alg))
	if r.Size != size {
		t.Fatalf("pages file: %d bytes written, the BOs have %d", r.Size, size)
	}
	img.chunks = r.Chunks
	return img, ids
}

// kill closes what the checkpointed process held and lets the kernel
// release it, as criu's dump does (the plugin resumes at exit).
func kill(t testing.TB, c *ctl.Client, ids []uint64, devs []*libdrm.Device, fds []int) {
	t.Helper()
	for _, d := range devs {
		d.Close()
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	ok(t, c.Resume(ids))
}

// sessionRequest is the SESSION_OPEN request of the image.
func (img *image) sessionRequest() *uapi.SessionOpenRequest {
	req := &uapi.SessionOpenRequest{Files: img.files, Channels: img.channels, Dmabufs: img.dmabufs,
		PagesFiles: []*uapi.PagesFile{{Name: "pages", Chunks: img.chunks}}}
	if img.checksum != 0 {
		req.Checksum = img.checksum.String()
	}
	for _, id := range img.order {
		req.Bos = append(req.Bos, img.bos[id])
		if chunks, ok := img.mapped[id]; ok {
			req.Contents = append(req.Contents, &uapi.BoContents{BoId: id, Mapped: true, Chunks: chunks})
			continue
		}
		req.Contents = append(req.Contents, &uapi.BoContents{BoId: id, Offset: img.offsets[id]})
	}
	return req
}

type session struct {
	t     testing.TB
	env   *ksimtest.Env
	c     *ctl.Client
	img   *image
	token []byte
}

func openSession(t testing.TB, env *ksimtest.Env, c *ctl.Client, img *image) *session {
	t.Helper()
	rep := must(c.OpenSession(img.sessionRequest()))
	f := must(os.Open(img.pages))
	ok(t, c.LoadPages(rep.Token, 0, f))
	f.Close()
	return &session{t: t, env: env, c: c, img: img, token: rep.Token}
}

// claimRaw does what the plugin's C part does in a restored task: connect
// to the render node, send CLAIM_FILE as the first request and read the
// reply. It returns the socket.
func (s *session) claimRaw(ino uint64) (int, error) {
	pkt, _ := uapi.Marshal(uapi.Header{Op: uapi.OpClaimFile, Seq: 1}, &uapi.ClaimFileRequest{Token: s.token, Inode: ino})
	return s.claimWith(s.img.file(ino).Minor, ino, pkt)
}

// claimChannelRaw is claimRaw for a reply channel of file fileIno.
func (s *session) claimChannelRaw(ino, fileIno uint64) (int, error) {
	pkt, _ := uapi.Marshal(uapi.Header{Op: uapi.OpClaimChannel, Seq: 1}, &uapi.ClaimChannelRequest{Token: s.token, Inode: ino})
	return s.claimWith(s.img.file(fileIno).Minor, ino, pkt)
}

func (s *session) claimWith(minor uint32, ino uint64, pkt []byte) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: kernelsim.RenderNodePath(s.env.Dir, minor)}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := uapi.Send(fd, pkt); err != nil {
		unix.Close(fd)
		return -1, err
	}
	h, payload, _, err := recvTimeout(fd, 20*time.Second)
	if err == nil && h.Status != 0 {
		var e uapi.ErrorReply
		proto.Unmarshal(payload, &e)
		err = fmt.Errorf("claim inode %d: status %d: %s", ino, h.Status, e.Message)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (s *session) claim(ino uint64) *libdrm.Device {
	s.t.Helper()
	fd := must(s.claimRaw(ino))
	d := libdrm.FromFD(fd)
	s.t.Cleanup(func() { d.Close() })
	return d
}

// claimDmaBuf fetches a restored dma-buf over a temporary connection.
func (s *session) claimDmaBuf(ino uint64) (int, error) {
	r, err := uapi.Dial(kernelsim.RenderNodePath(s.env.Dir, s.img.bos[s.dmabufBO(ino)].Minor))
	if err != nil {
		return -1, err
	}
	defer r.Close()
	fds, err := r.Call(uapi.OpClaimDmaBuf, &uapi.ClaimDmaBufRequest{Token: s.token, Inode: ino}, nil)
	if err != nil {
		return -1, err
	}
	if len(fds) != 1 {
		uapi.CloseFDs(fds)
		return -1, fmt.Errorf("claim dma-buf: %d fds", len(fds))
	}
	return fds[0], nil
}

func (s *session) dmabufBO(ino uint64) uint64 {
	for _, d := range s.img.dmabufs {
		if d.Inode == ino {
			return d.BoId
		}
	}
	s.t.Fatalf("no dma-buf %d in the image", ino)
	return 0
}

func (s *session) resume() {
	s.t.Helper()
	ok(s.t, s.c.ResumeTask(s.token, os.Getpid(), 20*time.Second))
}

func (s *session) close(abort bool) {
	s.t.Helper()
	ok(s.t, s.c.CloseSession(s.token, abort))
}

func debugFile(t testing.TB, env *ksimtest.Env, c *ctl.Client, d *libdrm.Device) kernelsim.DebugFile {
	t.Helper()
	id := fileID(t, c, d)
	for _, f := range env.Kernel.Debug().Files {
		if f.ID == id {
			return f
		}
	}
	t.Fatalf("no file %d in the debug view", id)
	return kernelsim.DebugFile{}
}

// TestCheckpointRestoreRoundTrip checkpoints two processes' worth of
// state (an amdgpu file, an xe file importing one of its BOs, a dma-buf fd)
// with a long-running compute preempted half-way, kills it, and restores
// it through the sockets, checking everything observable.
func TestCheckpointRestoreRoundTrip(t *testing.T) {
	amd := amdgpuDev()
	amd.JobTimeout = time.Second
	amd.IterTime = time.Millisecond
	amd.Bandwidth = 0
	env, clk := manualEnv(t, amd, instant(xeDev()))
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)

	a := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	x := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 129)))
	// Handles 1..5 with a gap at 2 and 4.
	h1 := must(a.BOCreate(64<<10, vram, 0x3, 64<<10))
	h2 := must(a.BOCreate(4096, gtt, 0, 0))
	shared := must(a.BOCreate(8192, gtt, 0x10, 0))
	h4 := must(a.BOCreate(4096, gtt, 0, 0))
	dst := must(a.BOCreate(4096, vram, 0, 0))
	ok(t, a.BOClose(h2))
	ok(t, a.BOClose(h4))
	ok(t, a.Write(h1, 0, pattern(64<<10, 0xfeedbeef)))
	ok(t, a.Write(shared, 0, pattern(8192, 0x12345678)))
	ok(t, a.VMMap(h1, 0, 0x100000, 64<<10, 1))
	ok(t, a.VMMap(shared, 4096, 0x400000, 4096, 2))
	dfd := must(a.ExportDmaBuf(shared))
	xs := must(x.ImportDmaBuf(dfd))
	xown := must(x.BOCreate(4096, vram, 0, 0))
	ok(t, x.Write(xown, 0, pattern(4096, 0xabababab)))
	xctx := must(x.CtxCreate(0))
	xvm := must(x.XeVMCreate(0))
	ok(t, x.XeBind(xvm, xs, 0, 0x10000, 8192))

	c1 := must(a.CtxCreate(1))
	c2 := must(a.CtxCreate(-1))
	sOK, sEmpty, sHang, sLR, sSw := must(a.SyncobjCreate(true)), must(a.SyncobjCreate(false)), must(a.SyncobjCreate(false)), must(a.SyncobjCreate(false)), must(a.SyncobjCreate(false))
	tl := must(a.SwSyncCreate())
	ok(t, a.SwSyncInc(tl, 3))
	ok(t, a.SwSyncFence(tl, 10, sSw))
	// c2 hangs and becomes guilty.
	submit(t, a, &uapi.SubmitRequest{CtxId: c2, Commands: []*uapi.Command{hang()}, OutSyncobjs: []uint32{sHang}})
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("no TDR timer")
	}
	clk.Advance(time.Second)
	if st := waitSync(t, a, sHang); st.errno != -int32(syscall.ETIME) {
		t.Fatal(st)
	}
	// c1 runs a 1000-iteration compute (1 s of clock) over h1; 300 ms in,
	// the checkpoint preempts it.
	const iters = 1000
	submit(t, a, &uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(dst, true), bo(h1, false)},
		Commands: []*uapi.Command{compute(0, 1, 64<<10, iters)}, OutSyncobjs: []uint32{sLR}, LongRunning: true})
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("compute did not start")
	}
	clk.Advance(300 * time.Millisecond)

	before := map[string]kernelsim.DebugFile{"a": debugFile(t, env, c, a), "x": debugFile(t, env, c, x)}
	aIno, xIno := inode(t, a.FD()), inode(t, x.FD())
	img, ids := checkpoint(t, c, []*libdrm.Device{a, x}, []int{dfd})
	cpA := img.file(aIno)
	var priv uapi.DriverPrivate
	ok(t, proto.Unmarshal(cpA.DriverPrivate, &priv))
	if len(priv.Contexts) != 2 || len(priv.Contexts[0].Jobs) != 1 || priv.Contexts[0].Jobs[0].ProgressIter != 300 {
		t.Fatalf("checkpointed contexts: %v", &priv)
	}
	if len(img.bos) != 4 {
		t.Fatalf("image has %d BOs, want 4", len(img.bos))
	}
	kill(t, c, ids, []*libdrm.Device{a, x}, []int{dfd})
	backToBaseline(t, env.Kernel, base)

	// Restore, the xe file first.
	s := openSession(t, env, c, img)
	rx := s.claim(xIno)
	ra := s.claim(aIno)
	rfd := must(s.claimDmaBuf(img.dmabufs[0].Inode))
	defer unix.Close(rfd)
	s.resume()
	s.close(false)

	after := map[string]kernelsim.DebugFile{"a": debugFile(t, env, c, ra), "x": debugFile(t, env, c, rx)}
	for name, b := range before {
		a := after[name]
		if len(a.Handles) != len(b.Handles) {
			t.Fatalf("%s handles: %+v, before %+v", name, a.Handles, b.Handles)
		}
		for i := range b.Handles {
			if a.Handles[i].Handle != b.Handles[i].Handle || a.Handles[i].Prime != b.Handles[i].Prime {
				t.Errorf("%s handle %d: %+v, before %+v", name, i, a.Handles[i], b.Handles[i])
			}
		}
		if fmt.Sprint(a.Mappings) != fmt.Sprint(b.Mappings) {
			t.Errorf("%s mappings: %+v, before %+v", name, a.Mappings, b.Mappings)
		}
		if a.PID != int32(os.Getpid()) || a.Paused {
			t.Errorf("%s: pid %d paused %v", name, a.PID, a.Paused)
		}
	}
	for _, h := range []struct {
		d         *libdrm.Device
		h         uint32
		size      uint64
		dom       uapi.Domain
		flags, al uint64
		data      []byte
	}{
		{ra, h1, 64 << 10, vram, 3, 64 << 10, pattern(64<<10, 0xfeedbeef)},
		{ra, shared, 8192, gtt, 0x10, 4096, pattern(8192, 0x12345678)},
		{rx, xs, 8192, gtt, 0, 4096, pattern(8192, 0x12345678)}, // an import attachment
		{rx, xown, 4096, vram, 0, 4096, pattern(4096, 0xabababab)},
	} {
		info := must(h.d.BOInfo(h.h))
		if info.Size != h.size || info.Domain != h.dom || info.Flags != h.flags || info.Alignment != h.al {
			t.Errorf("handle %d: %v", h.h, info)
		}
		if !bytes.Equal(readBO(t, h.d, h.h, int(h.size)), h.data) {
			t.Errorf("handle %d: contents differ", h.h)
		}
	}
	for _, gone := range []uint32{h2, h4} {
		if _, err := ra.BOInfo(gone); err == nil {
			t.Errorf("closed handle %d restored", gone)
		}
	}
	// Sharing is restored: one BO behind a's handle and the dma-buf, and
	// x's handle an import attachment of it on x's device.
	if importOf(t, env, must(rx.BOInfo(xs)).BoId) != must(ra.BOInfo(shared)).BoId {
		t.Fatal("x's handle is not an import attachment of the shared BO")
	}
	if h := must(ra.ImportDmaBuf(rfd)); h != shared {
		t.Fatalf("restored dma-buf imports as handle %d, want %d", h, shared)
	}
	ok(t, rx.Write(xs, 0, []byte{9, 9, 9, 9}))
	if got := readBO(t, ra, shared, 4); !bytes.Equal(got, []byte{9, 9, 9, 9}) {
		t.Fatal("restored sharing is not the same memory")
	}
	// Contexts.
	if q := must(ra.CtxQuery(c2)); !q.Guilty || q.Submitted != 1 || q.Completed != 1 {
		t.Errorf("restored guilty context: %v", q)
	}
	_, err := ra.Submit(&uapi.SubmitRequest{CtxId: c2})
	wantErrno(t, err, syscall.ECANCELED)
	if q := must(ra.CtxQuery(c1)); q.Guilty || q.Submitted != 1 || q.Completed != 0 {
		t.Errorf("restored context 1: %v", q)
	}
	must(rx.CtxQuery(xctx))
	// Syncobjs.
	if st := query(t, ra, sOK); !st.signaled || st.errno != 0 {
		t.Errorf("signalled syncobj: %+v", st)
	}
	if r := must(ra.SyncobjQuery(sEmpty)); r.HasFence {
		t.Errorf("empty syncobj: %v", r)
	}
	if st := query(t, ra, sHang); !st.signaled || st.errno != -int32(syscall.ETIME) {
		t.Errorf("error syncobj: %+v", st)
	}
	if query(t, ra, sLR).signaled || query(t, ra, sSw).signaled {
		t.Error("pending syncobjs restored signalled")
	}
	ok(t, ra.SwSyncInc(tl, 6))
	if query(t, ra, sSw).signaled {
		t.Error("sw_sync point 10 signalled at 9: timeline value not restored")
	}
	ok(t, ra.SwSyncInc(tl, 1))
	waitSync(t, ra, sSw)
	// The preempted compute continues where it stopped.
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("restored compute did not start")
	}
	clk.Advance(700 * time.Millisecond)
	if st := waitSync(t, ra, sLR); st.errno != 0 {
		t.Fatalf("restored compute: %+v", st)
	}
	got := binary.LittleEndian.Uint64(readBO(t, ra, dst, 8))
	if want := referenceCompute(t, pattern(64<<10, 0xfeedbeef), iters); got != want {
		t.Fatalf("restored compute result %#x, want %#x", got, want)
	}
}

// sharedImage checkpoints a BO shared by two files (exporter a, importer
// b, on different devices) and a third party holding only a dma-buf fd.
func sharedImage(t *testing.T, env *ksimtest.Env, c *ctl.Client) (*image, uint64, uint64, uint64) {
	a := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	b := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 129)))
	must(b.BOCreate(4096, vram, 0, 0))
	h := must(a.BOCreate(8192, vram, 0, 0))
	ok(t, a.Write(h, 0, pattern(8192, 0x600df00d)))
	fd := must(a.ExportDmaBuf(h))
	if hb := must(b.ImportDmaBuf(fd)); hb != 2 {
		t.Fatalf("import handle %d", hb)
	}
	// The exporter closes its handle: nobody is "the exporter" any more.
	ok(t, a.BOClose(h))
	aIno, bIno, dIno := inode(t, a.FD()), inode(t, b.FD()), inode(t, fd)
	img, ids := checkpoint(t, c, []*libdrm.Device{a, b}, []int{fd})
	kill(t, c, ids, []*libdrm.Device{a, b}, []int{fd})
	return img, aIno, bIno, dIno
}

func TestRestoreSharedBOInEveryClaimOrder(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	img, aIno, bIno, dIno := sharedImage(t, env, c)
	backToBaseline(t, env.Kernel, base)

	orders := [][]string{{"a", "b", "d"}, {"a", "d", "b"}, {"b", "a", "d"}, {"b", "d", "a"}, {"d", "a", "b"}, {"d", "b", "a"}}
	for _, order := range orders {
		t.Run(strings.Join(order, ""), func(t *testing.T) {
			s := openSession(t, env, c, img)
			devs := map[string]*libdrm.Device{}
			var dfd int
			for _, who := range order {
				switch who {
				case "a":
					devs["a"] = s.claim(aIno)
				case "b":
					devs["b"] = s.claim(bIno)
				case "d":
					dfd = must(s.claimDmaBuf(dIno))
				}
			}
			s.resume()
			s.close(false)
			checkShared(t, env, base, devs["a"], devs["b"], dfd)
			devs["a"].Close()
			devs["b"].Close()
			unix.Close(dfd)
			backToBaseline(t, env.Kernel, base)
		})
	}

	t.Run("concurrent", func(t *testing.T) {
		for round := 0; round < 10; round++ {
			s := openSession(t, env, c, img)
			var (
				wg         sync.WaitGroup
				afd, bfd   int
				dfd        int
				ea, eb, ed error
			)
			wg.Add(3)
			go func() { defer wg.Done(); afd, ea = s.claimRaw(aIno) }()
			go func() { defer wg.Done(); bfd, eb = s.claimRaw(bIno) }()
			go func() { defer wg.Done(); dfd, ed = s.claimDmaBuf(dIno) }()
			wg.Wait()
			ok(t, ea)
			ok(t, eb)
			ok(t, ed)
			s.resume()
			s.close(false)
			a, b := libdrm.FromFD(afd), libdrm.FromFD(bfd)
			checkShared(t, env, base, a, b, dfd)
			a.Close()
			b.Close()
			unix.Close(dfd)
			backToBaseline(t, env.Kernel, base)
		}
	})

	t.Run("abort", func(t *testing.T) {
		s := openSession(t, env, c, img)
		a := s.claim(aIno)
		dfd := must(s.claimDmaBuf(dIno))
		defer unix.Close(dfd)
		if env.Kernel.Counts().BOs == base.BOs {
			t.Fatal("claims created nothing")
		}
		s.close(true)
		// The claimed connection is shut down; the file is gone.
		if _, err := a.Version(); err == nil {
			t.Fatal("aborted session's file still answers")
		}
		_, err := s.claimRaw(bIno)
		if err == nil {
			t.Fatal("claim in an aborted session succeeded")
		}
		unix.Close(dfd)
		backToBaseline(t, env.Kernel, base)
	})
}

// importOf is the exporter's BO of an import attachment, 0 for a BO that
// is none.
func importOf(t testing.TB, env *ksimtest.Env, id uint64) uint64 {
	t.Helper()
	for _, b := range env.Kernel.Debug().BOs {
		if b.ID == id {
			return b.ImportOf
		}
	}
	t.Fatalf("no BO %d", id)
	return 0
}

func checkShared(t *testing.T, env *ksimtest.Env, base census, a, b *libdrm.Device, dfd int) {
	t.Helper()
	// The shared BO on the exporter's device (renderD128), whatever
	// claimed first, and b's import attachment of it on b's device.
	if n := env.Kernel.Counts().BOs - base.BOs; n != 3 {
		t.Fatalf("%d BOs restored, want 3 (b's own, the shared one and b's import attachment of it)", n)
	}
	att := must(b.BOInfo(2)).BoId
	exp := importOf(t, env, att)
	for _, bo := range env.Kernel.Debug().BOs {
		switch bo.ID {
		case exp:
			if bo.Minor != 128 || bo.ImportOf != 0 {
				t.Fatalf("the shared BO: %+v, want a BO of renderD128", bo)
			}
		case att:
			if bo.Minor != 129 {
				t.Fatalf("b's import attachment: %+v, want one of renderD129", bo)
			}
		}
	}
	if !bytes.Equal(readBO(t, b, 2, 8192), pattern(8192, 0x600df00d)) {
		t.Fatal("importer's contents")
	}
	if _, err := a.BOInfo(1); err == nil {
		t.Fatal("the exporter's closed handle came back")
	}
	// The dma-buf fd refers to the same BO as b's handle.
	if h := must(b.ImportDmaBuf(dfd)); h != 2 {
		t.Fatalf("restored dma-buf imports into b as %d, want 2", h)
	}
	ha := must(a.ImportDmaBuf(dfd))
	ok(t, a.Write(ha, 0, []byte{1, 2, 3, 4}))
	if got := readBO(t, b, 2, 4); !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatal("not the same memory")
	}
}

func TestPauseDrainsPreemptsAndBlocksSubmits(t *testing.T) {
	dev := amdgpuDev()
	dev.Bandwidth = 64 << 20
	dev.IterTime = time.Millisecond
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	c := ctlClient(t, env)
	d := env.Open(t, 128)
	h := must(d.BOCreate(1<<20, vram, 0, 0))
	dst := must(d.BOCreate(4096, vram, 0, 0))
	c1, c2 := must(d.CtxCreate(0)), must(d.CtxCreate(0))
	var outs []uint32
	for i := range 8 {
		s := must(d.SyncobjCreate(false))
		outs = append(outs, s)
		submit(t, d, &uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(h, true)},
			Commands: []*uapi.Command{fill(0, 0, 1<<20, uint32(i))}, OutSyncobjs: []uint32{s}})
	}
	slr := must(d.SyncobjCreate(false))
	submit(t, d, &uapi.SubmitRequest{CtxId: c2, Bos: []*uapi.SubmitBo{bo(dst, true), bo(h, false)},
		Commands: []*uapi.Command{compute(0, 1, 4096, 1<<20)}, OutSyncobjs: []uint32{slr}, LongRunning: true})
	id := fileID(t, c, d)
	ok(t, c.Pause([]uint64{id}, 20*time.Second))
	for _, s := range outs {
		if st := query(t, d, s); !st.signaled || st.errno != 0 {
			t.Fatalf("regular job not drained by pause: %+v", st)
		}
	}
	if query(t, d, slr).signaled {
		t.Fatal("long-running job completed or was killed instead of preempted")
	}
	if f := debugFile(t, env, c, d); !f.Paused {
		t.Fatal("debug view: file not paused")
	}
	// A submit blocks until resume.
	s := must(d.SyncobjCreate(false))
	other := must(d.BOCreate(4096, vram, 0, 0)) // h is still read by the preempted job
	done := make(chan error, 1)
	go func() {
		_, err := d.Submit(&uapi.SubmitRequest{CtxId: c1, Bos: []*uapi.SubmitBo{bo(other, true)},
			Commands: []*uapi.Command{fill(0, 0, 4096, 0x42)}, OutSyncobjs: []uint32{s}})
		done <- err
	}()
	// The checkpoint sees the preempted job with its progress.
	cp := must(c.CheckpointFile(id))
	var priv uapi.DriverPrivate
	ok(t, proto.Unmarshal(cp.DriverPrivate, &priv))
	if j := priv.Contexts[1].Jobs; len(j) != 1 || !j[0].LongRunning {
		t.Fatalf("preempted job: %v", j)
	}
	select {
	case err := <-done:
		t.Fatalf("submit to a paused file returned: %v", err)
	default:
	}
	ok(t, c.Resume([]uint64{id}))
	ok(t, <-done)
	// The long-running job carries on after resume, on the in-order ring
	// ahead of the new job: cut it short.
	ok(t, d.CtxDestroy(c2))
	if st := waitSync(t, d, slr); st.errno != -int32(syscall.ECANCELED) {
		t.Fatal(st)
	}
	if st := waitSync(t, d, s); st.errno != 0 {
		t.Fatal(st)
	}
}

// TestResumeRunsRequestHeldWhileReaderSleeps: a request that a
// checkpoint read from the socket itself (Freeze drains what is queued)
// runs once the connection thaws, although its reader sleeps in the
// netpoller and the socket never becomes readable again: when the drain
// beats the netpoller to the socket's readiness, epoll drops that edge.
// The hook holds the request as the drain would, after the reader has
// gone to sleep; without a wakeup on thaw its client would wait forever.
func TestResumeRunsRequestHeldWhileReaderSleeps(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	c := ctlClient(t, env)
	fd := must(uapi.DialSocket(kernelsim.RenderNodePath(env.Dir, 128)))
	t.Cleanup(func() { unix.Close(fd) })
	call := func(seq uint32) *uapi.VersionReply {
		t.Helper()
		pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: seq}, &uapi.VersionRequest{}))
		ok(t, uapi.Send(fd, pkt))
		return readVersionReply(t, fd, seq)
	}
	id := call(1).FileId
	waitReaderAsleep(t)
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	must(c.CheckpointFile(id))
	pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 2}, &uapi.VersionRequest{}))
	ok(t, kernelsim.HoldRequest(env.Kernel, id, pkt))
	ok(t, c.Resume([]uint64{id}))
	if got := readVersionReply(t, fd, 2).FileId; got != id {
		t.Fatalf("held request answered for file %d, want %d", got, id)
	}
	// The reader reads the socket again.
	if got := call(3).FileId; got != id {
		t.Fatalf("file %d, want %d", got, id)
	}
}

// readVersionReply reads the reply to VERSION request seq from fd. A
// reply that never comes fails the test after 30s (a hang, not a
// measure of speed).
func readVersionReply(t *testing.T, fd int, seq uint32) *uapi.VersionReply {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 30_000)
	for err == unix.EINTR { // the runtime's preemption signals
		n, err = unix.Poll(pfd, 30_000)
	}
	if err != nil || n == 0 {
		t.Fatalf("no reply to request %d (poll: %d, %v): the request was never run", seq, n, err)
	}
	buf := make([]byte, uapi.MaxMessage)
	n, fds, err := uapi.Recv(fd, buf, 0)
	ok(t, err)
	uapi.CloseFDs(fds)
	h := must(uapi.ParseHeader(buf[:n]))
	if h.Seq != seq || h.Status != 0 {
		t.Fatalf("reply %+v, want request %d's, successful", h, seq)
	}
	var r uapi.VersionReply
	ok(t, proto.Unmarshal(buf[uapi.HeaderSize:n], &r))
	return &r
}

// waitReaderAsleep waits until a render-node connection's reader sleeps
// in the netpoller, waiting for its socket to be readable.
func waitReaderAsleep(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for range 6000 {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, "kernelsim.(*conn).next(") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no connection's reader went to sleep in the netpoller")
}

func TestPauseTimeoutNamesCulpritAndLeavesNothingPaused(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	d := env.Open(t, 128)
	other := env.Open(t, 129)
	c1, c2 := must(d.CtxCreate(0)), must(d.CtxCreate(0))
	tl := must(d.SwSyncCreate())
	gate := must(d.SyncobjCreate(false))
	ok(t, d.SwSyncFence(tl, 1, gate))
	submit(t, d, &uapi.SubmitRequest{CtxId: c2, Commands: []*uapi.Command{}, InSyncobjs: []uint32{gate}})
	ids := []uint64{fileID(t, c, d), fileID(t, c, other)}
	err := c.Pause(ids, 200*time.Millisecond)
	wantErrno(t, err, syscall.ETIMEDOUT)
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("pid %d", os.Getpid()), fmt.Sprintf("context %d", c2), "dependency", "sw_sync"} {
		if !strings.Contains(msg, want) {
			t.Errorf("pause error %q does not name %q", msg, want)
		}
	}
	if strings.Contains(msg, fmt.Sprintf("context %d:", c1)) {
		t.Errorf("pause error blames the idle context %d: %q", c1, msg)
	}
	for _, f := range env.Kernel.Debug().Files {
		if f.Paused {
			t.Fatalf("file %d left paused", f.ID)
		}
		for _, ctx := range f.Contexts {
			if ctx.Paused {
				t.Fatalf("file %d context %d left paused", f.ID, ctx.ID)
			}
		}
	}
	// Work flows: a submit does not block, and the stuck job runs once
	// its fence signals.
	s := must(d.SyncobjCreate(false))
	submit(t, d, &uapi.SubmitRequest{CtxId: c1, Commands: []*uapi.Command{}, OutSyncobjs: []uint32{s}})
	waitSync(t, d, s)
	ok(t, d.SwSyncInc(tl, 1))
	ok(t, c.Pause(ids, 10*time.Second))
	ok(t, c.Resume(ids))
}

// TestCheckpointInFlightRequests: a submit blocked on a paused context at
// checkpoint time is replayed after restore, and a reply sent but not yet
// read is sent again.
func TestCheckpointInFlightRequests(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)

	t.Run("blocked submit replayed", func(t *testing.T) {
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		h := must(d.BOCreate(4096, vram, 0, 0))
		ctx := must(d.CtxCreate(0))
		s := must(d.SyncobjCreate(false))
		id := fileID(t, c, d)
		ok(t, c.Pause([]uint64{id}, 10*time.Second))
		pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpSubmit, Seq: 4242}, &uapi.SubmitRequest{CtxId: ctx,
			Bos: []*uapi.SubmitBo{bo(h, true)}, Commands: []*uapi.Command{fill(0, 0, 4096, 0x77777777)}, OutSyncobjs: []uint32{s}}))
		ok(t, uapi.Send(d.FD(), pkt))
		ino := inode(t, d.FD())
		// The request may still be queued in the socket or blocked in the
		// kernel; either way the checkpoint records it.
		img, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
		if io := img.file(ino).Io; len(io.GetRequests()) != 1 || !bytes.Equal(io.Requests[0].Packet, pkt) {
			t.Fatalf("pending request not recorded: %v", img.file(ino).Io)
		}
		kill(t, c, ids, []*libdrm.Device{d}, nil)
		backToBaseline(t, env.Kernel, base)

		ss := openSession(t, env, c, img)
		fd := must(ss.claimRaw(ino))
		defer unix.Close(fd)
		if _, _, _, err := recvTimeout(fd, 50*time.Millisecond); err == nil {
			t.Fatal("replayed before the task was resumed")
		}
		ss.resume()
		ss.close(false)
		hdr, payload, _, err := recvTimeout(fd, 20*time.Second)
		ok(t, err)
		var rep uapi.SubmitReply
		if hdr.Seq != 4242 || hdr.Status != 0 || proto.Unmarshal(payload, &rep) != nil || rep.FenceId == 0 {
			t.Fatalf("replayed submit's reply: %+v %v", hdr, &rep)
		}
		rd := libdrm.FromFD(must(unix.Dup(fd)))
		defer rd.Close()
		if st := waitSync(t, rd, s); st.errno != 0 {
			t.Fatal(st)
		}
		if !bytes.Equal(readBO(t, rd, h, 4096), pattern(4096, 0x77777777)) {
			t.Fatal("replayed submit did not run")
		}
	})
	backToBaseline(t, env.Kernel, base)

	t.Run("wait idle blocked on preempted work", func(t *testing.T) {
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		src := must(d.BOCreate(4096, vram, 0, 0))
		dst := must(d.BOCreate(4096, vram, 0, 0))
		ctx := must(d.CtxCreate(0))
		submit(t, d, &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(dst, true), bo(src, false)},
			Commands: []*uapi.Command{compute(0, 1, 4096, 1<<32)}, LongRunning: true})
		pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpGemWaitIdle, Seq: 77}, &uapi.GemWaitIdleRequest{Handle: dst, Write: true, TimeoutNs: -1}))
		ok(t, uapi.Send(d.FD(), pkt))
		ino := inode(t, d.FD())
		done := make(chan *image, 1)
		var ids []uint64
		go func() {
			img, i := checkpoint(t, c, []*libdrm.Device{d}, nil)
			ids = i
			done <- img
		}()
		select {
		case img := <-done:
			if io := img.file(ino).Io; len(io.GetRequests()) != 1 || !bytes.Equal(io.Requests[0].Packet, pkt) {
				t.Fatalf("blocked wait not recorded: %v", img.file(ino).Io)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("checkpoint hangs on a client blocked in GEM_WAIT_IDLE")
		}
		kill(t, c, ids, []*libdrm.Device{d}, nil)
	})
	backToBaseline(t, env.Kernel, base)

	t.Run("unread reply resent", func(t *testing.T) {
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		must(d.BOCreate(4096, vram, 0, 0))
		pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpGemCreate, Seq: 99}, &uapi.GemCreateRequest{Size: 8192, Domain: gtt}))
		ok(t, uapi.Send(d.FD(), pkt))
		ino := inode(t, d.FD())
		// Wait until the reply is queued on the client's socket.
		eventually(t, "the reply to be sent", func() bool {
			n, err := unix.IoctlGetInt(d.FD(), unix.SIOCINQ)
			return err == nil && n > 0
		})
		img, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
		io := img.file(ino).Io
		if len(io.GetUnreadReplies()) != 1 || len(io.GetRequests()) != 0 {
			t.Fatalf("unread reply not recorded: %v", io)
		}
		kill(t, c, ids, []*libdrm.Device{d}, nil)
		backToBaseline(t, env.Kernel, base)

		ss := openSession(t, env, c, img)
		fd := must(ss.claimRaw(ino))
		defer unix.Close(fd)
		ss.resume()
		ss.close(false)
		hdr, payload, _, err := recvTimeout(fd, 20*time.Second)
		ok(t, err)
		var rep uapi.GemCreateReply
		if hdr.Seq != 99 || hdr.Op != uapi.OpGemCreate || hdr.Status != 0 || proto.Unmarshal(payload, &rep) != nil || rep.Handle != 2 {
			t.Fatalf("re-sent reply: %+v %v", hdr, &rep)
		}
		rd := libdrm.FromFD(must(unix.Dup(fd)))
		defer rd.Close()
		if info := must(rd.BOInfo(2)); info.Size != 8192 {
			t.Fatalf("the handle of the unread reply: %v", info)
		}
	})
	backToBaseline(t, env.Kernel, base)
}

// TestCheckpointInFlightLeaveRunning: the same in-flight states as
// TestCheckpointInFlightRequests, but the process goes on after the
// checkpoint (criu --leave-running): once resumed, a blocked submit takes
// effect and is answered exactly once, and an unread reply is still there,
// exactly once.
func TestCheckpointInFlightLeaveRunning(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)

	// exactlyOne reads the one reply with seq that must be on fd, and
	// checks nothing else follows.
	exactlyOne := func(t *testing.T, fd int, op uapi.Op, seq uint32) []byte {
		t.Helper()
		hdr, payload, _, err := recvTimeout(fd, 20*time.Second)
		ok(t, err)
		if hdr.Seq != seq || hdr.Op != op || hdr.Status != 0 {
			t.Fatalf("reply %+v, want %v seq %d", hdr, op, seq)
		}
		if _, _, _, err := recvTimeout(fd, 100*time.Millisecond); err == nil {
			t.Fatal("a second reply followed")
		}
		return payload
	}

	t.Run("blocked submit answered after resume", func(t *testing.T) {
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		defer d.Close()
		h := must(d.BOCreate(4096, vram, 0, 0))
		ctx := must(d.CtxCreate(0))
		id := fileID(t, c, d)
		ok(t, c.Pause([]uint64{id}, 10*time.Second))
		pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpSubmit, Seq: 4243}, &uapi.SubmitRequest{CtxId: ctx,
			Bos: []*uapi.SubmitBo{bo(h, true)}, Commands: []*uapi.Command{fill(0, 0, 4096, 0x55aa55aa)}}))
		ok(t, uapi.Send(d.FD(), pkt))
		_, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
		if _, _, _, err := recvTimeout(d.FD(), 50*time.Millisecond); err == nil {
			t.Fatal("the submit was answered while the file was frozen")
		}
		ok(t, c.Resume(ids))
		exactlyOne(t, d.FD(), uapi.OpSubmit, 4243)
		if busy := must(d.WaitIdle(h, false, 10*time.Second)); busy {
			t.Fatal("the submitted job never ran")
		}
		p := make([]byte, 4)
		ok(t, d.Read(h, 0, p))
		if p[0] != 0xaa || p[1] != 0x55 {
			t.Fatalf("job result %x", p)
		}
	})
	backToBaseline(t, env.Kernel, base)

	t.Run("unread reply still there after resume", func(t *testing.T) {
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		defer d.Close()
		pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpGemCreate, Seq: 98}, &uapi.GemCreateRequest{Size: 8192, Domain: gtt}))
		ok(t, uapi.Send(d.FD(), pkt))
		eventually(t, "the reply to be sent", func() bool {
			n, err := unix.IoctlGetInt(d.FD(), unix.SIOCINQ)
			return err == nil && n > 0
		})
		_, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
		ok(t, c.Resume(ids))
		var rep uapi.GemCreateReply
		ok(t, proto.Unmarshal(exactlyOne(t, d.FD(), uapi.OpGemCreate, 98), &rep))
		if info := must(d.BOInfo(rep.Handle)); info.Size != 8192 {
			t.Fatalf("BO of the reply: %v", info)
		}
	})
	backToBaseline(t, env.Kernel, base)
}

// TestSessionRefusesMoreThanTheDeviceHolds: a restore session whose BOs
// exceed a device's memory is refused before anything is allocated.
func TestSessionRefusesMoreThanTheDeviceHolds(t *testing.T) {
	dev := amdgpuDev()
	dev.VRAMSize = 1 << 20
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	c := ctlClient(t, env)
	_, err := c.OpenSession(&uapi.SessionOpenRequest{Bos: []*uapi.BoState{
		{BoId: 1, Size: 512 << 10, Domain: vram, Minor: 128},
		{BoId: 2, Size: 768 << 10, Domain: vram, Minor: 128},
	}})
	if !errors.Is(err, syscall.ENOMEM) || !strings.Contains(err.Error(), "BO 2 size: the checkpoint's DOMAIN_VRAM BOs on renderD128 need more than its 1048576 bytes") {
		t.Fatalf("oversized session: %v", err)
	}
	if n := env.Kernel.Counts().Sessions; n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}
