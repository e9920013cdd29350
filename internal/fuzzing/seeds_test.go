package fuzzing_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/amdgpu"
	"drmcr/dmabuf"
	"drmcr/drmcore"
	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/internal/fuzzing"
	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// TestSeedCheckpoints makes the small real checkpoints the fuzz targets'
// seeds come from, with drmcore's dump hooks against an in-process
// kernelsim (this process stands in for the dumped tasks), and checks that
// each one restores. With DRMCR_WRITE_FUZZ_SEEDS=1 it also writes them
// into the repository:
//
//	drmcore/testdata/checkpoints/NAME/   the DRM images (FuzzRestore's bases)
//	images/testdata/fuzz/FuzzDecode/     each image message
//	images/testdata/fuzz/FuzzIndex/      the BO index with its pages file
//	amdgpu/testdata/fuzz/FuzzDecode/     each drm file's driver blob
//	kernelsim/testdata/fuzz/FuzzClaim/   the session request, pages and a script
//	kernelsim/testdata/fuzz/FuzzControl/ a restore as control requests
//
// Run it again when the image format changes:
//
//	DRMCR_WRITE_FUZZ_SEEDS=1 go test ./internal/fuzzing -run TestSeedCheckpoints
func TestSeedCheckpoints(t *testing.T) {
	write := os.Getenv("DRMCR_WRITE_FUZZ_SEEDS") == "1"
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			dev := kernelsim.DefaultDevice()
			dev.IterTime = time.Millisecond // long-running jobs last long enough to be preempted
			env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
			base := env.Kernel.Counts()
			dir := t.TempDir()
			release := sc.run(t, env, dir)
			release()
			waitCounts(t, env, base)

			fds, err := drmcoretest.Restore(t, env.Dir, dir, drmcoretest.Concurrently, false)
			if err != nil {
				t.Fatalf("the %s checkpoint does not restore: %v", sc.name, err)
			}
			for _, fd := range fds {
				unix.Close(fd)
			}
			waitCounts(t, env, base)
			if write {
				writeSeeds(t, sc.name, dir)
			}
		})
	}
}

const page = 4096

type scenario struct {
	name string
	// run builds the state, dumps it into dir and returns what releases
	// the originals.
	run func(t *testing.T, env *ksimtest.Env, dir string) (release func())
}

var scenarios = []scenario{
	{"objects", objects},
	{"shared", shared},
	{"preempted", preempted},
	{"inflight", inflight},
	{"channel", channel},
}

// objects: one drm file with BOs of both domains, flags and alignments, a
// handle hole, VA mappings, two contexts, and syncobjs in every state.
func objects(t *testing.T, env *ksimtest.Env, dir string) func() {
	d := env.Open(t, 128)
	h1 := u32(t)(d.BOCreate(2*page, uapi.Domain_DOMAIN_VRAM, 0x3, 0))
	h2 := u32(t)(d.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 1<<16))
	h3 := u32(t)(d.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 1<<16))
	must(t, d.BOClose(h2))
	ctx := u32(t)(d.CtxCreate(0))
	u32(t)(d.CtxCreate(-1))
	done := u32(t)(d.SyncobjCreate(false))
	fillBO(t, d, ctx, h1, 2*page, 0x41424344, done)
	fillBO(t, d, ctx, h3, page, 0x30313233, 0)
	must(t, d.VMMap(h1, 0, 0x100000, 2*page, 1))
	must(t, d.VMMap(h3, 0, 0x200000, page, 0))
	u32(t)(d.SyncobjCreate(false))
	u32(t)(d.SyncobjCreate(true))
	tl := u32(t)(d.SwSyncCreate())
	must(t, d.SwSyncInc(tl, 3))
	pending := u32(t)(d.SyncobjCreate(false))
	must(t, d.SwSyncFence(tl, 5, pending))
	dump(t, env, dir)
	return func() { d.Close() }
}

// shared: two files sharing a BO through a dma-buf that is also held, and
// a dma-buf held only as a file descriptor.
func shared(t *testing.T, env *ksimtest.Env, dir string) func() {
	a, b := env.Open(t, 128), env.Open(t, 128)
	ha := u32(t)(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctx := u32(t)(a.CtxCreate(0))
	fillBO(t, a, ctx, ha, page, 0x61626364, 0)
	fd, err := a.ExportDmaBuf(ha)
	must(t, err)
	u32(t)(b.ImportDmaBuf(fd))
	hb := u32(t)(b.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxB := u32(t)(b.CtxCreate(0))
	fillBO(t, b, ctxB, hb, page, 0x65666768, 0)
	only, err := b.ExportDmaBuf(hb)
	must(t, err)
	must(t, b.BOClose(hb))
	dump(t, env, dir)
	return func() {
		unix.Close(fd)
		unix.Close(only)
		a.Close()
		b.Close()
	}
}

// preempted: a long-running compute job preempted by the dump, a job
// queued behind it in its context, and a job of another file that waits
// on it through a shared BO; out-syncobjs hold the jobs' fences.
func preempted(t *testing.T, env *ksimtest.Env, dir string) func() {
	a, b := env.Open(t, 128), env.Open(t, 128)
	src := u32(t)(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	acc := u32(t)(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	out := u32(t)(a.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxA := u32(t)(a.CtxCreate(0))
	fillBO(t, a, ctxA, src, page, 0x494a4b4c, 0)
	fillBO(t, a, ctxA, acc, page, 0x2d2d2d2d, 0) // printable: small seeds
	fillBO(t, a, ctxA, out, page, 0x2e2e2e2e, 0)
	fd, err := a.ExportDmaBuf(acc)
	must(t, err)
	accB := u32(t)(b.ImportDmaBuf(fd))
	unix.Close(fd)
	outB := u32(t)(b.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxB := u32(t)(b.CtxCreate(0))
	fillBO(t, b, ctxB, outB, page, 0x2f2f2f2f, 0)
	doneA := u32(t)(a.SyncobjCreate(false))
	doneB := u32(t)(b.SyncobjCreate(false))
	submit(t, a, &uapi.SubmitRequest{CtxId: ctxA, LongRunning: true,
		Bos:      []*uapi.SubmitBo{{Handle: src}, {Handle: acc, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: page, Iterations: 2000}}})
	submit(t, a, &uapi.SubmitRequest{CtxId: ctxA, OutSyncobjs: []uint32{doneA},
		Bos:      []*uapi.SubmitBo{{Handle: acc}, {Handle: out, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpCopy), Dst: 1, Src: 0, Len: 8}, {Op: uint32(gpu.OpAddCounter), Dst: 1, DstOff: 8, Value: 5}}})
	submit(t, b, &uapi.SubmitRequest{CtxId: ctxB, OutSyncobjs: []uint32{doneB},
		Bos:      []*uapi.SubmitBo{{Handle: accB}, {Handle: outB, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpChecksum), Dst: 1, Src: 0, Len: page}}})
	time.Sleep(50 * time.Millisecond) // inside the 2 s compute loop
	dump(t, env, dir)
	if q, err := b.SyncobjQuery(doneB); err != nil || q.Signaled {
		t.Fatalf("B's job ran before the dump (%v, %v): no preempted work was checkpointed", q, err)
	}
	return func() {
		a.Close()
		b.Close()
	}
}

// inflight: one file has a reply it has not read (a PRIME export, which
// carries a dma-buf), another a submit blocked on its paused context: both
// are caught in flight, re-sent and replayed at restore.
func inflight(t *testing.T, env *ksimtest.Env, dir string) func() {
	a, b := env.Open(t, 128), env.Open(t, 128)
	ha := u32(t)(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctxA := u32(t)(a.CtxCreate(0))
	fillBO(t, a, ctxA, ha, page, 0x71727374, 0)
	hb := u32(t)(b.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxB := u32(t)(b.CtxCreate(0))
	fillBO(t, b, ctxB, hb, page, 0x2b2b2b2b, 0)
	send(t, a.FD(), uapi.OpPrimeHandleToFd, 7, &uapi.PrimeHandleToFdRequest{Handle: ha})
	time.Sleep(20 * time.Millisecond) // the reply waits unread in a's socket

	p := drmcoretest.Plugin(t, env.Dir, dir, 5*time.Second)
	must(t, p.Init(drmcore.StageDump))
	must(t, p.PauseDevices(os.Getpid()))
	send(t, b.FD(), uapi.OpSubmit, 9, &uapi.SubmitRequest{CtxId: ctxB,
		Bos:      []*uapi.SubmitBo{{Handle: hb, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, Len: page, Value: 0x75767778}}})
	time.Sleep(20 * time.Millisecond) // the submit waits for the paused context
	var err error
	for fd, ino := range drmcoretest.SocketInodes(t) {
		if err = p.DumpUnixSk(fd, ino); errors.Is(err, drmcore.ErrNotMine) {
			err = nil
		} else if err != nil {
			break
		}
	}
	ret := 0
	if err != nil {
		ret = -1
	}
	p.Fini(drmcore.StageDump, ret)
	must(t, err)
	return func() {
		for _, d := range []*libdrm.Device{a, b} {
			// Read the replies left behind, then close.
			buf := make([]byte, uapi.MaxMessage)
			for {
				_, fds, err := uapi.Recv(d.FD(), buf, unix.MSG_DONTWAIT)
				uapi.CloseFDs(fds)
				if err != nil {
					break
				}
			}
			d.Close()
		}
	}
}

// channel: a drm file shared through a reply channel (as by a forked
// child), with a wait in flight on the channel and a reply it has not
// read.
func channel(t *testing.T, env *ksimtest.Env, dir string) func() {
	d := env.Open(t, 128)
	h := u32(t)(d.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctx := u32(t)(d.CtxCreate(0))
	fillBO(t, d, ctx, h, page, 0x5e5e5e5e, 0)
	so := u32(t)(d.SyncobjCreate(false))
	ch, err := uapi.DialSocket(kernelsim.RenderNodePath(env.Dir, 128))
	must(t, err)
	send(t, ch, uapi.OpAttach, 1, &uapi.AttachRequest{}, d.FD())
	if pkt, _ := recvPacket(t, ch); len(pkt) < uapi.HeaderSize {
		t.Fatal("no ATTACH reply")
	}
	send(t, ch, uapi.OpSyncobjWait, 7, &uapi.SyncobjWaitRequest{Handles: []uint32{so}, TimeoutNs: -1, WaitAll: true, WaitForSubmit: true})
	send(t, ch, uapi.OpGemInfo, 8, &uapi.GemInfoRequest{Handle: h})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n, _ := unix.IoctlGetInt(ch, unix.SIOCINQ); n > 0 {
			break // the GEM_INFO reply waits unread
		}
		if time.Now().After(deadline) {
			t.Fatal("the GEM_INFO reply never came")
		}
		time.Sleep(5 * time.Millisecond)
	}
	dump(t, env, dir)
	return func() {
		unix.Close(ch)
		d.Close()
	}
}

// recvPacket reads one packet, waiting for it.
func recvPacket(t *testing.T, fd int) ([]byte, []int) {
	t.Helper()
	buf := make([]byte, uapi.MaxMessage)
	n, fds, err := uapi.Recv(fd, buf, 0)
	must(t, err)
	return buf[:n], fds
}

// dump checkpoints every kernelsim file of this process: in-process, the
// kernel's own end of each dma-buf is in this process's fd table too, so
// a dump must include the dma-bufs the kernel keeps.
func dump(t *testing.T, env *ksimtest.Env, dir string) {
	t.Helper()
	must(t, drmcoretest.Dump(t, drmcoretest.Plugin(t, env.Dir, dir, 5*time.Second), os.Getpid(), allSockets(t)))
}

func allSockets(t *testing.T) []uint64 {
	var inodes []uint64
	for _, ino := range drmcoretest.SocketInodes(t) {
		inodes = append(inodes, ino)
	}
	return inodes
}

func fillBO(t *testing.T, d *libdrm.Device, ctx, h uint32, size uint64, v uint64, out uint32) {
	t.Helper()
	req := &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, Len: size, Value: v}}}
	if out != 0 {
		req.OutSyncobjs = []uint32{out}
	}
	submit(t, d, req)
	if busy, err := d.WaitIdle(h, true, 10*time.Second); err != nil || busy {
		t.Fatalf("wait idle: busy=%v err=%v", busy, err)
	}
}

// send writes a request packet without reading its reply.
func send(t *testing.T, fd int, op uapi.Op, seq uint32, m proto.Message, fds ...int) {
	t.Helper()
	pkt, err := uapi.Marshal(uapi.Header{Op: op, Seq: seq}, m)
	must(t, err)
	must(t, uapi.Send(fd, pkt, fds...))
}

// writeSeeds writes the checkpoint in dir, and the seeds made from it,
// into the repository (see TestSeedCheckpoints).
func writeSeeds(t *testing.T, name, dir string) {
	root := filepath.Join("..", "..")
	put := func(path string, data []byte) {
		path = filepath.Join(root, path)
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, data, 0o644))
	}
	ckpt := filepath.Join("drmcore", "testdata", "checkpoints", name)
	must(t, os.RemoveAll(filepath.Join(root, ckpt)))
	// The seeds this scenario wrote before (their names hold inodes).
	for _, corpus := range []string{"images/testdata/fuzz/FuzzDecode", "images/testdata/fuzz/FuzzIndex", "amdgpu/testdata/fuzz/FuzzDecode",
		"kernelsim/testdata/fuzz/FuzzClaim", "kernelsim/testdata/fuzz/FuzzControl"} {
		old, _ := filepath.Glob(filepath.Join(root, corpus, name+"-*"))
		for _, o := range append(old, filepath.Join(root, corpus, name)) {
			os.Remove(o)
		}
	}
	names, _ := filepath.Glob(filepath.Join(dir, "drm-*.img"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		must(t, err)
		put(filepath.Join(ckpt, filepath.Base(n)), b)
	}

	d, err := images.OpenDir(dir)
	must(t, err)
	defer d.Close()
	ck, err := drmcore.ReadCheckpoint(d, drmcore.SubPlugins{Drivers: []drmcore.DriverPlugin{amdgpu.New()}, DmaBuf: dmabuf.New()})
	must(t, err)
	if err := ck.Err(); err != nil {
		t.Fatal(err)
	}
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		must(t, err)
		return b
	}
	// images.FuzzDecode's kinds: 0 inventory, 1 drm file, 2 dma-buf, 3
	// reply channel.
	put("images/testdata/fuzz/FuzzDecode/"+name+"-inventory", fuzzing.CorpusFile(byte(0), read(images.InventoryName)))
	for _, f := range ck.FileList {
		put("images/testdata/fuzz/FuzzDecode/"+name+"-file-"+strconv.FormatUint(f.Inode, 10), fuzzing.CorpusFile(byte(1), read(images.FileName(f.Inode))))
		put("amdgpu/testdata/fuzz/FuzzDecode/"+name+"-"+strconv.FormatUint(f.Inode, 10), fuzzing.CorpusFile(f.State.DriverPrivate))
	}
	for _, db := range ck.DmaBufList {
		put("images/testdata/fuzz/FuzzDecode/"+name+"-dmabuf-"+strconv.FormatUint(db.Inode, 10), fuzzing.CorpusFile(byte(2), read(images.DmaBufName(db.Inode))))
	}
	for _, ch := range ck.ChannelList {
		put("images/testdata/fuzz/FuzzDecode/"+name+"-channel-"+strconv.FormatUint(ch.Inode, 10), fuzzing.CorpusFile(byte(3), read(images.ChannelName(ch.Inode))))
	}
	pages := read(images.PagesName(1))
	put("images/testdata/fuzz/FuzzIndex/"+name, fuzzing.CorpusFile(read(images.IndexName), pages))

	req := ck.Request
	open, err := proto.Marshal(req)
	must(t, err)
	// FuzzClaim's script: load the pages, claim everything, resume, ask
	// every restored file for its version, close.
	version := fuzzing.Encode([]fuzzing.Step{{Op: uint16(uapi.OpVersion)}})
	put("kernelsim/testdata/fuzz/FuzzClaim/"+name, fuzzing.CorpusFile(open, pages, append([]byte{0, 0}, version...), []byte{}))

	// FuzzControl: the same restore as control requests, the pages file
	// in a memfd (see kernelsim's fuzz_test.go for the step encoding).
	steps := []fuzzing.Step{{Op: uint16(uapi.OpSessionOpen), Payload: ctlPayload(t, req, nil)}}
	for i := range req.PagesFiles {
		steps = append(steps, fuzzing.Step{Op: uint16(uapi.OpSessionLoadPages), Flags: 1,
			Payload: ctlPayload(t, &uapi.SessionLoadPagesRequest{PagesFile: uint32(i)}, pages)})
	}
	for _, f := range req.Files {
		steps = append(steps, fuzzing.Step{Op: 0xc1a1, Payload: ctlPayload(t, &uapi.ClaimFileRequest{Inode: f.Inode}, nil)})
	}
	for _, db := range req.Dmabufs {
		steps = append(steps, fuzzing.Step{Op: 0xc1a2, Payload: ctlPayload(t, &uapi.ClaimDmaBufRequest{Inode: db.Inode}, nil)})
	}
	for _, ch := range req.Channels {
		steps = append(steps, fuzzing.Step{Op: 0xc1a3, Payload: ctlPayload(t, &uapi.ClaimChannelRequest{Inode: ch.Inode}, nil)})
	}
	steps = append(steps,
		fuzzing.Step{Op: uint16(uapi.OpSessionResume), Payload: ctlPayload(t, &uapi.SessionResumeRequest{TimeoutNs: int64(time.Second)}, nil)},
		fuzzing.Step{Op: uint16(uapi.OpSessionClose), Payload: ctlPayload(t, &uapi.SessionCloseRequest{}, nil)})
	put("kernelsim/testdata/fuzz/FuzzControl/"+name, fuzzing.CorpusFile(fuzzing.Encode(steps)))
}

// ctlPayload is a control step's payload: the request's length as a
// uvarint, the request, then the contents of the memfd the step sends.
func ctlPayload(t *testing.T, m proto.Message, tail []byte) []byte {
	b, err := proto.Marshal(m)
	must(t, err)
	out := append(uvarint(uint64(len(b))), b...)
	return append(out, tail...)
}

func uvarint(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func waitCounts(t *testing.T, env *ksimtest.Env, base kernelsim.Counts) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for env.Kernel.Counts() != base {
		if time.Now().After(deadline) {
			t.Fatalf("objects left: %+v, baseline %+v", env.Kernel.Counts(), base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func u32(t *testing.T) func(uint32, error) uint32 {
	return func(v uint32, err error) uint32 {
		t.Helper()
		must(t, err)
		return v
	}
}

func submit(t *testing.T, d *libdrm.Device, req *uapi.SubmitRequest) {
	t.Helper()
	_, err := d.Submit(req)
	must(t, err)
}
