package kernelsim_test

import (
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// TestRestoreRefusesUnhonourableInFlight: a restore whose files had
// traffic in flight that could not be honoured fails, at SESSION_OPEN or
// at the claim, creating nothing: a request or an unread reply that is no
// packet of the protocol, or an unread reply carrying a dma-buf the
// session does not restore. FuzzClaim found that such a file was claimed
// and its reply dropped (or garbage sent): the restored task would have
// waited for its reply forever.
func TestRestoreRefusesUnhonourableInFlight(t *testing.T) {
	env := ksimtest.Start(t, fuzzConfig())
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	blob, _ := proto.Marshal(&uapi.DriverPrivate{Version: kernelsim.DriverPrivateVersion, Driver: "amdgpu"})
	version, _ := uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 4}, &uapi.VersionReply{})
	export, _ := uapi.Marshal(uapi.Header{Op: uapi.OpPrimeHandleToFd, Seq: 5}, &uapi.Empty{})
	bo := &uapi.BoState{BoId: 1, Size: 4096, Domain: vram, Minor: 128, DmabufInode: 77}
	for _, tc := range []struct {
		name string
		io   *uapi.PendingIO
	}{
		{"garbage request", &uapi.PendingIO{Requests: []*uapi.PendingRequest{{Packet: []byte("KSIZ not a packet")}}}},
		{"garbage reply", &uapi.PendingIO{UnreadReplies: []*uapi.UnreadReply{{Packet: []byte{1, 2, 3}}}}},
		{"huge reply", &uapi.PendingIO{UnreadReplies: []*uapi.UnreadReply{{Packet: append(version, make([]byte, uapi.MaxMessage)...)}}}},
		{"unknown dma-buf", &uapi.PendingIO{UnreadReplies: []*uapi.UnreadReply{{Packet: export, DmabufInode: 78, Bo: bo}}}},
		{"dma-buf of another BO", &uapi.PendingIO{UnreadReplies: []*uapi.UnreadReply{{Packet: export, DmabufInode: 77, Bo: &uapi.BoState{BoId: 2, Size: 4096, Domain: vram, Minor: 128, DmabufInode: 77}}}}},
		{"format 3 garbage request", &uapi.PendingIO{Request: []byte("KSIZ not a packet")}},
		{"format 3 unknown dma-buf", &uapi.PendingIO{UnreadReply: export, UnreadReplyDmabufInode: 78, UnreadReplyBo: bo}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.OpenSession(&uapi.SessionOpenRequest{
				Bos:        []*uapi.BoState{bo},
				PagesFiles: []*uapi.PagesFile{{Name: "p", Chunks: []*uapi.ContentChunk{{Length: 4096, Checksum: uapi.DefaultChecksum.Sum(make([]byte, 4096))}}}},
				Contents:   []*uapi.BoContents{{BoId: 1}},
				Files: []*uapi.RestoreFile{{Inode: 5, State: &uapi.FileCheckpoint{Minor: 128, Driver: "amdgpu", DriverPrivate: blob, Io: tc.io,
					Handles: []*uapi.HandleState{{Handle: 1, BoId: 1}}, Bos: []*uapi.BoState{bo}}}},
			})
			if err != nil {
				t.Logf("SESSION_OPEN refused it: %v", err)
				backToBaseline(t, env.Kernel, base)
				return
			}
			pages := os.NewFile(uintptr(memfdOf(t, make([]byte, 4096))), "pages")
			ok(t, c.LoadPages(r.Token, 0, pages))
			pages.Close()
			d := dialRender(t, r.FileSockets[0], -1)
			pkt, err := uapi.Marshal(uapi.Header{Op: uapi.OpClaimFile, Seq: 1}, &uapi.ClaimFileRequest{Token: r.Token, Inode: 5})
			ok(t, err)
			ok(t, uapi.Send(d.fd, pkt))
			h, payload, fds, err := recvTimeout(d.fd, 20*time.Second)
			ok(t, err)
			uapi.CloseFDs(fds)
			d.close()
			var e uapi.ErrorReply
			proto.Unmarshal(payload, &e)
			if h.Status >= 0 {
				t.Fatalf("the claim succeeded")
			}
			t.Logf("the claim was refused: %s", e.Message)
			ok(t, c.CloseSession(r.Token, true))
			backToBaseline(t, env.Kernel, base)
		})
	}
}
