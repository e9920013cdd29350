package kernelsim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/internal/fuzzing"
	"drmcr/kernelsim"
	"drmcr/kernelsim/bomem"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// The fuzz targets of the daemon's serving code. Each drives a kernel
// served in-process on real sockets, as kernelsimd serves its clients,
// and checks what a client can see: every request gets one well-formed
// reply (an error has a negative errno and a message, a success decodes
// as the op's reply and carries descriptors only where the op returns
// one), the connection stays usable, descriptors passed to the kernel are
// not kept, a bystander's data is untouched, and once the fuzzed
// clients are gone every object and byte of BO memory is back to the
// baseline. A panic anywhere in the kernel fails the target: the daemon
// must never go down on any input.
//
// Seeds: requests and sequences written here, and the seed corpora in
// testdata/fuzz made from real checkpoints (internal/fuzzing).

// fuzzConfig is the fuzzed kernel: an amdgpu at renderD128 with the
// default gpu id (the device of the seed checkpoints) and an xe at
// renderD129, small, with short timeouts so that hung and endless jobs
// end soon; refusals are not logged.
func fuzzConfig() kernelsim.Config {
	a := kernelsim.DefaultDevice()
	a.VRAMSize, a.GTTSize = 16<<20, 16<<20
	a.JobTimeout = 100 * time.Millisecond
	a.IterTime = time.Microsecond
	x := a
	x.Driver, x.Minor, x.GPUID = "xe", 129, 0
	return kernelsim.Config{Devices: []kernelsim.DeviceConfig{a, x}, Log: log.New(io.Discard, "", 0)}
}

// maxWait bounds the waits of fuzzed requests: a wait forever on a fence
// nobody signals is the kernel working as asked, not a hang.
const maxWait = 20 * time.Millisecond

// fuzzCensus is a census plus the BO memory each device has charged and
// the descriptors this process holds: the kernel's (sockets, BO memfds,
// pidfds) and the harness's.
type fuzzCensus struct {
	census
	used [4]uint64 // VRAM and GTT of renderD128, then of renderD129
	fds  map[string]bool
}

func takeFuzzCensus(k *kernelsim.Kernel) fuzzCensus {
	c := fuzzCensus{census: takeCensus(k), fds: openFDs()}
	for i, d := range k.Debug().Devices {
		if i < 2 {
			c.used[2*i], c.used[2*i+1] = d.VRAMUsed, d.GTTUsed
		}
	}
	return c
}

// openFDs are this process's open descriptors, as "N:what".
func openFDs() map[string]bool {
	ents, _ := os.ReadDir("/proc/self/fd")
	out := map[string]bool{}
	for _, e := range ents {
		if what, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil { // not ReadDir's own
			out[e.Name()+":"+what] = true
		}
	}
	return out
}

// leaks is what now has and base had not: objects, BO memory and
// descriptors. Descriptors closed since the baseline (an earlier
// target's kernel, in the same process, ending) are no leak.
func (now fuzzCensus) leaks(base fuzzCensus) string {
	var b strings.Builder
	if now.census != base.census || now.used != base.used {
		fmt.Fprintf(&b, "objects and memory %+v %v, baseline %+v %v; ", now.census, now.used, base.census, base.used)
	}
	var fds []string
	for fd := range now.fds {
		if !base.fds[fd] {
			fds = append(fds, fd)
		}
	}
	if len(fds) > 0 {
		slices.Sort(fds)
		fmt.Fprintf(&b, "descriptors %v", fds)
	}
	return b.String()
}

// backToFuzzBaseline waits until every object, byte of BO memory and
// descriptor the fuzzed clients made is gone, and every goroutine the
// kernel started for them (goroutines is the count before the input
// ran).
func backToFuzzBaseline(t *testing.T, k *kernelsim.Kernel, base fuzzCensus, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		leaks := takeFuzzCensus(k).leaks(base)
		if leaks == "" && runtime.NumGoroutine() <= goroutines {
			return
		}
		if time.Now().After(deadline) {
			if leaks != "" {
				t.Fatalf("leaked: %s", leaks)
			}
			buf := make([]byte, 1<<20)
			t.Fatalf("leaked goroutines: %d, %d before\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// bystander is a client the fuzzed ones must not disturb: a BO of known
// contents and an exported dma-buf, whose fd fuzzed requests may send.
type bystander struct {
	d      *libdrm.Device
	h      uint32
	dmabuf int
}

func newBystander(f *testing.F, env *ksimtest.Env) *bystander {
	d := env.Open(f, 129)
	h := must(d.BOCreate(4096, vram, 0, 0))
	ok(f, d.Write(h, 0, pattern(4096, 0xc0ffee)))
	fd := must(d.ExportDmaBuf(must(d.BOCreate(4096, gtt, 0, 0))))
	f.Cleanup(func() { unix.Close(fd) })
	// Mapped once, so that what stays for good once any BO was mapped
	// (the kernel's inotify watch and its goroutine, the memfd of a BO
	// the fuzzed clients may map through this dma-buf) is in the
	// baseline.
	m, err := libdrm.MapDmaBuf(fd, 0, 0, unix.PROT_READ)
	ok(f, err)
	ok(f, m.Unmap())
	return &bystander{d: d, h: h, dmabuf: fd}
}

func (b *bystander) check(t *testing.T) {
	t.Helper()
	got := make([]byte, 4096)
	if err := b.d.Read(b.h, 0, got); err != nil || string(got) != string(pattern(4096, 0xc0ffee)) {
		t.Fatalf("the bystander's BO changed or is gone: %v", err)
	}
}

// renderReplies is the reply of each render-node op.
var renderReplies = map[uapi.Op]func() proto.Message{
	uapi.OpVersion:         func() proto.Message { return &uapi.VersionReply{} },
	uapi.OpGemCreate:       func() proto.Message { return &uapi.GemCreateReply{} },
	uapi.OpGemClose:        func() proto.Message { return &uapi.Empty{} },
	uapi.OpGemInfo:         func() proto.Message { return &uapi.GemInfoReply{} },
	uapi.OpGemMmap:         func() proto.Message { return &uapi.GemMmapReply{} },
	uapi.OpDmaBufMmap:      func() proto.Message { return &uapi.GemMmapReply{} },
	uapi.OpGemPwrite:       func() proto.Message { return &uapi.Empty{} },
	uapi.OpGemPread:        func() proto.Message { return &uapi.GemPreadReply{} },
	uapi.OpGemWaitIdle:     func() proto.Message { return &uapi.GemWaitIdleReply{} },
	uapi.OpVmMap:           func() proto.Message { return &uapi.Empty{} },
	uapi.OpVmUnmap:         func() proto.Message { return &uapi.Empty{} },
	uapi.OpPrimeHandleToFd: func() proto.Message { return &uapi.Empty{} },
	uapi.OpPrimeFdToHandle: func() proto.Message { return &uapi.PrimeFdToHandleReply{} },
	uapi.OpCtxCreate:       func() proto.Message { return &uapi.CtxCreateReply{} },
	uapi.OpCtxDestroy:      func() proto.Message { return &uapi.Empty{} },
	uapi.OpCtxQuery:        func() proto.Message { return &uapi.CtxQueryReply{} },
	uapi.OpSubmit:          func() proto.Message { return &uapi.SubmitReply{} },
	uapi.OpSyncobjCreate:   func() proto.Message { return &uapi.SyncobjCreateReply{} },
	uapi.OpSyncobjDestroy:  func() proto.Message { return &uapi.Empty{} },
	uapi.OpSyncobjWait:     func() proto.Message { return &uapi.SyncobjWaitReply{} },
	uapi.OpSyncobjReset:    func() proto.Message { return &uapi.Empty{} },
	uapi.OpSyncobjSignal:   func() proto.Message { return &uapi.Empty{} },
	uapi.OpSyncobjQuery:    func() proto.Message { return &uapi.SyncobjQueryReply{} },
	uapi.OpSwSyncCreate:    func() proto.Message { return &uapi.SwSyncCreateReply{} },
	uapi.OpSwSyncFence:     func() proto.Message { return &uapi.Empty{} },
	uapi.OpSwSyncInc:       func() proto.Message { return &uapi.Empty{} },
	uapi.OpClaimFile:       func() proto.Message { return &uapi.Empty{} },
	uapi.OpClaimDmaBuf:     func() proto.Message { return &uapi.Empty{} },
	uapi.OpClaimChannel:    func() proto.Message { return &uapi.Empty{} },
	uapi.OpAttach:          func() proto.Message { return &uapi.AttachReply{} },
	// The xe driver's own ioctls, on its render nodes (kernelsim/xe).
	uapi.OpXeVmCreate:         func() proto.Message { return &uapi.XeVmCreateReply{} },
	uapi.OpXeVmDestroy:        func() proto.Message { return &uapi.Empty{} },
	uapi.OpXeExecQueueCreate:  func() proto.Message { return &uapi.XeExecQueueCreateReply{} },
	uapi.OpXeExecQueueDestroy: func() proto.Message { return &uapi.Empty{} },
	uapi.OpXeVmBind:           func() proto.Message { return &uapi.Empty{} },
	uapi.OpXeExec:             func() proto.Message { return &uapi.XeExecReply{} },
}

// controlReplies is the reply of each control op.
var controlReplies = map[uapi.Op]func() proto.Message{
	uapi.OpIdentify:           func() proto.Message { return &uapi.IdentifyReply{} },
	uapi.OpPause:              func() proto.Message { return &uapi.Empty{} },
	uapi.OpResume:             func() proto.Message { return &uapi.Empty{} },
	uapi.OpCheckpointFile:     func() proto.Message { return &uapi.FileCheckpoint{} },
	uapi.OpCheckpointDmaBuf:   func() proto.Message { return &uapi.CheckpointDmaBufReply{} },
	uapi.OpCheckpointBos:      func() proto.Message { return &uapi.CheckpointBosReply{} },
	uapi.OpSessionOpen:        func() proto.Message { return &uapi.SessionOpenReply{} },
	uapi.OpSessionLoadPages:   func() proto.Message { return &uapi.Empty{} },
	uapi.OpSessionResume:      func() proto.Message { return &uapi.Empty{} },
	uapi.OpSessionClose:       func() proto.Message { return &uapi.Empty{} },
	uapi.OpDebug:              func() proto.Message { return &uapi.DebugReply{} },
	uapi.OpDevices:            func() proto.Message { return &uapi.DevicesReply{} },
	uapi.OpCheckpointIo:       func() proto.Message { return &uapi.PendingIO{} },
	uapi.OpIdentifyMemory:     func() proto.Message { return &uapi.IdentifyMemoryReply{} },
	uapi.OpSessionAdoptMemory: func() proto.Message { return &uapi.Empty{} },
}

// checkReply checks one reply against the request it answers (op and seq
// as the kernel parsed them; 0 and 0 for a request it could not parse)
// and decodes a success into the op's reply. It returns the decoded reply,
// nil for an error.
func checkReply(t *testing.T, replies map[uapi.Op]func() proto.Message, op uapi.Op, seq uint32, h uapi.Header, payload []byte, fds []int) proto.Message {
	t.Helper()
	if h.Op != op || h.Seq != seq {
		uapi.CloseFDs(fds)
		t.Fatalf("reply op %v seq %d to a request of op %v seq %d", h.Op, h.Seq, op, seq)
	}
	switch {
	case h.Status > 0:
		t.Fatalf("%v: positive status %d", op, h.Status)
	case h.Status < 0:
		var e uapi.ErrorReply
		if err := proto.Unmarshal(payload, &e); err != nil || e.Message == "" || -h.Status >= 4096 || len(fds) > 0 {
			t.Fatalf("%v: error reply %d with message %q (%v) and %d descriptors", op, h.Status, e.Message, err, len(fds))
		}
		return nil
	}
	mk, known := replies[op]
	if !known {
		t.Fatalf("unknown op %v succeeded", op)
	}
	m := mk()
	if err := proto.Unmarshal(payload, m); err != nil {
		t.Fatalf("%v: reply does not decode: %v", op, err)
	}
	return m
}

// sanitize bounds the waits of a render-node request that decodes; other
// requests are sent as they are.
func sanitize(op uapi.Op, payload []byte) []byte {
	var m interface {
		proto.Message
		GetTimeoutNs() int64
	}
	switch op {
	case uapi.OpGemWaitIdle:
		m = &uapi.GemWaitIdleRequest{}
	case uapi.OpSyncobjWait:
		m = &uapi.SyncobjWaitRequest{}
	default:
		return payload
	}
	if proto.Unmarshal(payload, m) != nil {
		return payload
	}
	ns := m.GetTimeoutNs()
	if ns < 0 || ns > int64(maxWait) {
		ns = int64(maxWait)
	}
	switch r := m.(type) {
	case *uapi.GemWaitIdleRequest:
		r.TimeoutNs = ns
	case *uapi.SyncobjWaitRequest:
		r.TimeoutNs = ns
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return payload
	}
	return b
}

// What a step of a render-node sequence does around its request.
const (
	stepFDs      = 3  // the descriptor sent (stepFD*)
	stepRaw      = 4  // the payload is the whole packet
	stepBadVer   = 8  // a header of another protocol version
	stepHangUp   = 16 // hang up right after sending
	stepPipeToo  = 32 // a pipe besides (two descriptors)
	stepOnPeer   = 64 // send on the peer connection instead
	stepFDDmaBuf = 1  // a dma-buf: the last one received, or a bystander's
	stepFDPipe   = 2  // a pipe's read end
	stepFDPeer   = 3  // the peer connection's client socket (what ATTACH takes)
)

// renderConn is one connection to a render node (a drm file, or a reply
// channel attached to one) driven by a fuzzed sequence of requests.
type renderConn struct {
	t       *testing.T
	fd      int
	seq     uint32
	dmabufs []int // dma-bufs and BO memfds received; sent back in later requests
	spare   int   // a dma-buf fd to send before any was received
	maps    [][]byte
	peer    *renderConn
	chans   []*renderConn // reply channels attached to this drm file
	gone    bool          // hung up
}

// hangUp closes the connection; a drm file whose socket is closed
// everywhere is released, and the reply channels attached to it with it.
func (c *renderConn) hangUp() {
	unix.Close(c.fd)
	c.gone = true
	for _, ch := range c.chans {
		if !ch.gone {
			ch.hangUp()
		}
	}
}

func dialRender(t *testing.T, path string, spare int) *renderConn {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	ok(t, err)
	ok(t, unix.Connect(fd, &unix.SockaddrUnix{Name: path}))
	return &renderConn{t: t, fd: fd, spare: spare}
}

func (c *renderConn) close() {
	if !c.gone {
		c.hangUp()
	}
	uapi.CloseFDs(c.dmabufs)
	c.dmabufs = nil
	for _, m := range c.maps {
		unix.Munmap(m)
	}
	c.maps = nil
}

// lastReceived is the descriptor steps send as a dma-buf: the last one
// received, or the spare.
func (c *renderConn) lastReceived() int {
	if n := len(c.dmabufs); n > 0 {
		return c.dmabufs[n-1]
	}
	return c.spare
}

// mapped checks the file a GEM_MMAP or DMABUF_MMAP reply carried (the
// BO's memory, as large as the BO), maps it as a client does and keeps
// it: the mapping keeps the BO alive until close unmaps it.
func (c *renderConn) mapped(op uapi.Op, r *uapi.GemMmapReply, fd int) {
	t := c.t
	t.Helper()
	c.dmabufs = append(c.dmabufs, fd)
	var st unix.Stat_t
	ok(t, unix.Fstat(fd, &st))
	page := uint64(os.Getpagesize())
	if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Size) != (r.Size+page-1)&^(page-1) || r.Size == 0 {
		t.Fatalf("%v: a file of mode %#o and %d bytes for a BO of %d", op, st.Mode, st.Size, r.Size)
	}
	m, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("%v: map the BO's file: %v", op, err)
	}
	c.maps = append(c.maps, m)
}

// dmabufMmap sends a DMABUF_MMAP step on the dma-buf steps send (or
// whatever descriptor was received last), with a socket for the reply
// as the flags say: a new one (no descriptor flag), the dma-buf itself
// (stepFDDmaBuf), a pipe (stepFDPipe) or none (stepFDPeer); stepPipeToo
// adds a pipe. The kernel answers on a new socket only a well-formed
// request that carries it alone, and closes it in any case.
func (c *renderConn) dmabufMmap(s fuzzing.Step) {
	t := c.t
	t.Helper()
	target := c.lastReceived()
	if target < 0 {
		return
	}
	c.seq++
	h := uapi.Header{Magic: uapi.Magic, Version: uapi.Version, Op: uapi.OpDmaBufMmap, Seq: c.seq}
	if s.Flags&stepBadVer != 0 {
		h.Version++
	}
	pkt := make([]byte, uapi.HeaderSize, uapi.HeaderSize+len(s.Payload))
	h.Put(pkt)
	pkt = append(pkt, s.Payload...)
	var fds, pipes []int
	pipe := func() {
		var p [2]int
		ok(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		fds = append(fds, p[0])
		pipes = append(pipes, p[0], p[1])
	}
	defer func() { uapi.CloseFDs(pipes) }()
	replyTo := -1
	switch s.Flags & stepFDs {
	case 0:
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		ok(t, err)
		defer unix.Close(pair[0])
		replyTo = pair[0]
		fds = append(fds, pair[1])
	case stepFDDmaBuf:
		fds = append(fds, target)
	case stepFDPipe:
		pipe()
	}
	if s.Flags&stepPipeToo != 0 {
		pipe()
	}
	err := uapi.Send(target, pkt, fds...)
	if replyTo >= 0 {
		unix.Close(fds[0]) // the kernel holds it now, or nobody
	}
	if err != nil {
		if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOTSOCK) ||
			errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			return // no dma-buf, or it refuses it before the kernel sees it
		}
		t.Fatalf("send DMABUF_MMAP: %v", err)
	}
	if replyTo >= 0 {
		answered := s.Flags&(stepBadVer|stepPipeToo) == 0
		rh, payload, rfds, err := recvTimeout(replyTo, 20*time.Second)
		switch {
		case err == nil && answered:
			m := checkReply(t, renderReplies, uapi.OpDmaBufMmap, h.Seq, rh, payload, rfds)
			if m != nil {
				if len(rfds) != 1 {
					uapi.CloseFDs(rfds)
					t.Fatalf("DMABUF_MMAP succeeded with %d descriptors", len(rfds))
				}
				c.mapped(uapi.OpDmaBufMmap, m.(*uapi.GemMmapReply), rfds[0])
			}
		case err == nil:
			uapi.CloseFDs(rfds)
			t.Fatalf("DMABUF_MMAP answered a request it cannot know (op %v status %d)", rh.Op, rh.Status)
		case !isHangUp(err):
			t.Fatalf("DMABUF_MMAP: %v", err)
		case answered:
			t.Fatalf("DMABUF_MMAP: the reply socket closed without a reply")
		}
	}
	// The kernel keeps no descriptor it was sent (it answers first).
	for i := 0; i < len(pipes); i += 2 {
		unix.Close(pipes[i])
		pipes[i] = -1
		eventually(t, "the kernel to close the pipe sent with DMABUF_MMAP", func() bool { return readEndClosedEverywhere(pipes[i+1]) })
	}
}

// step sends one request and checks its reply.
func (c *renderConn) step(s fuzzing.Step) {
	t := c.t
	t.Helper()
	if s.Flags&stepOnPeer != 0 && c.peer != nil {
		s.Flags &^= stepOnPeer
		c.peer.step(s)
		return
	}
	if uapi.Op(s.Op) == uapi.OpDmaBufMmap && s.Flags&stepRaw == 0 {
		c.dmabufMmap(s) // on a dma-buf, not the connection
		return
	}
	if c.gone {
		return
	}
	var pkt []byte
	op, seq := uapi.Op(s.Op), uint32(0)
	if s.Flags&stepRaw != 0 {
		pkt = s.Payload
		op = 0
		if h, err := uapi.ParseHeader(pkt); err == nil {
			op, seq = h.Op, h.Seq
		}
	} else {
		c.seq++
		seq = c.seq
		h := uapi.Header{Magic: uapi.Magic, Version: uapi.Version, Op: op, Seq: seq}
		if s.Flags&stepBadVer != 0 {
			h.Version++
			op, seq = 0, 0
		}
		pkt = make([]byte, uapi.HeaderSize, uapi.HeaderSize+len(s.Payload))
		h.Put(pkt)
		pkt = append(pkt, sanitize(h.Op, s.Payload)...)
	}
	var fds, pipes []int
	pipe := func() {
		var p [2]int
		ok(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		fds = append(fds, p[0])
		pipes = append(pipes, p[0], p[1])
	}
	switch s.Flags & stepFDs {
	case stepFDDmaBuf:
		if fd := c.lastReceived(); fd >= 0 {
			fds = append(fds, fd)
		}
	case stepFDPipe:
		pipe()
	case stepFDPeer:
		if c.peer != nil && !c.peer.gone {
			fds = append(fds, c.peer.fd)
		}
	}
	if s.Flags&stepPipeToo != 0 {
		pipe()
	}
	defer uapi.CloseFDs(pipes)
	if len(pkt) == 0 && len(fds) > 0 {
		op, seq = 0, 0 // the byte unix.Sendmsg adds is no header
	}
	if err := uapi.Send(c.fd, pkt, fds...); err != nil {
		if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
			return // the socket refuses it before the kernel sees it
		}
		t.Fatalf("send %v: %v", op, err)
	}
	if s.Flags&stepHangUp != 0 {
		c.hangUp()
		return
	}
	h, payload, rfds, err := recvTimeout(c.fd, 20*time.Second)
	if err != nil {
		t.Fatalf("request %v (seq %d, %d bytes, %d fds): %v", op, seq, len(pkt), len(fds), err)
	}
	m := checkReply(t, renderReplies, op, seq, h, payload, rfds)
	if h.Status == 0 && (op == uapi.OpPrimeHandleToFd || op == uapi.OpClaimDmaBuf || op == uapi.OpGemMmap) != (len(rfds) == 1) || len(rfds) > 1 {
		uapi.CloseFDs(rfds)
		t.Fatalf("%v succeeded with %d descriptors", op, len(rfds))
	}
	if _, attached := m.(*uapi.AttachReply); attached && len(fds) == 1 && c.peer != nil && fds[0] == c.peer.fd {
		c.peer.chans = append(c.peer.chans, c)
	}
	if r, isMmap := m.(*uapi.GemMmapReply); isMmap {
		c.mapped(op, r, rfds[0])
	} else {
		c.dmabufs = append(c.dmabufs, rfds...)
	}
	// The kernel keeps no descriptor it was sent: with our read ends
	// closed, the pipes are broken.
	for i := 0; i < len(pipes); i += 2 {
		unix.Close(pipes[i])
		pipes[i] = -1
		if !readEndClosedEverywhere(pipes[i+1]) {
			t.Fatalf("the kernel kept the pipe sent with %v", op)
		}
	}
}

// alive checks the file still answers.
func (c *renderConn) alive() {
	c.t.Helper()
	if !c.gone {
		c.step(fuzzing.Step{Op: uint16(uapi.OpVersion)})
	}
}

// req is a seed step: op and request.
func req(op uapi.Op, m proto.Message, flags ...uint8) fuzzing.Step {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	s := fuzzing.Step{Op: uint16(op), Payload: b}
	for _, f := range flags {
		s.Flags |= f
	}
	return s
}

// renderSeeds are sequences of requests on one drm file that use every
// op, most of them in the way a real client does.
func renderSeeds() [][]fuzzing.Step {
	bo := &uapi.SubmitBo{Handle: 1, Write: true}
	return [][]fuzzing.Step{
		{
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 8192, Domain: vram, Flags: 1}),
			req(uapi.OpGemPwrite, &uapi.GemPwriteRequest{Handle: 1, Offset: 100, Data: []byte("hello")}),
			req(uapi.OpGemPread, &uapi.GemPreadRequest{Handle: 1, Offset: 96, Length: 16}),
			req(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: 1}),
			req(uapi.OpVmMap, &uapi.VmMapRequest{Handle: 1, Va: 0x100000, Size: 8192}),
			req(uapi.OpVmMap, &uapi.VmMapRequest{Handle: 1, Va: 0x101000, Size: 4096}),
			req(uapi.OpVmUnmap, &uapi.VmUnmapRequest{Va: 0x100000}),
			req(uapi.OpGemClose, &uapi.GemCloseRequest{Handle: 1}),
			req(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: 1}),
		},
		{
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: gtt}),
			req(uapi.OpCtxCreate, &uapi.CtxCreateRequest{}),
			req(uapi.OpSyncobjCreate, &uapi.SyncobjCreateRequest{}),
			req(uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Bos: []*uapi.SubmitBo{bo}, OutSyncobjs: []uint32{1},
				Commands: []*uapi.Command{fill(0, 0, 4096, 7), {Op: uint32(gpu.OpAddCounter), Dst: 0, Src: -1, DstOff: 8, Value: 3}}}),
			req(uapi.OpSyncobjWait, &uapi.SyncobjWaitRequest{Handles: []uint32{1}, TimeoutNs: -1, WaitAll: true}),
			req(uapi.OpSyncobjQuery, &uapi.SyncobjHandleRequest{Handle: 1}),
			req(uapi.OpGemWaitIdle, &uapi.GemWaitIdleRequest{Handle: 1, Write: true, TimeoutNs: -1}),
			req(uapi.OpCtxQuery, &uapi.CtxQueryRequest{CtxId: 1}),
			req(uapi.OpSyncobjReset, &uapi.SyncobjHandleRequest{Handle: 1}),
			req(uapi.OpSyncobjSignal, &uapi.SyncobjHandleRequest{Handle: 1}),
			req(uapi.OpSyncobjDestroy, &uapi.SyncobjHandleRequest{Handle: 1}),
			req(uapi.OpCtxDestroy, &uapi.CtxDestroyRequest{CtxId: 1}),
		},
		{
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram}),
			req(uapi.OpPrimeHandleToFd, &uapi.PrimeHandleToFdRequest{Handle: 1}),
			req(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}, stepFDDmaBuf),
			req(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}, stepFDPipe),
			req(uapi.OpGemClose, &uapi.GemCloseRequest{Handle: 1}),
			req(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}, stepFDDmaBuf),
		},
		{
			req(uapi.OpSwSyncCreate, &uapi.SwSyncCreateRequest{}),
			req(uapi.OpSyncobjCreate, &uapi.SyncobjCreateRequest{}),
			req(uapi.OpSwSyncFence, &uapi.SwSyncFenceRequest{Timeline: 1, Point: 2, Syncobj: 1}),
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: gtt}),
			req(uapi.OpCtxCreate, &uapi.CtxCreateRequest{Priority: 1}),
			req(uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Bos: []*uapi.SubmitBo{bo}, InSyncobjs: []uint32{1}, Commands: []*uapi.Command{fill(0, 0, 64, 1)}}),
			req(uapi.OpSyncobjWait, &uapi.SyncobjWaitRequest{Handles: []uint32{1}, TimeoutNs: 1000, WaitForSubmit: true}),
			req(uapi.OpSwSyncInc, &uapi.SwSyncIncRequest{Timeline: 1, Inc: 2}),
			req(uapi.OpGemWaitIdle, &uapi.GemWaitIdleRequest{Handle: 1, TimeoutNs: -1}),
		},
		{
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram}),
			req(uapi.OpCtxCreate, &uapi.CtxCreateRequest{}),
			req(uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Bos: []*uapi.SubmitBo{bo}, Commands: []*uapi.Command{hang()}}),
			req(uapi.OpGemWaitIdle, &uapi.GemWaitIdleRequest{Handle: 1, TimeoutNs: -1}),
			req(uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Bos: []*uapi.SubmitBo{bo}, Commands: []*uapi.Command{fill(0, 0, 64, 1)}}),
			req(uapi.OpCtxQuery, &uapi.CtxQueryRequest{CtxId: 1}),
			req(uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Bos: []*uapi.SubmitBo{bo}, LongRunning: true,
				Commands: []*uapi.Command{compute(0, 0, 64, 1<<40)}}, stepHangUp),
		},
		{
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram}),
			req(uapi.OpCtxCreate, &uapi.CtxCreateRequest{}),
			req(uapi.OpSubmit, &uapi.SubmitRequest{CtxId: 1, Bos: []*uapi.SubmitBo{bo}, LongRunning: true,
				Commands: []*uapi.Command{compute(0, 0, 64, 1<<40)}}),
			req(uapi.OpGemWaitIdle, &uapi.GemWaitIdleRequest{Handle: 1, TimeoutNs: 1}),
			req(uapi.OpGemClose, &uapi.GemCloseRequest{Handle: 1}),
		},
		{
			req(uapi.OpAttach, &uapi.AttachRequest{}, stepFDPeer),
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram}),
			req(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: 1}, stepOnPeer),
			req(uapi.OpSyncobjCreate, &uapi.SyncobjCreateRequest{}, stepOnPeer),
			req(uapi.OpSyncobjWait, &uapi.SyncobjWaitRequest{Handles: []uint32{1}, TimeoutNs: -1, WaitForSubmit: true}),
			req(uapi.OpSyncobjSignal, &uapi.SyncobjHandleRequest{Handle: 1}, stepOnPeer),
			req(uapi.OpGemClose, &uapi.GemCloseRequest{Handle: 1}, stepOnPeer),
			req(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: 1}),
			req(uapi.OpAttach, &uapi.AttachRequest{}, stepFDPeer|stepOnPeer),
		},
		{
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 4096, Domain: vram}),
			req(uapi.OpAttach, &uapi.AttachRequest{}, stepFDPeer|stepPipeToo),
			req(uapi.OpAttach, &uapi.AttachRequest{}, stepFDPipe|stepOnPeer),
			req(uapi.OpClaimChannel, &uapi.ClaimChannelRequest{Token: make([]byte, 16), Inode: 1}, stepOnPeer),
		},
		{
			// CPU mappings: GEM_MMAP, DMABUF_MMAP with every kind of
			// reply socket, a mapping outliving its handle, a BO memfd
			// sent as a dma-buf.
			req(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: 8192, Domain: vram}),
			req(uapi.OpGemMmap, &uapi.GemMmapRequest{Handle: 1}),
			req(uapi.OpPrimeHandleToFd, &uapi.PrimeHandleToFdRequest{Handle: 1}),
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}, stepFDPipe),
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}, stepFDDmaBuf),
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}, stepPipeToo),
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}, stepFDPeer),
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}, stepBadVer),
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}),
			req(uapi.OpGemClose, &uapi.GemCloseRequest{Handle: 1}),
			req(uapi.OpGemMmap, &uapi.GemMmapRequest{Handle: 1}),
			req(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}, stepFDDmaBuf),
			req(uapi.OpGemMmap, &uapi.GemMmapRequest{Handle: 1}, stepFDPipe),
		},
		{
			// The bystander's dma-buf, mapped by a client that holds it.
			req(uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}),
			req(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}, stepFDDmaBuf),
		},
		{
			req(uapi.OpClaimFile, &uapi.ClaimFileRequest{Token: make([]byte, 16), Inode: 1}),
			req(uapi.OpClaimDmaBuf, &uapi.ClaimDmaBufRequest{Inode: 1}),
			req(uapi.OpVersion, &uapi.VersionRequest{}, stepBadVer),
			{Op: 0, Flags: stepRaw, Payload: []byte("KSIM")},
			{Op: 0, Flags: stepRaw | stepFDDmaBuf},
			{Op: uint16(uapi.OpIdentify | uapi.OpOutOfLine), Flags: stepFDPipe},
			{Op: 0xffff, Payload: []byte("garbage")},
		},
	}
}

// FuzzRequestSequence: any sequence of requests, with or without
// descriptors, on two connections to a render node of either device: two
// drm files, or, after an ATTACH of one to the other's socket, a drm
// file and its reply channel.
func FuzzRequestSequence(f *testing.F) {
	for i, s := range renderSeeds() {
		f.Add(byte(i), fuzzing.Encode(s))
	}
	env := ksimtest.Start(f, fuzzConfig())
	by := newBystander(f, env)
	base := takeFuzzCensus(env.Kernel)
	f.Fuzz(func(t *testing.T, dev byte, data []byte) {
		goroutines := runtime.NumGoroutine()
		node := kernelsim.RenderNodePath(env.Dir, 128+uint32(dev&1))
		c := dialRender(t, node, by.dmabuf)
		// The peer: another drm file of the device, or, once attached,
		// the fuzzed connection becomes a reply channel of it.
		peer := dialRender(t, node, by.dmabuf)
		c.peer, peer.peer = peer, c
		for _, s := range fuzzing.Decode(data, 64) {
			c.step(s)
		}
		c.alive()
		peer.alive()
		c.close()
		peer.close()
		backToFuzzBaseline(t, env.Kernel, base, goroutines)
		by.check(t)
	})
}

// ctlConn is a control connection driven by a fuzzed sequence.
type ctlConn struct {
	t      *testing.T
	fd     int
	seq    uint32
	gone   bool
	tokens [][]byte // of the sessions it opened
}

func dialControl(t *testing.T, env *ksimtest.Env) *ctlConn {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	ok(t, err)
	ok(t, unix.Connect(fd, &unix.SockaddrUnix{Name: kernelsim.ControlPath(env.Dir)}))
	return &ctlConn{t: t, fd: fd}
}

func (c *ctlConn) close() {
	if !c.gone {
		unix.Close(c.fd)
		c.gone = true
	}
}

// call sends a control request (the packet's payload inline, or out of
// line in a sealed memfd) with fds, and checks and returns the reply:
// nil and the errno for an error.
func (c *ctlConn) call(op uapi.Op, payload []byte, outOfLine bool, fds ...int) (proto.Message, syscall.Errno) {
	t := c.t
	t.Helper()
	c.seq++
	h := uapi.Header{Magic: uapi.Magic, Version: uapi.Version, Op: op, Seq: c.seq}
	if outOfLine {
		mfd := sealedMemfd(t, payload)
		defer unix.Close(mfd)
		fds = append([]int{mfd}, fds...)
		h.Op |= uapi.OpOutOfLine
		payload = nil
	}
	pkt := make([]byte, uapi.HeaderSize, uapi.HeaderSize+len(payload))
	h.Put(pkt)
	// A reply's op is the request's without the out-of-line flag.
	return c.send(append(pkt, payload...), op&^uapi.OpOutOfLine, c.seq, fds...)
}

// send sends a packet and checks its reply against op and seq.
func (c *ctlConn) send(pkt []byte, op uapi.Op, seq uint32, fds ...int) (proto.Message, syscall.Errno) {
	t := c.t
	t.Helper()
	if err := uapi.Send(c.fd, pkt, fds...); err != nil {
		if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
			return nil, unix.EMSGSIZE
		}
		t.Fatalf("send %v: %v", op, err)
	}
	h, payload, rfds, err := recvTimeout(c.fd, 20*time.Second)
	if err != nil {
		t.Fatalf("control request %v: %v", op, err)
	}
	payload, rfds, err = uapi.InlinePayload(&h, payload, rfds)
	if err != nil {
		t.Fatalf("%v: reply: %v", op, err)
	}
	if len(rfds) > 0 {
		uapi.CloseFDs(rfds)
		t.Fatalf("%v: reply with %d descriptors", op, len(rfds))
	}
	m := checkReply(t, controlReplies, op, seq, h, payload, nil)
	if m == nil {
		return nil, syscall.Errno(-h.Status)
	}
	if r, isOpen := m.(*uapi.SessionOpenReply); isOpen {
		c.tokens = append(c.tokens, r.Token)
	}
	return m, 0
}

func sealedMemfd(t *testing.T, b []byte) int {
	fd, err := unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	ok(t, err)
	if len(b) > 0 {
		if _, err := unix.Pwrite(fd, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL)
	ok(t, err)
	return fd
}

// Pseudo-ops of FuzzControl: a claim on a new render-node connection, so
// that claims interleave with the control requests.
const (
	opClaimFile    = 0xc1a1
	opClaimDmaBuf  = 0xc1a2
	opClaimChannel = 0xc1a3
)

// What a step of FuzzControl does around its request.
const (
	ctlFDs         = 3   // descriptors sent: 1 a memfd of the tail, 2 a pipe, 3 both
	ctlOutOfLine   = 4   // the request travels out of line
	ctlRaw         = 8   // the request is the whole packet
	ctlAsIs        = 16  // no substitution of ids and tokens
	ctlHangUp      = 32  // hang up the control connection after the step
	ctlOtherDevice = 64  // claims go to renderD129
	ctlFDSocket    = 128 // also the harness's first file's client socket (CHECKPOINT_IO's; not with DEBUG)
	ctlFDMemfd     = 1
	ctlFDPipe      = 2
)

// splitCtl splits a FuzzControl step's payload: a uvarint length, the
// request, then the contents of the memfd the step may send.
func splitCtl(p []byte) (req, tail []byte) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return p, nil
	}
	return p[k : k+int(n)], p[k+int(n):]
}

// harness is what FuzzControl's requests act on: two drm files (one on
// each device) sharing a BO through a dma-buf, which a's task maps, a
// context with finished work and a syncobj, made afresh for each input.
type harness struct {
	a, b    *libdrm.Device
	dmabuf  int
	mapping *libdrm.Mapping
	files   []uint64        // drm file ids
	inodes  []uint64        // client inodes of a and b, the dma-buf's
	bos     []uint64        // BO ids
	mem     *uapi.MemoryRef // the mapped BO's memfd
	holder  *exec.Cmd       // a restored task's stand-in (see holders)
}

func newHarness(t *testing.T, env *ksimtest.Env) *harness {
	a, err := libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128))
	ok(t, err)
	b, err := libdrm.Open(kernelsim.RenderNodePath(env.Dir, 129))
	ok(t, err)
	h1 := must(a.BOCreate(8192, vram, 0, 0))
	must(a.BOCreate(4096, gtt, 0, 0))
	ctx := must(a.CtxCreate(0))
	so := must(a.SyncobjCreate(false))
	must(a.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h1, Write: true}}, OutSyncobjs: []uint32{so},
		Commands: []*uapi.Command{fill(0, 0, 8192, 0x5a5a5a5a)}}))
	dfd := must(a.ExportDmaBuf(h1))
	must(b.ImportDmaBuf(dfd))
	must(b.BOCreate(4096, vram, 0, 0))
	m, err := a.Map(h1, 0, 0, unix.PROT_READ)
	ok(t, err)
	hs := &harness{a: a, b: b, dmabuf: dfd, mapping: m, inodes: []uint64{inode(t, a.FD()), inode(t, b.FD()), inode(t, dfd)}}
	st := env.Kernel.Debug()
	for _, f := range st.Files {
		if f.ClientIno == hs.inodes[0] || f.ClientIno == hs.inodes[1] {
			hs.files = append(hs.files, f.ID)
			for _, h := range f.Handles {
				hs.bos = append(hs.bos, h.BO)
			}
		}
	}
	if len(hs.files) != 2 {
		t.Fatalf("harness files: %v", hs.files)
	}
	// Every memfd is on the same internal mount: its device is any
	// memfd's.
	var mst unix.Stat_t
	mfd := memfdOf(t, nil)
	ok(t, unix.Fstat(mfd, &mst))
	unix.Close(mfd)
	for _, bo := range st.BOs {
		if bo.CPU != nil && bo.ID == hs.bos[0] {
			hs.mem = &uapi.MemoryRef{Dev: mst.Dev, Ino: bo.CPU.MemfdInode}
		}
	}
	if hs.mem == nil {
		t.Fatalf("the harness's mapped BO %d has no memfd", hs.bos[0])
	}
	return hs
}

// holders points the holders of a SESSION_ADOPT_MEMORY at processes
// that are gone by the end of the input, or at none: the kernel keeps a
// BO while a holder lives (it trusts the control client's pids), so a
// holder that outlives the input would keep its BO for good. A positive
// even pid becomes a child that lives until the input ends, an odd one
// a pid that does not exist; others are left as they are.
func (h *harness) holders(t *testing.T, pids []int32) {
	for i, p := range pids {
		switch {
		case p <= 0:
		case p%2 == 1:
			pids[i] = 1<<30 - 1 // above any pid_max
		default:
			if h.holder == nil {
				h.holder = exec.Command("sleep", "3600")
				ok(t, h.holder.Start())
			}
			pids[i] = int32(h.holder.Process.Pid)
		}
	}
}

// usable checks that the harness files answer and are not paused: what a
// control connection paused or froze is resumed when it goes away.
func (h *harness) usable(t *testing.T, env *ksimtest.Env) {
	t.Helper()
	done := make(chan error, 2)
	for _, d := range []*libdrm.Device{h.a, h.b} {
		go func() {
			_, err := d.Version()
			done <- err
		}()
	}
	for range 2 {
		select {
		case err := <-done:
			ok(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("a file stayed frozen after its control connection went away")
		}
	}
	// The kernel resumes them once it has seen the hang-up.
	eventually(t, "the files the control connection paused to run again", func() bool {
		for _, f := range env.Kernel.Debug().Files {
			if (f.ID == h.files[0] || f.ID == h.files[1]) && f.Paused {
				return false
			}
		}
		return true
	})
}

func (h *harness) close() {
	h.mapping.Unmap()
	unix.Close(h.dmabuf)
	h.a.Close()
	h.b.Close()
	if h.holder != nil {
		h.holder.Process.Kill()
		h.holder.Wait()
	}
}

// pick maps a small id to one of the harness's, leaves others alone.
func pick(v uint64, of []uint64) uint64 {
	if v < 8 && len(of) > 0 {
		return of[v%uint64(len(of))]
	}
	return v
}

// substitute points a decoded control request at the harness's objects
// and this connection's sessions, and bounds its waits. It returns the
// request to send instead, or nil to send the original.
func (c *ctlConn) substitute(op uint16, raw []byte, h *harness) []byte {
	token := func(tok []byte) []byte {
		if len(tok) > 1 || len(c.tokens) == 0 {
			return tok
		}
		i := len(c.tokens) - 1
		if len(tok) == 1 {
			i = int(tok[0]) % len(c.tokens)
		}
		return c.tokens[i]
	}
	bound := func(ns int64, least time.Duration) int64 {
		return int64(min(max(time.Duration(ns), least), 200*time.Millisecond))
	}
	var m proto.Message
	switch uapi.Op(op) {
	case uapi.OpIdentify:
		r := &uapi.IdentifyRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		for i := range r.Inodes {
			r.Inodes[i] = pick(r.Inodes[i], h.inodes)
		}
		m = r
	case uapi.OpIdentifyMemory:
		r := &uapi.IdentifyMemoryRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		for _, f := range r.Files {
			if f.Ino < 8 {
				f.Dev, f.Ino = h.mem.Dev, h.mem.Ino
			}
		}
		m = r
	case uapi.OpSessionAdoptMemory:
		r := &uapi.SessionAdoptMemoryRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		h.holders(c.t, r.Holders)
		m = r
	case uapi.OpPause:
		r := &uapi.PauseRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		for i := range r.FileIds {
			r.FileIds[i] = pick(r.FileIds[i], h.files)
		}
		r.TimeoutNs = bound(r.TimeoutNs, 0)
		m = r
	case uapi.OpResume:
		r := &uapi.ResumeRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		for i := range r.FileIds {
			r.FileIds[i] = pick(r.FileIds[i], h.files)
		}
		m = r
	case uapi.OpCheckpointFile:
		r := &uapi.CheckpointFileRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.FileId = pick(r.FileId, h.files)
		m = r
	case uapi.OpCheckpointDmaBuf:
		r := &uapi.CheckpointDmaBufRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Inode = pick(r.Inode, h.inodes[2:])
		m = r
	case uapi.OpCheckpointBos:
		r := &uapi.CheckpointBosRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		for i := range r.BoIds {
			r.BoIds[i] = pick(r.BoIds[i], h.bos)
		}
		for _, t := range r.Targets {
			for i := range t.BoIds {
				t.BoIds[i] = pick(t.BoIds[i], h.bos)
			}
		}
		m = r
	case uapi.OpSessionLoadPages:
		r := &uapi.SessionLoadPagesRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		m = r
	case uapi.OpSessionResume:
		r := &uapi.SessionResumeRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		if r.Pid < 8 {
			r.Pid = int32(os.Getpid())
		}
		r.TimeoutNs = bound(r.TimeoutNs, time.Millisecond)
		m = r
	case uapi.OpSessionClose:
		r := &uapi.SessionCloseRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		m = r
	case opClaimFile:
		r := &uapi.ClaimFileRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		m = r
	case opClaimDmaBuf:
		r := &uapi.ClaimDmaBufRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		m = r
	case opClaimChannel:
		r := &uapi.ClaimChannelRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.Token = token(r.Token)
		m = r
	case uapi.OpCheckpointIo:
		r := &uapi.CheckpointIoRequest{}
		if proto.Unmarshal(raw, r) != nil {
			return nil
		}
		r.FileId = pick(r.FileId, h.files)
		r.Inode = pick(r.Inode, h.inodes[:2])
		m = r
	default:
		return nil
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}

// claim sends a claim pseudo-step on a new connection to the render node
// and checks the reply; it returns the connection, whose claimed file
// stays frozen until the session resumes it (nothing is sent on it), and
// the dma-buf a dma-buf claim returned.
func claim(t *testing.T, env *ksimtest.Env, op uapi.Op, payload []byte, minor uint32) (conn int, dmabuf int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	ok(t, err)
	ok(t, unix.Connect(fd, &unix.SockaddrUnix{Name: kernelsim.RenderNodePath(env.Dir, minor)}))
	pkt := header(uapi.Magic, uapi.Version, op, 1)
	if err := uapi.Send(fd, append(pkt, payload...)); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
			return -1, -1
		}
		t.Fatalf("send %v: %v", op, err)
	}
	h, reply, rfds, err := recvTimeout(fd, 20*time.Second)
	if err != nil {
		t.Fatalf("%v: %v", op, err)
	}
	checkReply(t, renderReplies, op, 1, h, reply, rfds)
	if h.Status < 0 {
		unix.Close(fd)
		return -1, -1
	}
	if (op == uapi.OpClaimDmaBuf) != (len(rfds) == 1) || len(rfds) > 1 {
		t.Fatalf("%v succeeded with %d descriptors", op, len(rfds))
	}
	if op == uapi.OpClaimDmaBuf {
		unix.Close(fd)
		return -1, rfds[0]
	}
	return fd, -1
}

// controlSeeds are sequences of control requests a real checkpoint makes,
// in the step encoding of FuzzControl.
func controlSeeds() [][]fuzzing.Step {
	c := func(op uapi.Op, m proto.Message, flags uint8, tail ...byte) fuzzing.Step {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		p := binary.AppendUvarint(nil, uint64(len(b)))
		return fuzzing.Step{Op: uint16(op), Flags: flags, Payload: append(append(p, b...), tail...)}
	}
	mappedOpen, mem := oneBOSession(true)
	return [][]fuzzing.Step{
		{
			// CPU mappings: which memfds are BOs', mapped BOs' checksums,
			// a restore that adopts a mapped BO's memory.
			c(uapi.OpIdentifyMemory, &uapi.IdentifyMemoryRequest{Files: []*uapi.MemoryRef{{Ino: 0}, {Dev: 1, Ino: 1 << 40}}}, 0),
			c(uapi.OpPause, &uapi.PauseRequest{FileIds: []uint64{0}, TimeoutNs: int64(time.Second)}, 0),
			c(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{BoIds: []uint64{0, 1}, ChecksumOnly: true}, 0),
			c(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{BoIds: []uint64{0}, ChecksumOnly: true}, ctlFDMemfd),
			c(uapi.OpResume, &uapi.ResumeRequest{FileIds: []uint64{0}}, 0),
			c(uapi.OpSessionOpen, mappedOpen, 0),
			c(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{BoId: 1, Holders: []int32{2, 3, -1}}, ctlFDMemfd, mem...),
			c(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{BoId: 1}, ctlFDMemfd, mem...),
			c(opClaimFile, &uapi.ClaimFileRequest{Inode: 5}, 0),
			c(uapi.OpSessionResume, &uapi.SessionResumeRequest{TimeoutNs: int64(time.Second)}, 0),
			c(uapi.OpSessionClose, &uapi.SessionCloseRequest{}, 0),
		},
		{
			c(uapi.OpSessionOpen, mappedOpen, 0),
			c(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{BoId: 1}, ctlFDMemfd|ctlAsIs, mem...),
			c(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{BoId: 1}, ctlFDPipe),
			c(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{BoId: 1}, ctlFDMemfd, mem[:100]...),
			c(uapi.OpSessionClose, &uapi.SessionCloseRequest{Abort: true}, 0),
		},
		{
			c(uapi.OpIdentify, &uapi.IdentifyRequest{Inodes: []uint64{0, 1, 2, 3}}, 0),
			c(uapi.OpPause, &uapi.PauseRequest{FileIds: []uint64{0, 1}, TimeoutNs: int64(time.Second)}, 0),
			c(uapi.OpCheckpointFile, &uapi.CheckpointFileRequest{FileId: 0}, 0),
			c(uapi.OpCheckpointFile, &uapi.CheckpointFileRequest{FileId: 1}, 0),
			c(uapi.OpCheckpointIo, &uapi.CheckpointIoRequest{FileId: 0, Inode: 0}, ctlFDSocket),
			c(uapi.OpCheckpointIo, &uapi.CheckpointIoRequest{FileId: 1, Inode: 0}, ctlFDSocket|ctlFDPipe),
			c(uapi.OpCheckpointDmaBuf, &uapi.CheckpointDmaBufRequest{Inode: 0}, 0),
			c(uapi.OpDevices, &uapi.DevicesRequest{}, 0),
			c(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{0, 1, 3}}}}, ctlFDMemfd),
			c(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{0}}, {BoIds: []uint64{1}, Offset: 4096}}}, ctlFDMemfd),
			c(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{BoIds: []uint64{0}}, ctlFDMemfd),
			c(uapi.OpResume, &uapi.ResumeRequest{FileIds: []uint64{0, 1}}, 0),
			c(uapi.OpDebug, &uapi.DebugRequest{}, 0),
			c(uapi.OpDebug, &uapi.DebugRequest{}, ctlFDMemfd),
		},
		{
			c(uapi.OpPause, &uapi.PauseRequest{FileIds: []uint64{1}}, 0),
			c(uapi.OpCheckpointFile, &uapi.CheckpointFileRequest{FileId: 1}, 0),
			c(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{Targets: []*uapi.PagesTarget{{BoIds: []uint64{2}, Offset: 1 << 40}}}, ctlFDPipe),
			c(uapi.OpIdentify, &uapi.IdentifyRequest{Inodes: []uint64{0}}, ctlOutOfLine|ctlHangUp),
		},
		{
			c(uapi.OpSessionOpen, &uapi.SessionOpenRequest{}, 0),
			c(uapi.OpSessionLoadPages, &uapi.SessionLoadPagesRequest{}, ctlFDMemfd),
			c(uapi.OpSessionResume, &uapi.SessionResumeRequest{}, 0),
			c(uapi.OpSessionClose, &uapi.SessionCloseRequest{Abort: true}, 0),
			c(uapi.OpSessionClose, &uapi.SessionCloseRequest{}, 0),
			{Op: 0x1ff, Payload: []byte{1, 0}},
			{Op: uint16(uapi.OpIdentify), Flags: ctlRaw, Payload: []byte{1, 0}},
		},
	}
}

// FuzzControl: any sequence of control requests (IDENTIFY, PAUSE, RESUME,
// CHECKPOINT_*, SESSION_* with any content, DEBUG), inline or out of line,
// with any descriptors, interleaved with claims of the sessions it opens,
// on one control connection. Small ids and empty tokens in requests that
// decode stand for the harness's objects and the connection's sessions,
// so that the fuzzer reaches real objects. When the connection goes away,
// what it paused runs again and its sessions are gone, with everything
// they made.
func FuzzControl(f *testing.F) {
	for _, s := range controlSeeds() {
		f.Add(fuzzing.Encode(s))
	}
	env := ksimtest.Start(f, fuzzConfig())
	by := newBystander(f, env)
	base := takeFuzzCensus(env.Kernel)
	f.Fuzz(func(t *testing.T, data []byte) {
		goroutines := runtime.NumGoroutine()
		h := newHarness(t, env)
		c := dialControl(t, env)
		var claimed []int
		for _, s := range fuzzing.Decode(data, 32) {
			if c.gone {
				break
			}
			reqb, tail := splitCtl(s.Payload)
			if s.Flags&(ctlAsIs|ctlRaw) == 0 {
				if b := c.substitute(s.Op, reqb, h); b != nil {
					reqb = b
				}
			}
			if op, isClaim := map[uint16]uapi.Op{opClaimFile: uapi.OpClaimFile, opClaimDmaBuf: uapi.OpClaimDmaBuf, opClaimChannel: uapi.OpClaimChannel}[s.Op]; isClaim {
				minor := uint32(128)
				if s.Flags&ctlOtherDevice != 0 {
					minor = 129
				}
				conn, db := claim(t, env, op, reqb, minor)
				for _, fd := range []int{conn, db} {
					if fd >= 0 {
						claimed = append(claimed, fd)
					}
				}
				continue
			}
			var fds, ours []int // ours: closed after the step
			pipeR, pipeW := -1, -1
			if s.Flags&ctlFDMemfd != 0 {
				var mfd int
				if uapi.Op(s.Op) == uapi.OpSessionAdoptMemory && s.Flags&(ctlAsIs|ctlRaw) == 0 {
					mfd = boMemfd(t, tail) // what criu restores
				} else {
					mfd = memfdOf(t, tail)
				}
				ours = append(ours, mfd)
				fds = append(fds, mfd)
			}
			if s.Flags&ctlFDPipe != 0 {
				var p [2]int
				ok(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
				ours = append(ours, p[1])
				fds = append(fds, p[0])
				pipeR, pipeW = p[0], p[1]
			}
			op := uapi.Op(s.Op)
			if hd, err := uapi.ParseHeader(reqb); s.Flags&ctlRaw != 0 && err == nil {
				op = hd.Op
			}
			// DEBUG writes its dump into the file it is sent: a's socket
			// would then carry it to a's drm file as requests.
			if s.Flags&ctlFDSocket != 0 && op&^uapi.OpOutOfLine != uapi.OpDebug {
				fds = append(fds, h.a.FD())
			}
			if s.Flags&ctlRaw != 0 {
				op, seq := uapi.Op(0), uint32(0)
				if hd, err := uapi.ParseHeader(reqb); err == nil {
					op, seq = hd.Op&^uapi.OpOutOfLine, hd.Seq
				}
				c.send(reqb, op, seq, fds...)
			} else {
				c.call(uapi.Op(s.Op), reqb, s.Flags&ctlOutOfLine != 0, fds...)
			}
			if pipeW >= 0 {
				unix.Close(pipeR)
				if !readEndClosedEverywhere(pipeW) {
					t.Fatalf("the kernel kept the pipe sent with %v", uapi.Op(s.Op))
				}
			}
			uapi.CloseFDs(ours)
			if s.Flags&ctlHangUp != 0 {
				c.close()
			}
		}
		c.close()
		for _, fd := range claimed {
			unix.Close(fd)
		}
		h.usable(t, env)
		h.close()
		backToFuzzBaseline(t, env.Kernel, base, goroutines)
		by.check(t)
	})
}

// boMemfd is a memfd as criu restores a mapped BO's: b, in whole
// pages, with the seals of BO memory.
func boMemfd(t *testing.T, b []byte) int {
	fd, err := unix.MemfdCreate("kernelsim-bo", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	ok(t, err)
	page := os.Getpagesize()
	ok(t, unix.Ftruncate(fd, int64((len(b)+page-1)/page*page)))
	if len(b) > 0 {
		if _, err := unix.Pwrite(fd, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, bomem.SealsRequired)
	ok(t, err)
	return fd
}

// memfdOf is an unsealed memfd holding b: a pages file, or what
// CHECKPOINT_BOS writes into.
func memfdOf(t *testing.T, b []byte) int {
	fd, err := unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC)
	ok(t, err)
	if len(b) > 0 {
		if _, err := unix.Pwrite(fd, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// oneBOSession is a restore of one drm file with one BO, its contents in
// a pages file, or (mapped) the memory of a restored mapping that
// SESSION_ADOPT_MEMORY hands over; and those contents.
func oneBOSession(mapped bool) (*uapi.SessionOpenRequest, []byte) {
	mem := pattern(4096, 0x6d6d6d6d)
	blob, _ := proto.Marshal(&uapi.DriverPrivate{Version: kernelsim.DriverPrivateVersion, Driver: "amdgpu", Contexts: []*uapi.ContextState{{CtxId: 2}}})
	bo := &uapi.BoState{BoId: 1, Size: 4096, Domain: vram, Minor: 128}
	r := &uapi.SessionOpenRequest{
		Bos: []*uapi.BoState{bo},
		Files: []*uapi.RestoreFile{{Inode: 5, State: &uapi.FileCheckpoint{Minor: 128, Driver: "amdgpu", GpuId: kernelsim.DefaultDevice().GPUID,
			DriverPrivate: blob, Handles: []*uapi.HandleState{{Handle: 3, BoId: 1}}, Bos: []*uapi.BoState{bo}}}},
	}
	chunk := &uapi.ContentChunk{Length: 4096, Checksum: uapi.DefaultChecksum.Sum(mem)}
	if mapped {
		chunk.BoId = 1
		r.Contents = []*uapi.BoContents{{BoId: 1, Mapped: true, Chunks: []*uapi.ContentChunk{chunk}}}
	} else {
		r.PagesFiles = []*uapi.PagesFile{{Name: "p", Chunks: []*uapi.ContentChunk{chunk}}}
		r.Contents = []*uapi.BoContents{{BoId: 1}}
	}
	return r, mem
}

// What FuzzClaim's script (its second byte) does with the mapped BOs'
// memory: by default it hands over each one's before the claims, made
// of the pages contents, with no holder.
const (
	adoptLate   = 1 << iota // after the claims
	adoptNone               // never
	adoptHolder             // a child process holds it until the input ends
	adoptTwice              // twice (the second is refused)
)

// What FuzzClaim's script (its first byte) changes in the restore.
const (
	claimLoadLate  = 1 << iota // load the pages after the claims
	claimAbort                 // close the session as a failed restore
	claimNoResume              // never SESSION_RESUME
	claimWrongDev              // claim the first file on the other device
	claimTwice                 // claim every file and dma-buf twice
	claimBadToken              // claims carry a token of no session
	claimHangUp                // the first claimed file's task hangs up before the resume
	claimSkipPages             // never load pages file 0
)

// FuzzClaim: a restore session opened from any SESSION_OPEN request
// (seeded with real checkpoints' requests: BOs, drm files with arbitrary
// handles, mappings, pending I/O and driver blobs with contexts, jobs,
// syncobjs and timelines; mutated as bytes and by structured edits of
// the request and its blobs), pages files of any contents, the claims of its
// files and dma-bufs on new connections in a scripted way, the resume,
// then a sequence of requests on each restored file, and the close. The
// kernel refuses bad states with an error and never panics; a file is
// claimed once; every claim of a dma-buf gets the same file; a resumed
// file answers; an aborted session hangs up its files; and nothing
// outlives the session and its clients.
func FuzzClaim(f *testing.F) {
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	version := fuzzing.Encode([]fuzzing.Step{{Op: uint16(uapi.OpVersion)}})
	for _, mapped := range []bool{false, true} {
		open, mem := oneBOSession(mapped)
		b, _ := proto.Marshal(open)
		f.Add(b, mem, append([]byte{0, 0}, version...), []byte{})
	}
	open, mem := oneBOSession(true)
	b, _ := proto.Marshal(open)
	f.Add(b, mem, []byte{0, adoptLate}, []byte{})
	f.Add(b, mem, []byte{0, adoptHolder}, []byte{})
	f.Add(b, mem, []byte{0, adoptTwice}, []byte{})
	env := ksimtest.Start(f, fuzzConfig())
	by := newBystander(f, env)
	base := takeFuzzCensus(env.Kernel)
	f.Fuzz(func(t *testing.T, open, pages, script, edits []byte) {
		goroutines := runtime.NumGoroutine()
		var mode, adoptMode byte
		if len(script) > 0 {
			mode = script[0]
		}
		if len(script) > 1 {
			adoptMode = script[1]
		}
		var steps []fuzzing.Step
		if len(script) > 2 {
			steps = fuzzing.Decode(script[2:], 16)
		}
		c := dialControl(t, env)
		var r uapi.SessionOpenRequest
		decoded := proto.Unmarshal(open, &r) == nil
		if decoded {
			// Structured edits of the request and its files' driver
			// blobs (see fuzzing.Edit).
			blobs := map[*uapi.FileCheckpoint]*uapi.DriverPrivate{}
			msgs := []proto.Message{&r}
			for _, rf := range r.Files {
				p := &uapi.DriverPrivate{}
				if st := rf.GetState(); st != nil && proto.Unmarshal(st.DriverPrivate, p) == nil {
					blobs[st] = p
					msgs = append(msgs, p)
				}
			}
			fuzzing.Edit(edits, 8, msgs...)
			for _, rf := range r.Files {
				if p, ok := blobs[rf.GetState()]; ok {
					rf.State.DriverPrivate, _ = proto.Marshal(p)
				}
			}
			// Replayed requests are sent by the kernel itself: bound
			// their waits as the steps' are.
			ios := []*uapi.PendingIO{}
			for _, rf := range r.Files {
				ios = append(ios, rf.GetState().GetIo())
			}
			for _, rc := range r.Channels {
				ios = append(ios, rc.GetIo())
			}
			for _, io := range ios {
				if io == nil {
					continue
				}
				io.Request = sanitizePacket(io.Request)
				for _, rq := range io.Requests {
					rq.Packet = sanitizePacket(rq.Packet)
				}
			}
			if b, err := proto.Marshal(&r); err == nil {
				open = b
			}
		}
		reply, errno := c.call(uapi.OpSessionOpen, open, len(open) > 60<<10)
		if errno != 0 {
			c.close()
			backToFuzzBaseline(t, env.Kernel, base, goroutines)
			return
		}
		if !decoded {
			t.Fatal("SESSION_OPEN accepted a request that does not decode")
		}
		sr := reply.(*uapi.SessionOpenReply)
		if len(sr.FileSockets) != len(r.Files) || len(sr.DmabufSockets) != len(r.Dmabufs) || len(sr.ChannelSockets) != len(r.Channels) || len(sr.Token) == 0 {
			t.Fatalf("SESSION_OPEN reply %v for %d files, %d dma-bufs and %d channels", sr, len(r.Files), len(r.Dmabufs), len(r.Channels))
		}
		token := sr.Token
		ctlReq := func(op uapi.Op, m proto.Message, fds ...int) syscall.Errno {
			b, err := proto.Marshal(m)
			ok(t, err)
			_, errno := c.call(op, b, false, fds...)
			return errno
		}
		load := func() {
			for i := range min(len(r.PagesFiles), 4) {
				if i == 0 && mode&claimSkipPages != 0 {
					continue
				}
				fd := memfdOf(t, pages)
				ctlReq(uapi.OpSessionLoadPages, &uapi.SessionLoadPagesRequest{Token: token, PagesFile: uint32(i)}, fd)
				unix.Close(fd)
			}
		}
		if mode&claimLoadLate == 0 {
			load()
		}
		// The memory criu restored for the mapped BOs, as in their pages.
		var holder *exec.Cmd
		defer func() {
			if holder != nil { // on a failure; the input's end waits for it
				holder.Process.Kill()
				holder.Wait()
			}
		}()
		adopt := func() {
			if adoptMode&adoptNone != 0 {
				return
			}
			sizes := map[uint64]uint64{}
			for _, bo := range r.Bos {
				sizes[bo.BoId] = bo.Size
			}
			for _, bc := range r.Contents[:min(len(r.Contents), 8)] {
				size, known := sizes[bc.BoId]
				if !bc.Mapped || !known || size > 64<<20 {
					continue
				}
				mem := make([]byte, size)
				copy(mem, pages)
				var holders []int32
				if adoptMode&adoptHolder != 0 {
					if holder == nil {
						holder = exec.Command("sleep", "3600")
						ok(t, holder.Start())
					}
					holders = []int32{int32(holder.Process.Pid)}
				}
				for i := range 1 + int(adoptMode&adoptTwice>>3) {
					fd := boMemfd(t, mem)
					errno := ctlReq(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{Token: token, BoId: bc.BoId, Holders: holders}, fd)
					unix.Close(fd)
					if i > 0 && errno == 0 {
						t.Fatalf("BO %d's memory adopted twice", bc.BoId)
					}
				}
			}
		}
		if adoptMode&adoptLate == 0 {
			adopt()
		}
		claimTok := token
		if mode&claimBadToken != 0 {
			claimTok = []byte("not a session token")
		}
		// conns are the claimed files and reply channels: what each had in
		// flight is the kernel's to send and replay.
		type claimed struct {
			*renderConn
			io *uapi.PendingIO
		}
		var conns []claimed
		claimConn := func(op uapi.Op, ino uint64, minor uint32, io *uapi.PendingIO) *renderConn {
			var b []byte
			if op == uapi.OpClaimFile {
				b, _ = proto.Marshal(&uapi.ClaimFileRequest{Token: claimTok, Inode: ino})
			} else {
				b, _ = proto.Marshal(&uapi.ClaimChannelRequest{Token: claimTok, Inode: ino})
			}
			conn, _ := claim(t, env, op, b, minor)
			if conn < 0 {
				return nil
			}
			// The replies the task had not read at dump follow the
			// claim's, as they were, oldest first.
			_, replies := pendingLists(io)
			for _, want := range replies {
				pkt, rfds, err := recvPacket(conn, 20*time.Second)
				uapi.CloseFDs(rfds)
				if err != nil {
					t.Fatalf("%v of inode %d: an unread reply: %v", op, ino, err)
				}
				if string(pkt) != string(want.Packet) || len(rfds) != min(int(want.DmabufInode), 1) {
					t.Fatalf("%v of inode %d: an unread reply re-sent as %d bytes with %d fds, was %d bytes with dma-buf %d",
						op, ino, len(pkt), len(rfds), len(want.Packet), want.DmabufInode)
				}
			}
			rc := &renderConn{t: t, fd: conn, seq: 1 << 20, spare: by.dmabuf}
			conns = append(conns, claimed{rc, io})
			if mode&claimTwice != 0 {
				again := dialRender(t, kernelsim.RenderNodePath(env.Dir, minor), -1)
				pkt, err := uapi.Marshal(uapi.Header{Op: op, Seq: 1}, protoOf(op, claimTok, ino))
				ok(t, err)
				ok(t, uapi.Send(again.fd, pkt))
				h, _, rfds, err := recvTimeout(again.fd, 20*time.Second)
				again.close()
				uapi.CloseFDs(rfds)
				// EBUSY, or EIO once the session's contents failed
				// meanwhile (loading goes on after the first claim).
				if err != nil || h.Status >= 0 {
					t.Fatalf("second %v of inode %d: status %d, %v", op, ino, h.Status, err)
				}
			}
			return rc
		}
		minorOf := map[uint64]uint32{}       // file inode -> device
		fileConn := map[uint64]*renderConn{} // file inode -> its claimed connection
		for i, rf := range r.Files[:min(len(r.Files), 8)] {
			minor := rf.GetState().GetMinor()
			minorOf[rf.Inode] = minor
			if i == 0 && mode&claimWrongDev != 0 {
				minor ^= 1
			}
			if kernelsim.RenderNodePath(env.Dir, minor) != sr.FileSockets[i] && mode&claimWrongDev == 0 {
				t.Fatalf("file inode %d of renderD%d is to be claimed at %s", rf.Inode, rf.GetState().GetMinor(), sr.FileSockets[i])
			}
			if env.Kernel.Device(minor) != nil {
				if fc := claimConn(uapi.OpClaimFile, rf.Inode, minor, rf.State.GetIo()); fc != nil {
					fileConn[rf.Inode] = fc
				}
			}
		}
		for _, rc := range r.Channels[:min(len(r.Channels), 8)] {
			if minor, ok := minorOf[rc.FileInode]; ok {
				ch := claimConn(uapi.OpClaimChannel, rc.Inode, minor, rc.GetIo())
				if fc := fileConn[rc.FileInode]; ch != nil && fc != nil {
					fc.chans = append(fc.chans, ch) // goes with its file
				}
			}
		}
		var dmabufs []int
		inodeOf := map[uint64]uint64{} // dump-time inode -> restored dma-buf's
		for i, rd := range r.Dmabufs[:min(len(r.Dmabufs), 8)] {
			for range 1 + int(mode&claimTwice>>4) {
				minor := uint32(128)
				if sr.DmabufSockets[i] == kernelsim.RenderNodePath(env.Dir, 129) {
					minor = 129
				}
				b, _ := proto.Marshal(&uapi.ClaimDmaBufRequest{Token: claimTok, Inode: rd.Inode})
				_, db := claim(t, env, uapi.OpClaimDmaBuf, b, minor)
				if db < 0 {
					continue
				}
				dmabufs = append(dmabufs, db)
				ino := inode(t, db)
				if prev, seen := inodeOf[rd.Inode]; seen && prev != ino {
					t.Fatalf("dma-buf inode %d claimed as two files, %d and %d", rd.Inode, prev, ino)
				}
				inodeOf[rd.Inode] = ino
			}
		}
		if mode&claimLoadLate != 0 {
			load()
		}
		if adoptMode&adoptLate != 0 {
			adopt()
		}
		if mode&claimHangUp != 0 && len(conns) > 0 {
			conns[0].close()
		}
		resumed := false
		if mode&claimNoResume == 0 {
			resumed = ctlReq(uapi.OpSessionResume, &uapi.SessionResumeRequest{Token: token, Pid: int32(os.Getpid()), TimeoutNs: int64(5 * time.Second)}) == 0
		}
		if resumed {
			if len(conns) == 0 {
				t.Fatal("SESSION_RESUME succeeded for a task that claimed no file")
			}
			for _, cn := range conns {
				if cn.gone {
					continue
				}
				// The requests caught in flight are replayed, maybe
				// concurrently: their replies come first, in any order.
				reqs, _ := pendingLists(cn.io)
				want := map[[2]uint32]int{}
				for _, rq := range reqs {
					if h, err := uapi.ParseHeader(rq); err == nil {
						want[[2]uint32{uint32(h.Op), h.Seq}]++
					}
				}
				for range reqs {
					h, payload, rfds, err := recvTimeout(cn.fd, 20*time.Second)
					if err != nil {
						t.Fatalf("a replayed request: %v", err)
					}
					key := [2]uint32{uint32(h.Op), h.Seq}
					if want[key] == 0 {
						uapi.CloseFDs(rfds)
						t.Fatalf("a reply of op %v seq %d to no replayed request", h.Op, h.Seq)
					}
					want[key]--
					checkReply(t, renderReplies, h.Op, h.Seq, h, payload, rfds)
					uapi.CloseFDs(rfds)
				}
			}
			for i, cn := range conns {
				if cn.gone {
					continue
				}
				if len(conns) > 1 {
					cn.peer = conns[(i+1)%len(conns)].renderConn
				}
				for _, s := range steps {
					cn.step(s)
				}
				cn.alive()
			}
		}
		abort := mode&claimAbort != 0
		ctlReq(uapi.OpSessionClose, &uapi.SessionCloseRequest{Token: token, Abort: abort})
		if abort {
			// The session's files are destroyed and their tasks hung up.
			for _, cn := range conns {
				if cn.gone {
					continue
				}
				if _, _, rfds, err := recvTimeout(cn.fd, 20*time.Second); err == nil || !isHangUp(err) {
					uapi.CloseFDs(rfds)
					t.Fatalf("a connection of an aborted session is still connected: %v", err)
				}
			}
		}
		c.close()
		for _, cn := range conns {
			cn.close()
		}
		uapi.CloseFDs(dmabufs)
		if holder != nil {
			holder.Process.Kill()
			holder.Wait()
			holder = nil
		}
		backToFuzzBaseline(t, env.Kernel, base, goroutines)
		by.check(t)
	})
}

// sanitizePacket bounds the waits of a request packet (see sanitize).
func sanitizePacket(pkt []byte) []byte {
	h, err := uapi.ParseHeader(pkt)
	if err != nil {
		return pkt
	}
	return append(pkt[:uapi.HeaderSize:uapi.HeaderSize], sanitize(h.Op, pkt[uapi.HeaderSize:])...)
}

// pendingLists is what a connection had in flight: the requests to replay
// and the replies to send again (format 2 images held one of each in
// fields of their own).
func pendingLists(io *uapi.PendingIO) ([][]byte, []*uapi.UnreadReply) {
	var reqs [][]byte
	if len(io.GetRequest()) > 0 {
		reqs = append(reqs, io.GetRequest())
	}
	for _, r := range io.GetRequests() {
		reqs = append(reqs, r.GetPacket())
	}
	var replies []*uapi.UnreadReply
	if len(io.GetUnreadReply()) > 0 {
		replies = append(replies, &uapi.UnreadReply{Packet: io.UnreadReply, DmabufInode: io.UnreadReplyDmabufInode})
	}
	return reqs, append(replies, io.GetUnreadReplies()...)
}

// protoOf is the claim request of op.
func protoOf(op uapi.Op, token []byte, ino uint64) proto.Message {
	if op == uapi.OpClaimFile {
		return &uapi.ClaimFileRequest{Token: token, Inode: ino}
	}
	return &uapi.ClaimChannelRequest{Token: token, Inode: ino}
}

// recvPacket reads one packet as it is, with its descriptors.
func recvPacket(fd int, timeout time.Duration) ([]byte, []int, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, int(timeout.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("no packet within %v", timeout)
		}
		break
	}
	buf := make([]byte, uapi.MaxMessage)
	n, fds, err := uapi.Recv(fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		return nil, nil, err
	}
	return buf[:n], fds, nil
}

// isHangUp tells recvTimeout's report of a connection the kernel closed.
func isHangUp(err error) bool {
	return err != nil && (err.Error() == "connection closed by the kernel" || errors.Is(err, unix.ECONNRESET))
}
