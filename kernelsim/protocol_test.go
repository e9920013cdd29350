package kernelsim_test

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

func header(magic uint32, version uint16, op uapi.Op, seq uint32) []byte {
	b := make([]byte, uapi.HeaderSize)
	uapi.Header{Magic: magic, Version: version, Op: op, Seq: seq}.Put(b)
	return b
}

// pipeFDs returns a pipe; the test closes both ends at cleanup.
func pipeFDs(t testing.TB) (r, w int) {
	t.Helper()
	var p [2]int
	ok(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// readEndClosedEverywhere reports whether every copy of a pipe's read end
// is closed (a write fails with EPIPE), which tells a descriptor passed to
// the kernel was not leaked there.
func readEndClosedEverywhere(w int) bool {
	_, err := unix.Write(w, []byte{0})
	return err == unix.EPIPE
}

func TestProtocolMalformedRenderRequests(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	node := kernelsim.RenderNodePath(env.Dir, 128)

	other := env.Open(t, 128)
	oh := must(other.BOCreate(4096, vram, 0, 0))
	ok(t, other.Write(oh, 0, pattern(4096, 0x5a5a1234)))

	r := dialRaw(t, node)
	valid := func(op uapi.Op, m proto.Message) []byte {
		pkt, err := uapi.Marshal(uapi.Header{Op: op, Seq: 7}, m)
		ok(t, err)
		return pkt
	}
	withPayload := func(hdr, payload []byte) []byte { return append(append([]byte(nil), hdr...), payload...) }

	cases := []struct {
		name    string
		pkt     []byte
		errno   syscall.Errno
		echoSeq bool
	}{
		{"short packet", []byte{0x4b, 0x53, 0x49}, syscall.EPROTO, false},
		{"empty packet", []byte{}, syscall.EPROTO, false},
		{"header only, bad magic", header(0xdeadbeef, uapi.Version, uapi.OpVersion, 1), syscall.EPROTO, false},
		{"wrong version", header(uapi.Magic, uapi.Version+1, uapi.OpVersion, 2), syscall.EPROTO, false},
		{"unknown op", header(uapi.Magic, uapi.Version, 0x77, 3), syscall.ENOTTY, true},
		{"op zero", header(uapi.Magic, uapi.Version, 0, 4), syscall.ENOTTY, true},
		{"control op on a render node", header(uapi.Magic, uapi.Version, uapi.OpDebug, 5), syscall.ENOTTY, true},
		{"garbage protobuf", withPayload(header(uapi.Magic, uapi.Version, uapi.OpGemCreate, 6), []byte{0xff, 0xff, 0xff, 0xff, 0x0f}), syscall.EINVAL, true},
		{"truncated protobuf", func() []byte {
			p := valid(uapi.OpGemPwrite, &uapi.GemPwriteRequest{Handle: 1, Data: make([]byte, 100)})
			return p[:len(p)-50]
		}(), syscall.EINVAL, true},
		{"overlong varint", withPayload(header(uapi.Magic, uapi.Version, uapi.OpGemInfo, 8), []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), syscall.EINVAL, true},
		{"GEM_CREATE size 0", valid(uapi.OpGemCreate, &uapi.GemCreateRequest{Domain: vram}), syscall.EINVAL, true},
		{"PRIME import without fd", valid(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}), syscall.EINVAL, true},
		{"CLAIM_FILE not first", valid(uapi.OpClaimFile, &uapi.ClaimFileRequest{Token: []byte("x"), Inode: 1}), syscall.EINVAL, true},
		{"CLAIM_DMABUF unknown session", valid(uapi.OpClaimDmaBuf, &uapi.ClaimDmaBufRequest{Token: []byte("x"), Inode: 1}), syscall.ENOENT, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r.t = t
			ok(t, r.send(c.pkt))
			h := r.wantErrorReply(c.errno)
			if c.echoSeq {
				want, _ := uapi.ParseHeader(c.pkt)
				if h.Seq != want.Seq || h.Op != want.Op {
					t.Errorf("error reply header %+v does not echo op %v seq %d", h, want.Op, want.Seq)
				}
			}
			r.alive()
		})
	}
	r.t = t

	t.Run("oversized packet", func(t *testing.T) {
		r.t = t
		big := make([]byte, uapi.MaxMessage+1)
		copy(big, header(uapi.Magic, uapi.Version, uapi.OpGemPwrite, 9))
		ok(t, r.send(big))
		r.wantErrorReply(syscall.EMSGSIZE)
		r.alive()
	})

	t.Run("unexpected fd", func(t *testing.T) {
		r.t = t
		pr, pw := pipeFDs(t)
		ok(t, r.send(valid(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: 1}), pr))
		r.wantErrorReply(syscall.EINVAL)
		unix.Close(pr)
		if !readEndClosedEverywhere(pw) {
			t.Errorf("the kernel kept the unexpected fd open")
		}
		r.alive()
	})

	t.Run("unexpected fd on export", func(t *testing.T) {
		r.t = t
		pr, pw := pipeFDs(t)
		ok(t, r.send(valid(uapi.OpPrimeHandleToFd, &uapi.PrimeHandleToFdRequest{Handle: 1}), pr))
		r.wantErrorReply(syscall.EINVAL)
		unix.Close(pr)
		if !readEndClosedEverywhere(pw) {
			t.Errorf("the kernel kept the unexpected fd open")
		}
		r.alive()
	})

	t.Run("too many fds", func(t *testing.T) {
		r.t = t
		var fds []int
		for range uapi.MaxFDs + 2 {
			pr, _ := pipeFDs(t)
			fds = append(fds, pr)
		}
		ok(t, r.send(valid(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: 1}), fds...))
		r.wantErrorReply(syscall.EMSGSIZE)
		r.alive()
	})

	t.Run("import of a pipe", func(t *testing.T) {
		r.t = t
		pr, pw := pipeFDs(t)
		ok(t, r.send(valid(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}), pr))
		r.wantErrorReply(syscall.EINVAL)
		unix.Close(pr)
		if !readEndClosedEverywhere(pw) {
			t.Errorf("the kernel kept the imported pipe open")
		}
		r.alive()
	})

	t.Run("import of a render node", func(t *testing.T) {
		r.t = t
		ok(t, r.send(valid(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}), other.FD()))
		r.wantErrorReply(syscall.EINVAL)
		r.alive()
	})

	t.Run("import of two fds", func(t *testing.T) {
		r.t = t
		h := must(other.BOCreate(4096, gtt, 0, 0))
		dfd := must(other.ExportDmaBuf(h))
		defer unix.Close(dfd)
		ok(t, r.send(valid(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}), dfd, dfd))
		r.wantErrorReply(syscall.EINVAL)
		r.alive()
	})

	t.Run("claim as first request with a bad token", func(t *testing.T) {
		r2 := dialRaw(t, node)
		r2.request(uapi.OpClaimFile, 1, &uapi.ClaimFileRequest{Token: []byte{1, 2, 3}, Inode: 42})
		r2.wantErrorReply(syscall.ENOENT)
		// The connection is still an ordinary drm file.
		r2.request(uapi.OpGemCreate, 2, &uapi.GemCreateRequest{Size: 4096, Domain: vram})
		h, payload, _ := r2.recv()
		var cr uapi.GemCreateReply
		if h.Status != 0 || proto.Unmarshal(payload, &cr) != nil || cr.Handle != 1 {
			t.Fatalf("GEM_CREATE after a failed claim: %+v %v", h, &cr)
		}
	})

	// The other client was not disturbed.
	got := readBO(t, other, oh, 4096)
	if !bytes.Equal(got, pattern(4096, 0x5a5a1234)) {
		t.Fatalf("bystander's BO changed")
	}
	if _, err := other.Version(); err != nil {
		t.Fatal(err)
	}
}

func TestProtocolMalformedControlRequests(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{amdgpuDev()}})
	d := env.Open(t, 128)
	r := dialRaw(t, kernelsim.ControlPath(env.Dir))
	alive := func() {
		t.Helper()
		r.request(uapi.OpDebug, 99, &uapi.DebugRequest{})
		h, payload, _ := r.recv()
		var dr uapi.DebugReply
		if h.Status != 0 || proto.Unmarshal(payload, &dr) != nil || dr.Json == "" {
			t.Fatalf("DEBUG after a bad request: %+v", h)
		}
	}
	pkt := func(op uapi.Op, m proto.Message) []byte {
		p, err := uapi.Marshal(uapi.Header{Op: op, Seq: 5}, m)
		ok(t, err)
		return p
	}
	for _, c := range []struct {
		name  string
		pkt   []byte
		fds   int
		errno syscall.Errno
	}{
		{"short", []byte{1}, 0, syscall.EPROTO},
		{"empty", []byte{}, 0, syscall.EPROTO},
		{"bad magic", header(1, uapi.Version, uapi.OpDebug, 1), 0, syscall.EPROTO},
		{"bad version", header(uapi.Magic, 0, uapi.OpDebug, 1), 0, syscall.EPROTO},
		{"render op on control", pkt(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram}), 0, syscall.ENOTTY},
		{"garbage", append(header(uapi.Magic, uapi.Version, uapi.OpPause, 1), 0xff, 0xff), 0, syscall.EINVAL},
		{"pause of unknown file", pkt(uapi.OpPause, &uapi.PauseRequest{FileIds: []uint64{1 << 40}, TimeoutNs: int64(time.Second)}), 0, syscall.ENOENT},
		{"checkpoint unpaused", pkt(uapi.OpCheckpointFile, &uapi.CheckpointFileRequest{FileId: 1}), 0, syscall.EBUSY},
		{"unexpected fd", pkt(uapi.OpIdentify, &uapi.IdentifyRequest{}), 1, syscall.EINVAL},
		{"debug with two fds", pkt(uapi.OpDebug, &uapi.DebugRequest{}), 2, syscall.EINVAL},
		{"checkpoint BOs without fd", pkt(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{1}}}}), 0, syscall.EINVAL},
		{"checkpoint BOs into a pipe", pkt(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{1}}}}), 1, syscall.EINVAL},
		{"checkpoint BOs named outside a target", pkt(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{BoIds: []uint64{1}}), 1, syscall.EINVAL},
		{"checkpoint BOs, targets without their files", pkt(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{1}}, {BoIds: []uint64{2}}}}), 1, syscall.EINVAL},
		{"too many fds", pkt(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{1}}}}), uapi.MaxFDs + 1, syscall.EMSGSIZE},
		{"out of line without its memfd", header(uapi.Magic, uapi.Version, uapi.OpIdentify|uapi.OpOutOfLine, 1), 0, syscall.EPROTO},
		{"out of line in a pipe", header(uapi.Magic, uapi.Version, uapi.OpIdentify|uapi.OpOutOfLine, 1), 1, syscall.EPROTO},
		{"out of line with inline bytes", append(header(uapi.Magic, uapi.Version, uapi.OpIdentify|uapi.OpOutOfLine, 1), 1), 1, syscall.EPROTO},
		{"resume task of unknown session", pkt(uapi.OpSessionResume, &uapi.SessionResumeRequest{Token: []byte{1}}), 0, syscall.ENOENT},
		{"oversized", append(header(uapi.Magic, uapi.Version, uapi.OpIdentify, 1), make([]byte, uapi.MaxMessage)...), 0, syscall.EMSGSIZE},
	} {
		t.Run(c.name, func(t *testing.T) {
			r.t = t
			var fds []int
			for range c.fds {
				pr, _ := pipeFDs(t)
				fds = append(fds, pr)
			}
			ok(t, r.send(c.pkt, fds...))
			r.wantErrorReply(c.errno)
			alive()
		})
	}
	r.t = t
	// The drm file was not paused or disturbed by any of it.
	if _, err := d.BOCreate(4096, vram, 0, 0); err != nil {
		t.Fatal(err)
	}
	st := env.Kernel.Debug()
	for _, f := range st.Files {
		if f.Paused {
			t.Fatalf("file %d left paused", f.ID)
		}
	}
}

// FuzzRequest sends one arbitrary packet, optionally with a descriptor, as
// the first request of a fresh drm file, and checks that the kernel answers
// it (an error reply carries a negative errno and a message), that the
// connection stays usable, that a bystander client is undisturbed and that
// nothing leaks once the file is closed. The seed corpus runs as a normal
// test.
func FuzzRequest(f *testing.F) {
	add := func(mode uint8, op uapi.Op, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mode, uint16(op), b)
	}
	add(0, uapi.OpVersion, &uapi.VersionRequest{})
	add(0, uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram})
	add(0, uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 1 << 40, Domain: gtt})
	add(0, uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: 7, Alignment: 3})
	add(0, uapi.OpGemPread, &uapi.GemPreadRequest{Handle: 1, Length: 1 << 30})
	add(0, uapi.OpVmMap, &uapi.VmMapRequest{Handle: 1, Va: 1 << 63, Size: 1 << 63})
	add(0, uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Commands: []*uapi.Command{hang()}})
	add(0, uapi.OpSyncobjWait, &uapi.SyncobjWaitRequest{Handles: []uint32{1}, TimeoutNs: -1, WaitForSubmit: true})
	add(0, uapi.OpSyncobjWait, &uapi.SyncobjWaitRequest{Handles: make([]uint32, 1000)})
	add(0, uapi.OpSwSyncFence, &uapi.SwSyncFenceRequest{Timeline: 1, Point: 5, Syncobj: 1})
	add(0, uapi.OpCtxCreate, &uapi.CtxCreateRequest{Priority: -1 << 31})
	add(0, uapi.OpClaimFile, &uapi.ClaimFileRequest{Token: make([]byte, 16), Inode: 1})
	add(0, uapi.OpClaimDmaBuf, &uapi.ClaimDmaBufRequest{})
	add(1, uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{})
	add(2, uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{})
	add(2, uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram})
	add(0, uapi.OpIdentify, &uapi.IdentifyRequest{Inodes: []uint64{1}})
	f.Add(uint8(0), uint16(uapi.OpSubmit), []byte{0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add(uint8(0), uint16(0xffff), []byte("garbage"))
	f.Add(uint8(4), uint16(0), []byte("KSIM\x01\x00\x01\x00"))
	f.Add(uint8(4), uint16(0), header(uapi.Magic, uapi.Version, uapi.OpVersion, 1))
	f.Add(uint8(4), uint16(0), []byte{})
	f.Add(uint8(8), uint16(uapi.OpVersion), []byte{})

	env := ksimtest.Start(f, twoDevices())
	node := kernelsim.RenderNodePath(env.Dir, 128)
	by := env.Open(f, 129)
	bh := must(by.BOCreate(4096, vram, 0, 0))
	ok(f, by.Write(bh, 0, pattern(4096, 0xc0ffee)))
	exp := must(by.BOCreate(4096, gtt, 0, 0))
	dmabuf := must(by.ExportDmaBuf(exp))
	f.Cleanup(func() { unix.Close(dmabuf) })
	base := takeCensus(env.Kernel)

	f.Fuzz(func(t *testing.T, mode uint8, op uint16, payload []byte) {
		var pkt []byte
		switch {
		case mode&4 != 0: // payload is the whole packet
			pkt = payload
		default:
			pkt = header(uapi.Magic, uapi.Version, uapi.Op(op), 1)
			if mode&8 != 0 {
				pkt = header(uapi.Magic, uapi.Version+uint16(op%7)+1, uapi.OpVersion, 1)
			}
			pkt = append(pkt, payload...)
		}
		if len(pkt) > uapi.MaxMessage+4096 {
			pkt = pkt[:uapi.MaxMessage+4096]
		}
		var fds []int
		switch mode & 3 {
		case 1:
			fds = []int{dmabuf}
		case 2:
			pr, _ := pipeFDs(t)
			fds = []int{pr}
		case 3:
			fds = []int{dmabuf, by.FD()}
		}
		r := dialRaw(t, node)
		if err := r.send(pkt, fds...); err != nil {
			if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
				return // the socket refuses it before the kernel sees it
			}
			t.Fatal(err)
		}
		h, reply, rfds, err := recvTimeout(r.fd, 20*time.Second)
		if err != nil {
			t.Fatalf("packet %x (fds %d): %v", pkt[:min(len(pkt), 64)], len(fds), err)
		}
		uapi.CloseFDs(rfds)
		if h.Status > 0 {
			t.Fatalf("positive status %d", h.Status)
		}
		if h.Status < 0 {
			var e uapi.ErrorReply
			if err := proto.Unmarshal(reply, &e); err != nil || e.Message == "" {
				t.Fatalf("error reply %d without message (%v)", h.Status, err)
			}
			if len(rfds) > 0 {
				t.Fatalf("error reply with fds")
			}
		}
		r.alive()
		unix.Close(r.fd)
		// Whatever the request created goes with the file.
		eventually(t, "the fuzzed file's objects to go", func() bool {
			now := takeCensus(env.Kernel)
			return now.Files == base.Files && now.BOs == base.BOs && now.DmaBufs == base.DmaBufs && now.Jobs == base.Jobs
		})
		if got := readBO(t, by, bh, 4096); !bytes.Equal(got, pattern(4096, 0xc0ffee)) {
			t.Fatalf("bystander's BO changed")
		}
	})
}

func TestPeerCredentialsAndIdentify(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	a := env.Open(t, 128)
	x := env.Open(t, 129)
	h := must(a.BOCreate(8192, vram, 0, 0))
	dfd := must(a.ExportDmaBuf(h))
	defer unix.Close(dfd)

	pr, _ := pipeFDs(t)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	ok(t, err)
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])

	inos := []uint64{inode(t, a.FD()), inode(t, x.FD()), inode(t, dfd), inode(t, pr), inode(t, sp[0]), 0, 1 << 62}
	objs := must(c.Identify(inos))
	if len(objs) != len(inos) {
		t.Fatalf("identify returned %d objects for %d inodes", len(objs), len(inos))
	}
	for i, o := range objs {
		if o.Inode != inos[i] {
			t.Fatalf("object %d is inode %d, want %d", i, o.Inode, inos[i])
		}
	}
	pid := int32(os.Getpid())
	if o := objs[0]; o.Kind != uapi.ObjectKind_OBJECT_DRM_FILE || o.Minor != 128 || o.Driver != "amdgpu" || o.OwnerPid != pid ||
		o.SocketPath != kernelsim.RenderNodePath(env.Dir, 128) || o.FileId == 0 {
		t.Errorf("amdgpu file: %v", o)
	}
	if o := objs[1]; o.Kind != uapi.ObjectKind_OBJECT_DRM_FILE || o.Minor != 129 || o.Driver != "xe" || o.OwnerPid != pid || o.FileId == objs[0].FileId {
		t.Errorf("xe file: %v", o)
	}
	if o := objs[2]; o.Kind != uapi.ObjectKind_OBJECT_DMA_BUF || o.Minor != 128 || o.DmabufId == 0 {
		t.Errorf("dma-buf: %v", o)
	}
	for _, o := range objs[3:] {
		if o.Kind != uapi.ObjectKind_OBJECT_UNKNOWN || o.FileId != 0 || o.DmabufId != 0 {
			t.Errorf("unknown inode %d identified as %v", o.Inode, o)
		}
	}

	// The debug view records the opener's pid and client inode.
	st := must(c.Debug())
	found := 0
	for _, f := range st.Files {
		if f.ID == objs[0].FileId || f.ID == objs[1].FileId {
			found++
			if f.PID != pid {
				t.Errorf("file %d pid %d, want %d", f.ID, f.PID, pid)
			}
			if f.ClientIno != objs[0].Inode && f.ClientIno != objs[1].Inode {
				t.Errorf("file %d client inode %d", f.ID, f.ClientIno)
			}
		}
	}
	if found != 2 {
		t.Fatalf("debug view lists %d of the 2 files", found)
	}

	// A closed file's inode is no longer identified.
	ino := inode(t, x.FD())
	x.Close()
	eventually(t, "the closed file to be forgotten", func() bool {
		o := must(c.Identify([]uint64{ino}))
		return o[0].Kind == uapi.ObjectKind_OBJECT_UNKNOWN
	})
}
