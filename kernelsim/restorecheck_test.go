package kernelsim_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// goodRequest is a small restore request the checks pass: BO 1 private,
// BO 2 exported as dma-buf 500, a drm file with a handle on each (2 in
// its PRIME table), two mappings and a version request in flight, the
// dma-buf, and every byte of both BOs in checksummed chunks.
func goodRequest(t *testing.T) *uapi.SessionOpenRequest {
	t.Helper()
	bo1 := &uapi.BoState{BoId: 1, Size: 8192, Domain: vram, Minor: 128}
	bo2 := &uapi.BoState{BoId: 2, Size: 4096, Domain: gtt, Minor: 128, DmabufInode: 500}
	blob, err := proto.Marshal(&uapi.DriverPrivate{Version: kernelsim.DriverPrivateVersion, Driver: "amdgpu"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 7}, &uapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sum := make([]byte, uapi.DefaultChecksum.Size())
	return &uapi.SessionOpenRequest{
		Bos: []*uapi.BoState{bo1, bo2},
		Files: []*uapi.RestoreFile{{Inode: 100, State: &uapi.FileCheckpoint{
			Minor: 128, Driver: "amdgpu",
			Handles: []*uapi.HandleState{{Handle: 1, BoId: 1}, {Handle: 2, BoId: 2, Prime: true}},
			Bos:     []*uapi.BoState{proto.Clone(bo1).(*uapi.BoState), proto.Clone(bo2).(*uapi.BoState)},
			Mappings: []*uapi.VaMapping{
				{Handle: 1, Va: 0x100000, Size: 8192},
				{Handle: 2, Va: 0x200000, Size: 4096},
			},
			DriverPrivate: blob,
			Io:            &uapi.PendingIO{Request: req},
		}}},
		Dmabufs:    []*uapi.RestoreDmaBuf{{Inode: 500, BoId: 2}},
		PagesFiles: []*uapi.PagesFile{{Name: "drm-pages-1.img", Chunks: []*uapi.ContentChunk{{Offset: 0, Length: 12288, Checksum: sum}}}},
		Contents:   []*uapi.BoContents{{BoId: 1, Offset: 0}, {BoId: 2, Offset: 8192}},
	}
}

var oneDevice = []*uapi.DeviceInfo{{Minor: 128, Driver: "amdgpu", VramSize: 1 << 30, GttSize: 1 << 30}}

func packet(t *testing.T, h uapi.Header, m proto.Message) []byte {
	t.Helper()
	b, err := uapi.Marshal(h, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckRestore: each kind of damage to a restore request is a problem
// naming the object and the field, and the good request has none.
func TestCheckRestore(t *testing.T) {
	if p := kernelsim.CheckRestore(goodRequest(t), oneDevice); len(p) != 0 {
		t.Fatalf("problems in a good request: %v", p)
	}
	withChannel := goodRequest(t)
	withChannel.Channels = []*uapi.RestoreChannel{{Inode: 200, FileInode: 100, Io: &uapi.PendingIO{
		Requests:      []*uapi.PendingRequest{{Packet: withChannel.Files[0].State.Io.Request}},
		UnreadReplies: []*uapi.UnreadReply{{Packet: packet(t, uapi.Header{Op: uapi.OpPrimeHandleToFd, Seq: 9}, &uapi.Empty{}), DmabufInode: 500, Bo: withChannel.Bos[1]}},
	}}}
	if p := kernelsim.CheckRestore(withChannel, oneDevice); len(p) != 0 {
		t.Fatalf("problems in a good request with a reply channel: %v", p)
	}
	file := func(r *uapi.SessionOpenRequest) *uapi.FileCheckpoint { return r.Files[0].State }
	for _, tc := range []struct {
		name  string
		edit  func(r *uapi.SessionOpenRequest)
		want  string
		errno syscall.Errno
	}{
		{"file on minor 129", func(r *uapi.SessionOpenRequest) { file(r).Minor = 129 },
			"drm file inode 100 minor: renderD129 is not one of the devices (renderD128 amdgpu)", syscall.ENODEV},
		{"BO on minor 129", func(r *uapi.SessionOpenRequest) { r.Bos[0].Minor = 129 },
			"BO 1 minor: renderD129 is not one of the devices", syscall.ENODEV},
		{"file of another driver", func(r *uapi.SessionOpenRequest) { file(r).Driver = "xe" },
			`drm file inode 100 driver: "xe", but renderD128 is amdgpu`, syscall.EINVAL},
		// Found by FuzzClaim: the check went on to index the pages file
		// and panicked the daemon.
		{"chunks of a BO in no pages file", func(r *uapi.SessionOpenRequest) {
			r.Contents[0].Chunks = []*uapi.ContentChunk{{Length: 8192, Checksum: make([]byte, uapi.DefaultChecksum.Size()), BoId: 1}}
			r.Contents[0].PagesFile = 7
		}, "BO 1 contents.chunks: set, but the BO's contents are in a pages file (mapped is false)", syscall.EINVAL},
		{"doubled BO size", func(r *uapi.SessionOpenRequest) { r.Bos[0].Size *= 2; file(r).Bos[0].Size *= 2 },
			"BO 1 contents: bytes [12288, 16384) of its 16384 are covered by no checksummed chunk of drm-pages-1.img", syscall.EINVAL},
		{"overlapping VAs", func(r *uapi.SessionOpenRequest) { file(r).Mappings[1].Va = 0x101000 },
			"drm file inode 100 mappings[1]: [0x101000, 0x102000) overlaps mappings[0] [0x100000, 0x102000)", syscall.EINVAL},
		{"mapping larger than its BO", func(r *uapi.SessionOpenRequest) { file(r).Mappings[1].Size = 8192 },
			"mappings[1].size: 0x2000 bytes from offset 0x0 do not fit in BO 2 (0x1000 bytes)", syscall.EINVAL},
		{"mapping offset past the end", func(r *uapi.SessionOpenRequest) { file(r).Mappings[0].BoOffset = 0x10000 },
			"mappings[0].bo_offset: 0x10000 is past the end of BO 1 (0x2000 bytes)", syscall.EINVAL},
		{"mapping not page-aligned", func(r *uapi.SessionOpenRequest) { file(r).Mappings[0].Va = 0x100010 },
			"mappings[0].va: 0x100010 is not aligned to the 4096-byte page", syscall.EINVAL},
		{"mapping outside the address space", func(r *uapi.SessionOpenRequest) { file(r).Mappings[0].Va = 1<<64 - 4096 },
			"is outside the amdgpu address space", syscall.EINVAL},
		{"import attachment of the file's own device's BO", func(r *uapi.SessionOpenRequest) { file(r).Handles[1].Attachment = true },
			"handles[1].attachment: handle 2: BO 2 is of the file's own device renderD128, whose import is the BO itself, not an attachment", syscall.EINVAL},
		{"import attachment outside the PRIME table", func(r *uapi.SessionOpenRequest) {
			file(r).Handles[1].Attachment, file(r).Handles[1].Prime = true, false
		}, "handles[1].attachment: handle 2 is an import attachment but not in the PRIME table", syscall.EINVAL},
		{"mapping of no handle", func(r *uapi.SessionOpenRequest) { file(r).Mappings[0].Handle = 9 },
			"mappings[0].handle: 9 is not a handle of the file", syscall.EINVAL},
		{"garbage in-flight request", func(r *uapi.SessionOpenRequest) { file(r).Io.Request = []byte("garbage that is not a packet") },
			"drm file inode 100 io.request: not a packet: bad magic", syscall.EINVAL},
		{"short in-flight request", func(r *uapi.SessionOpenRequest) { file(r).Io.Request = []byte{1, 2} },
			"io.request: not a packet: short packet", syscall.EINVAL},
		{"in-flight request of no ioctl", func(r *uapi.SessionOpenRequest) {
			file(r).Io.Request = packet(t, uapi.Header{Op: 999}, &uapi.Empty{})
		}, "io.request: op(999) is not a render-node request", syscall.EINVAL},
		{"in-flight claim", func(r *uapi.SessionOpenRequest) {
			file(r).Io.Request = packet(t, uapi.Header{Op: uapi.OpClaimFile}, &uapi.ClaimFileRequest{Inode: 5})
		}, "io.request: CLAIM_FILE is not a render-node request a task can have in flight", syscall.EINVAL},
		{"in-flight request with an fd", func(r *uapi.SessionOpenRequest) {
			file(r).Io.Request = packet(t, uapi.Header{Op: uapi.OpPrimeFdToHandle}, &uapi.PrimeFdToHandleRequest{})
		}, "io.request: PRIME_FD_TO_HANDLE carries a file descriptor", syscall.EINVAL},
		{"in-flight request of another shape", func(r *uapi.SessionOpenRequest) {
			file(r).Io.Request = packet(t, uapi.Header{Op: uapi.OpSubmit}, &uapi.GemPreadRequest{Handle: 1, Offset: 2, Length: 3})
		}, "io.request: SUBMIT request: payload", syscall.EINVAL},
		{"garbage unread reply", func(r *uapi.SessionOpenRequest) { file(r).Io.UnreadReply = []byte("KSIM....garbage.") },
			"io.unread_reply: not a packet", syscall.EINVAL},
		{"unread reply of a positive status", func(r *uapi.SessionOpenRequest) {
			file(r).Io.UnreadReply = packet(t, uapi.Header{Op: uapi.OpGemCreate, Status: 5}, &uapi.GemCreateReply{Handle: 3})
		}, "io.unread_reply: status 5 is neither 0 nor a negative errno", syscall.EINVAL},
		{"unread reply carrying another BO's dma-buf", func(r *uapi.SessionOpenRequest) {
			file(r).Io.UnreadReply = packet(t, uapi.Header{Op: uapi.OpPrimeHandleToFd}, &uapi.Empty{})
			file(r).Io.UnreadReplyDmabufInode = 500
			file(r).Io.UnreadReplyBo = r.Bos[0]
		}, "io.unread_reply_dmabuf_inode: 500, but BO 1 was exported as dma-buf inode 0", syscall.EINVAL},
		{"dma-buf on a reply that carries none", func(r *uapi.SessionOpenRequest) {
			file(r).Io.UnreadReply = packet(t, uapi.Header{Op: uapi.OpGemCreate}, &uapi.GemCreateReply{Handle: 3})
			file(r).Io.UnreadReplyDmabufInode = 500
			file(r).Io.UnreadReplyBo = r.Bos[1]
		}, "io.unread_reply_dmabuf_inode: 500, but a GEM_CREATE reply carries no dma-buf", syscall.EINVAL},
		{"format 3 and format 4 in flight at once", func(r *uapi.SessionOpenRequest) {
			file(r).Io.Requests = []*uapi.PendingRequest{{Packet: file(r).Io.Request}}
		}, "drm file inode 100 io: holds both the single request and reply of format 3 and the lists of format 4", syscall.EINVAL},
		{"garbage request in a list", func(r *uapi.SessionOpenRequest) {
			good := file(r).Io.Request
			file(r).Io = &uapi.PendingIO{Requests: []*uapi.PendingRequest{{Packet: good}, {Packet: []byte("garbage")}}}
		}, "drm file inode 100 io.requests[1]: not a packet", syscall.EINVAL},
		{"ATTACH in flight", func(r *uapi.SessionOpenRequest) {
			file(r).Io = &uapi.PendingIO{Requests: []*uapi.PendingRequest{{Packet: packet(t, uapi.Header{Op: uapi.OpAttach, Seq: 3}, &uapi.AttachRequest{})}}}
		}, "io.requests[0]: ATTACH is not a render-node request a task can have in flight", syscall.EINVAL},
		{"second unread reply carrying another BO's dma-buf", func(r *uapi.SessionOpenRequest) {
			file(r).Io = &uapi.PendingIO{UnreadReplies: []*uapi.UnreadReply{
				{Packet: packet(t, uapi.Header{Op: uapi.OpGemCreate, Seq: 1}, &uapi.GemCreateReply{Handle: 3})},
				{Packet: packet(t, uapi.Header{Op: uapi.OpPrimeHandleToFd, Seq: 2}, &uapi.Empty{}), DmabufInode: 500, Bo: r.Bos[0]},
			}}
		}, "io.unread_replies[1].dmabuf_inode: 500, but BO 1 was exported as dma-buf inode 0", syscall.EINVAL},
		{"empty unread reply in a list", func(r *uapi.SessionOpenRequest) {
			file(r).Io = &uapi.PendingIO{UnreadReplies: []*uapi.UnreadReply{{}}}
		}, "io.unread_replies[0].packet: empty: no reply to send again", syscall.EINVAL},
		{"channel of no file", func(r *uapi.SessionOpenRequest) {
			r.Channels = []*uapi.RestoreChannel{{Inode: 200, FileInode: 101}}
		}, "reply channel inode 200 file_inode: 101 is not a drm file of the checkpoint", syscall.EINVAL},
		{"channel with a file's inode", func(r *uapi.SessionOpenRequest) {
			r.Channels = []*uapi.RestoreChannel{{Inode: 100, FileInode: 100}}
		}, "reply channel inode 100: listed twice", syscall.EINVAL},
		{"channel's request garbled", func(r *uapi.SessionOpenRequest) {
			r.Channels = []*uapi.RestoreChannel{{Inode: 200, FileInode: 100, Io: &uapi.PendingIO{Requests: []*uapi.PendingRequest{{Packet: []byte("KSIM")}}}}}
		}, "reply channel inode 200 io.requests[0]: not a packet", syscall.EINVAL},
		{"GEM handle near 2^32", func(r *uapi.SessionOpenRequest) {
			file(r).Handles[0].Handle = 1<<32 - 2
			file(r).Mappings[0].Handle = 1<<32 - 2
		},
			"handles[0].handle: 4294967294 is not a GEM handle (1 to 2147483647)", syscall.EINVAL},
		{"GEM handle 2^31", func(r *uapi.SessionOpenRequest) { file(r).Handles[0].Handle = 1 << 31 },
			"handles[0].handle: 2147483648 is not a GEM handle", syscall.EINVAL},
		{"GEM handle 0", func(r *uapi.SessionOpenRequest) { file(r).Handles[0].Handle = 0 },
			"handles[0].handle: 0 is not a GEM handle", syscall.EINVAL},
		{"GEM handle twice", func(r *uapi.SessionOpenRequest) { file(r).Handles[1].Handle = 1 },
			"handles[1].handle: 1 is used twice", syscall.EINVAL},
		{"handle on no BO", func(r *uapi.SessionOpenRequest) { file(r).Handles[0].BoId = 77 },
			"handles[0].bo_id: BO 77 is not a BO of the checkpoint", syscall.EINVAL},
		{"PRIME entry of a BO never exported", func(r *uapi.SessionOpenRequest) { file(r).Handles[0].Prime = true },
			"handles[0].prime: handle 1 is in the PRIME table, but BO 1 was never exported", syscall.EINVAL},
		{"file's copy of a BO differs", func(r *uapi.SessionOpenRequest) { file(r).Bos[0].Flags = 0x80 },
			"drm file inode 100 bos[0]: BO 1 (8192 bytes DOMAIN_VRAM flags 0x80", syscall.EINVAL},
		{"driver blob garbled", func(r *uapi.SessionOpenRequest) { file(r).DriverPrivate = []byte{0xff, 0xff} },
			"drm file inode 100 driver_private: driver state:", syscall.EINVAL},
		{"dma-buf of another BO", func(r *uapi.SessionOpenRequest) { r.Dmabufs[0].BoId = 1 },
			"dma-buf inode 500 bo_id: BO 1 was exported as dma-buf inode 0, not this one", syscall.EINVAL},
		{"dma-buf of no BO", func(r *uapi.SessionOpenRequest) { r.Dmabufs[0].BoId = 9 },
			"dma-buf inode 500 bo_id: BO 9 is not a BO of the checkpoint", syscall.EINVAL},
		{"two BOs of one dma-buf", func(r *uapi.SessionOpenRequest) { r.Bos[0].DmabufInode = 500; file(r).Bos[0].DmabufInode = 500 },
			"BO 2 dmabuf_inode: 500, the dma-buf of BO 1 too", syscall.EINVAL},
		{"BO listed twice", func(r *uapi.SessionOpenRequest) { r.Bos = append(r.Bos, r.Bos[0]) },
			"BO 1: listed twice", syscall.EINVAL},
		{"BO of a bad size", func(r *uapi.SessionOpenRequest) { r.Bos[0].Size = 100; file(r).Bos[0].Size = 100 },
			"BO 1: amdgpu cannot create it: BO size 100 is not a multiple of the 4096-byte page", syscall.EINVAL},
		{"BO of unknown flags", func(r *uapi.SessionOpenRequest) { r.Bos[0].Flags = 1 << 40; file(r).Bos[0].Flags = 1 << 40 },
			"BO 1: amdgpu cannot create it: flags 0x10000000000 not supported", syscall.EINVAL},
		{"empty checksum", func(r *uapi.SessionOpenRequest) { r.PagesFiles[0].Chunks[0].Checksum = nil },
			"pages file 0 drm-pages-1.img chunk [0, 12288): a checksum of 0 bytes, want 16 (xxh3-128): its bytes could not be checked", syscall.EINVAL},
		{"chunk larger than the kernel writes", func(r *uapi.SessionOpenRequest) { r.PagesFiles[0].Chunks[0].Length = 8 << 20 },
			"chunk [0, 8388608): 8388608 bytes: a chunk has 1 to 4194304", syscall.EINVAL},
		{"overlapping chunks", func(r *uapi.SessionOpenRequest) {
			c := r.PagesFiles[0].Chunks[0]
			c.Length = 8192
			r.PagesFiles[0].Chunks = append(r.PagesFiles[0].Chunks, &uapi.ContentChunk{Offset: 4096, Length: 8192, Checksum: c.Checksum})
		}, "chunk [4096, 12288): overlaps or precedes the chunk before it, which ends at 8192", syscall.EINVAL},
		{"BOs sharing bytes of the pages file", func(r *uapi.SessionOpenRequest) { r.Contents[1].Offset = 4096 },
			"BO 2 offset: bytes [4096, 8192) of drm-pages-1.img are BO 1's too", syscall.EINVAL},
		{"BO without contents", func(r *uapi.SessionOpenRequest) { r.Contents = r.Contents[:1] },
			"BO 2 contents: not in any pages file", syscall.EINVAL},
		{"contents in no pages file", func(r *uapi.SessionOpenRequest) { r.Contents[1].PagesFile = 3 },
			"BO 2 pages_file: 3, there are 1 pages file(s)", syscall.EINVAL},
		{"more than the device holds", func(r *uapi.SessionOpenRequest) {
			r.Bos = append(r.Bos, &uapi.BoState{BoId: 3, Size: 1 << 30, Domain: vram, Minor: 128})
			r.Contents = append(r.Contents, &uapi.BoContents{BoId: 3})
		}, "BO 3 size: the checkpoint's DOMAIN_VRAM BOs on renderD128 need more than its 1073741824 bytes", syscall.ENOMEM},
		{"file listed twice", func(r *uapi.SessionOpenRequest) { r.Files = append(r.Files, r.Files[0]) },
			"drm file inode 100: listed twice", syscall.EINVAL},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			r := goodRequest(t)
			tc.edit(r)
			probs := kernelsim.CheckRestore(r, oneDevice)
			var msgs []string
			found := false
			for _, p := range probs {
				msgs = append(msgs, p.Error())
				if strings.Contains(p.Error(), tc.want) {
					found = true
					if p.Errno != tc.errno {
						t.Errorf("%v: errno %v, want %v", p, p.Errno, tc.errno)
					}
				}
			}
			if !found {
				t.Errorf("problems %q lack %q", msgs, tc.want)
			}
		})
	}
}

// TestCheckRestoreOfferedDevices: the table of devices is checked too,
// and a handle of 2^24 is no problem (the kernel takes any id up to
// 2^31-1 in O(1) memory).
func TestCheckRestoreOfferedDevices(t *testing.T) {
	r := goodRequest(t)
	probs := kernelsim.CheckRestore(r, []*uapi.DeviceInfo{{Minor: 128, Driver: "nouveau"}})
	if len(probs) == 0 || !strings.Contains(probs[0].Error(), `device renderD128 driver: "nouveau" is not a driver of this kernel`) {
		t.Errorf("unknown driver: %v", probs)
	}
	r.Files[0].State.Handles[0].Handle = 1 << 24
	r.Files[0].State.Mappings[0].Handle = 1 << 24
	if p := kernelsim.CheckRestore(r, oneDevice); len(p) != 0 {
		t.Errorf("handle 2^24: %v", p)
	}
	// Offline the devices' sizes are unknown (0): no capacity check.
	r.Bos[0].Size = 64 << 30
	r.Files[0].State.Bos[0].Size = 64 << 30
	r.PagesFiles = nil
	r.Contents = nil
	for _, p := range kernelsim.CheckRestore(r, []*uapi.DeviceInfo{{Minor: 128, Driver: "amdgpu"}}) {
		if strings.Contains(p.Error(), "need more than") {
			t.Errorf("capacity checked against an unknown size: %v", p)
		}
	}
}

// TestCheckRestoreMemoryDoesNotGrowWithIDs: the checks allocate about as
// much for a handle of 2^31-1 as for a handle of 3 (a map's layout may
// cost an allocation more or less; memory that grew with the id would be
// millions).
func TestCheckRestoreMemoryDoesNotGrowWithIDs(t *testing.T) {
	allocs := func(h uint32) float64 {
		r := goodRequest(t)
		r.Files[0].State.Handles[0].Handle = h
		r.Files[0].State.Mappings[0].Handle = h
		return testing.AllocsPerRun(20, func() { kernelsim.CheckRestore(r, oneDevice) })
	}
	small := allocs(3)
	for _, h := range []uint32{1 << 16, 1 << 24, uapi.MaxID} {
		if n := allocs(h); n > small+2 {
			t.Errorf("%v allocations for handle %d, %v for handle 3", n, h, small)
		}
	}
}

// TestSessionOpenRefusesBadRequests: SESSION_OPEN runs the checks before
// it creates anything: a bad request leaves no session and no BO, and its
// error names every problem's object and field.
func TestSessionOpenRefusesBadRequests(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{amdgpuDev()}})
	c := ctlClient(t, env)
	r := goodRequest(t)
	r.Files[0].State.Io.Request = []byte("not a request at all, just bytes")
	r.Files[0].State.Mappings[1].Va = 0x101000
	_, err := c.OpenSession(r)
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("SESSION_OPEN of a bad request: %v", err)
	}
	for _, w := range []string{"restore refused, 2 problem(s)", "drm file inode 100 mappings[1]: [0x101000, 0x102000) overlaps", "drm file inode 100 io.request: not a packet"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
	if n := env.Kernel.Counts(); n.Sessions != 0 || n.BOs != 0 || n.Files != 0 {
		t.Fatalf("a refused session left %+v", n)
	}
	if _, err := c.OpenSession(goodRequest(t)); err != nil {
		t.Fatalf("SESSION_OPEN of the good request: %v", err)
	}
}
