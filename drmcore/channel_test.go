package drmcore_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// rawCall sends one request on socket fd without reading its reply.
func rawCall(t testing.TB, fd int, op uapi.Op, seq uint32, m proto.Message, fds ...int) {
	t.Helper()
	pkt, err := uapi.Marshal(uapi.Header{Op: op, Seq: seq}, m)
	must(t, err)
	must(t, uapi.Send(fd, pkt, fds...))
}

// rawReply reads the next packet on fd, failing after a generous time.
func rawReply(t testing.TB, fd int) uapi.Header {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 20000); err != nil || n == 0 {
		t.Fatalf("no reply on fd %d: %v", fd, err)
	}
	buf := make([]byte, uapi.MaxMessage)
	n, fds, err := uapi.Recv(fd, buf, 0)
	must(t, err)
	uapi.CloseFDs(fds)
	h, err := uapi.ParseHeader(buf[:n])
	must(t, err)
	return h
}

// TestReplyChannelRoundTrip: a drm file is shared (as by a forked child):
// besides its own socket, a reply channel is attached to it, and at dump
// the channel has a wait in flight and a reply unread. The dump writes a
// channel image holding that traffic; the restore recreates the channel
// on the same file (claimed before or after the file), sends the unread
// reply again and replays the wait, which the file's own socket then
// ends.
func TestReplyChannelRoundTrip(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	s := ck(t).u32(d.SyncobjCreate(false))
	ch, err := uapi.DialSocket(kernelsim.RenderNodePath(env.Dir, 128))
	must(t, err)
	rawCall(t, ch, uapi.OpAttach, 1, &uapi.AttachRequest{}, d.FD())
	if h := rawReply(t, ch); h.Status != 0 {
		t.Fatalf("ATTACH: status %d", h.Status)
	}
	rawCall(t, ch, uapi.OpSyncobjWait, 7, &uapi.SyncobjWaitRequest{Handles: []uint32{s}, TimeoutNs: -1, WaitAll: true, WaitForSubmit: true})
	rawCall(t, ch, uapi.OpGemCreate, 8, &uapi.GemCreateRequest{Size: page, Domain: uapi.Domain_DOMAIN_GTT})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n, _ := unix.IoctlGetInt(ch, unix.SIOCINQ); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the GEM_CREATE reply never came")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fileIno, chIno := inode(t, d.FD()), inode(t, ch)

	for _, order := range []string{"channel first", "file first"} {
		t.Run(order, func(t *testing.T) {
			dir, err := dump(t, env)
			must(t, err)
			dd, err := images.OpenDir(dir)
			must(t, err)
			defer dd.Close()
			img := &images.DrmChannel{}
			must(t, dd.Read(images.ChannelName(chIno), img))
			if img.FileInode != fileIno || len(img.Io.GetRequests()) != 1 || len(img.Io.GetUnreadReplies()) != 1 {
				t.Fatalf("channel image: file inode %d (want %d), in flight %v", img.FileInode, fileIno, img.Io)
			}
			inv := &images.Inventory{}
			must(t, dd.Read(images.InventoryName, inv))
			if len(inv.Channels) != 1 || inv.Channels[0] != chIno || !inv.Complete {
				t.Fatalf("inventory: channels %v, complete %v", inv.Channels, inv.Complete)
			}

			perm := []int{1, 0} // the entries list the file, then the channel
			if order == "file first" {
				perm = []int{0, 1}
			}
			fds, err := restore(t, env, dir, drmcoretest.InOrder(perm), false)
			must(t, err)
			rch, rfile := fds[chIno], fds[fileIno]
			if h := rawReply(t, rch); h.Seq != 8 || h.Status != 0 {
				t.Fatalf("first packet on the restored channel: seq %d status %d, want the unread reply 8", h.Seq, h.Status)
			}
			r := libdrm.FromFD(rfile)
			must(t, r.SyncobjSignal(s))
			if h := rawReply(t, rch); h.Seq != 7 || h.Status != 0 {
				t.Fatalf("replayed wait: seq %d status %d", h.Seq, h.Status)
			}
			// The restored channel serves the same file as its socket.
			rawCall(t, rch, uapi.OpGemInfo, 9, &uapi.GemInfoRequest{Handle: 1})
			if h := rawReply(t, rch); h.Seq != 9 || h.Status != 0 {
				t.Fatalf("GEM_INFO of the handle the unread reply created, on the channel: seq %d status %d", h.Seq, h.Status)
			}
		})
	}
}
