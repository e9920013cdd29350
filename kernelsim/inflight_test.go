package kernelsim_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
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

// attachRaw connects a reply channel to the drm file of socket fd.
func attachRaw(t testing.TB, env *ksimtest.Env, fd int) *raw {
	t.Helper()
	ch := dialRaw(t, kernelsim.RenderNodePath(env.Dir, 128))
	ch.request(uapi.OpAttach, 1, &uapi.AttachRequest{}, fd)
	if h, _, _ := ch.recv(); h.Status != 0 {
		t.Fatalf("ATTACH: status %d", h.Status)
	}
	return ch
}

// inflight is traffic in flight on a drm file's own socket and on one of
// its reply channels: requests waiting for fences, submits waiting for
// their paused context, requests not read by the kernel yet would be
// there too, and replies the client has not read.
type inflight struct {
	main, ch          int // the client sockets
	mainWait, chWait  []uint32
	mainReply, chRead []uint32
	s3                uint32 // the syncobj nothing signals
}

// makeInflight puts the traffic in flight: d's file is left paused.
func makeInflight(t *testing.T, env *ksimtest.Env, c *ctl.Client, d *libdrm.Device) (*inflight, uint64) {
	h := must(d.BOCreate(4096, vram, 0, 0))
	ctx := must(d.CtxCreate(0))
	s1, s2, s3 := must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false))
	id := fileID(t, c, d)
	m := &raw{t: t, fd: d.FD()}
	ch := attachRaw(t, env, d.FD())
	wfs := func(s uint32) *uapi.SyncobjWaitRequest {
		return &uapi.SyncobjWaitRequest{Handles: []uint32{s}, TimeoutNs: -1, WaitAll: true, WaitForSubmit: true}
	}
	sub := func(s uint32, v uint32) *uapi.SubmitRequest {
		return &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)}, Commands: []*uapi.Command{fill(0, 0, 4096, v)}, OutSyncobjs: []uint32{s}}
	}
	m.request(uapi.OpSyncobjWait, 101, wfs(s1))
	m.request(uapi.OpSyncobjWait, 102, wfs(s2))
	waitingIn(t, env.Kernel, id, 2)
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	m.request(uapi.OpSubmit, 103, sub(s1, 1))
	ch.request(uapi.OpSubmit, 201, sub(s2, 2))
	ch.request(uapi.OpSyncobjWait, 202, wfs(s3))
	waitingIn(t, env.Kernel, id, 5)
	m.request(uapi.OpGemCreate, 104, &uapi.GemCreateRequest{Size: 8192, Domain: gtt})
	ch.request(uapi.OpGemInfo, 203, &uapi.GemInfoRequest{Handle: h})
	eventually(t, "the replies to be sent", func() bool {
		a, _ := unix.IoctlGetInt(m.fd, unix.SIOCINQ)
		b, _ := unix.IoctlGetInt(ch.fd, unix.SIOCINQ)
		return a > 0 && b > 0
	})
	return &inflight{main: m.fd, ch: ch.fd, mainWait: []uint32{101, 102, 103}, chWait: []uint32{201, 202},
		mainReply: []uint32{104}, chRead: []uint32{203}, s3: s3}, id
}

// seqs lists the sequence numbers of packets.
func seqs(t testing.TB, pkts [][]byte) []uint32 {
	t.Helper()
	var out []uint32
	for _, p := range pkts {
		out = append(out, must(uapi.ParseHeader(p)).Seq)
	}
	return out
}

func requestPackets(io *uapi.PendingIO) [][]byte {
	var out [][]byte
	for _, r := range io.GetRequests() {
		out = append(out, r.Packet)
	}
	return out
}

func replyPackets(io *uapi.PendingIO) [][]byte {
	var out [][]byte
	for _, r := range io.GetUnreadReplies() {
		out = append(out, r.Packet)
	}
	return out
}

// answeredOnce reads replies on fd until it has one for each of want,
// checking that each comes exactly once and nothing else comes; the
// replies in first come first, in that order.
func answeredOnce(t *testing.T, fd int, first, want []uint32) {
	t.Helper()
	var got []uint32
	for len(got) < len(want) {
		h, _, fds, err := recvTimeout(fd, 20*time.Second)
		uapi.CloseFDs(fds)
		if err != nil {
			t.Fatalf("replies %v so far of %v: %v", got, want, err)
		}
		if h.Status != 0 {
			t.Fatalf("reply seq %d: status %d", h.Seq, h.Status)
		}
		if slices.Contains(got, h.Seq) || !slices.Contains(want, h.Seq) {
			t.Fatalf("reply seq %d: not expected once more (got %v, want %v)", h.Seq, got, want)
		}
		got = append(got, h.Seq)
	}
	if !slices.Equal(got[:len(first)], first) {
		t.Fatalf("replies %v: the unread ones %v do not come first", got, first)
	}
	if h, _, _, err := recvTimeout(fd, 100*time.Millisecond); err == nil {
		t.Fatalf("an extra reply: seq %d", h.Seq)
	}
}

// TestCheckpointManyInFlight: several requests in flight on one drm file
// at checkpoint time, on its own socket and on a reply channel: waits for
// fences, submits waiting for their paused context, replies not read. The
// checkpoint records each, per connection, in arrival order; after
// --leave-running or after a restore, each request is answered exactly
// once on its own connection, behind the unread replies.
func TestCheckpointManyInFlight(t *testing.T) {
	for _, restore := range []bool{false, true} {
		name := "leave running"
		if restore {
			name = "restore"
		}
		t.Run(name, func(t *testing.T) {
			env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
			c := ctlClient(t, env)
			base := takeCensus(env.Kernel)
			d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
			in, id := makeInflight(t, env, c, d)
			cp := must(c.CheckpointFile(id))
			ioMain := must(c.CheckpointIO(id, inode(t, in.main), in.main))
			ioCh := must(c.CheckpointIO(id, inode(t, in.ch), in.ch))
			if got := seqs(t, requestPackets(ioMain)); !slices.Equal(got, in.mainWait) {
				t.Errorf("requests in flight on the file's socket: %v, want %v", got, in.mainWait)
			}
			if got := seqs(t, requestPackets(ioCh)); !slices.Equal(got, in.chWait) {
				t.Errorf("requests in flight on the channel: %v, want %v", got, in.chWait)
			}
			if got := seqs(t, replyPackets(ioMain)); !slices.Equal(got, in.mainReply) {
				t.Errorf("unread replies on the file's socket: %v, want %v", got, in.mainReply)
			}
			if got := seqs(t, replyPackets(ioCh)); !slices.Equal(got, in.chRead) {
				t.Errorf("unread replies on the channel: %v, want %v", got, in.chRead)
			}
			// A socket that is not the connection's is refused.
			if _, err := c.CheckpointIO(id, inode(t, in.main), in.ch); err == nil {
				t.Error("CHECKPOINT_IO took the channel's socket for the file's")
			}
			if t.Failed() {
				t.FailNow()
			}
			mainFD, chFD := in.main, in.ch
			mainIno, chIno := inode(t, in.main), inode(t, in.ch)
			if restore {
				img := &image{bos: map[uint64]*uapi.BoState{}, offsets: map[uint64]uint64{}, pages: filepath.Join(t.TempDir(), "pages")}
				cp.Io = ioMain
				img.files = append(img.files, &uapi.RestoreFile{Inode: inode(t, in.main), State: cp})
				img.channels = append(img.channels, &uapi.RestoreChannel{Inode: inode(t, in.ch), FileInode: inode(t, in.main), Io: ioCh})
				for _, b := range cp.Bos {
					img.addBO(b)
				}
				f := must(os.Create(img.pages))
				r := must(checkpointInto(c, img.order, f, uapi.DefaultChecksum))
				f.Close()
				img.chunks = r.Chunks
				var off uint64
				for _, id := range img.order {
					img.offsets[id] = off
					off += img.bos[id].Size
				}
				// The process dies: criu kills it after the dump.
				unix.Shutdown(in.ch, unix.SHUT_RDWR)
				d.Close()
				ok(t, c.Resume([]uint64{id}))
				backToBaseline(t, env.Kernel, base)

				ss := openSession(t, env, c, img)
				// The channel's task claims first: it creates the file.
				chFD = must(ss.claimChannelRaw(chIno, mainIno))
				defer unix.Close(chFD)
				mainFD = must(ss.claimRaw(mainIno))
				defer unix.Close(mainFD)
				if files := env.Kernel.Debug().Files; len(files) != 1 || len(files[0].Channels) != 1 {
					t.Fatalf("the restored file and its channel: %+v", files)
				}
				ss.resume()
				ss.close(false)
			} else {
				ok(t, c.Resume([]uint64{id}))
			}
			// Nothing signals s3: the channel's wait on it goes on until
			// the channel signals it.
			sig := must(uapi.Marshal(uapi.Header{Op: uapi.OpSyncobjSignal, Seq: 204}, &uapi.SyncobjHandleRequest{Handle: in.s3}))
			ok(t, uapi.Send(chFD, sig))
			answeredOnce(t, mainFD, in.mainReply, append(slices.Clone(in.mainReply), in.mainWait...))
			answeredOnce(t, chFD, in.chRead, append(slices.Clone(in.chRead), append(in.chWait, 204)...))
			if !restore {
				d.Close()
			}
		})
	}
}

// TestCheckpointClientNotReading: a client sends many requests with large
// replies and reads none: its socket fills up, the kernel holds replies it
// cannot send yet and stops reading requests. A checkpoint then records,
// in order, the replies sent and unread, the replies not sent yet and the
// requests never read; after restore the client reads every reply once,
// in order.
func TestCheckpointClientNotReading(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	h := must(d.BOCreate(1<<20, gtt, 0, 0))
	ok(t, d.Write(h, 0, pattern(1<<20, 0x600dd00d)))
	id := fileID(t, c, d)
	m := &raw{t: t, fd: d.FD()}
	const n = 40
	var all []uint32
	for i := range n {
		seq := uint32(1000 + i)
		all = append(all, seq)
		m.request(uapi.OpGemPread, seq, &uapi.GemPreadRequest{Handle: h, Offset: uint64(i) * 4096, Length: uapi.MaxData})
	}
	// The kernel stops reading once replies wait to be sent; give it
	// time to get there.
	eventually(t, "the client's socket to fill up", func() bool {
		inq, _ := unix.IoctlGetInt(m.fd, unix.SIOCINQ)
		return inq > 2*uapi.MaxData
	})
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	cp := must(c.CheckpointFile(id))
	io := must(c.CheckpointIO(id, inode(t, m.fd), m.fd))
	replies, reqs := seqs(t, replyPackets(io)), seqs(t, requestPackets(io))
	if got := append(slices.Clone(replies), reqs...); !slices.Equal(got, all) {
		t.Fatalf("unread replies %v then requests %v: want %v in order", replies, reqs, all)
	}
	if len(replies) == 0 {
		t.Fatal("no unread reply recorded")
	}
	t.Logf("%d replies unread, %d requests not read", len(replies), len(reqs))

	img := &image{bos: map[uint64]*uapi.BoState{}, offsets: map[uint64]uint64{}, pages: filepath.Join(t.TempDir(), "pages")}
	cp.Io = io
	ino := inode(t, m.fd)
	img.files = append(img.files, &uapi.RestoreFile{Inode: ino, State: cp})
	for _, b := range cp.Bos {
		img.addBO(b)
	}
	f := must(os.Create(img.pages))
	img.chunks = must(checkpointInto(c, img.order, f, uapi.DefaultChecksum)).Chunks
	f.Close()
	d.Close()
	ok(t, c.Resume([]uint64{id}))
	backToBaseline(t, env.Kernel, base)

	ss := openSession(t, env, c, img)
	fd := must(ss.claimRaw(ino))
	defer unix.Close(fd)
	ss.resume()
	ss.close(false)
	for i, seq := range all {
		h, payload, _, err := recvTimeout(fd, 20*time.Second)
		ok(t, err)
		var r uapi.GemPreadReply
		if h.Seq != seq || h.Status != 0 || proto.Unmarshal(payload, &r) != nil || !bytes.Equal(r.Data, pattern(1<<20, 0x600dd00d)[i*4096:i*4096+uapi.MaxData]) {
			t.Fatalf("reply %d: seq %d status %d, want seq %d with the BO's bytes", i, h.Seq, h.Status, seq)
		}
	}
	if h, _, _, err := recvTimeout(fd, 100*time.Millisecond); err == nil {
		t.Fatalf("an extra reply: seq %d", h.Seq)
	}
}
