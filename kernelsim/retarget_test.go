package kernelsim_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

// TestRetargetRestore: every reference a restore request makes to a device
// follows the mapping: BO records, the files' copies of them, the files'
// minors and gpu ids, the BO and the VERSION reply a file had unread; a
// device the mapping leaves out keeps its objects. The request then passes
// the checks against the new devices only.
func TestRetargetRestore(t *testing.T) {
	req := goodRequest(t)
	st := req.Files[0].State
	st.GpuId = 0x10020080
	st.Io = &uapi.PendingIO{
		UnreadReply: packet(t, uapi.Header{Op: uapi.OpVersion, Seq: 9},
			&uapi.VersionReply{Driver: "amdgpu", Minor: 128, GpuId: 0x10020080, VramSize: 1 << 30, GttSize: 2 << 30, SchedMode: "classic", FileId: 4}),
	}
	// A second file, on a device the mapping leaves out.
	other := &uapi.BoState{BoId: 3, Size: 4096, Domain: vram, Minor: 129}
	req.Bos = append(req.Bos, other)
	req.Contents = append(req.Contents, &uapi.BoContents{BoId: 3, Offset: 12288})
	req.PagesFiles[0].Chunks = append(req.PagesFiles[0].Chunks, &uapi.ContentChunk{Offset: 12288, Length: 4096, Checksum: make([]byte, uapi.DefaultChecksum.Size())})
	blob, _ := proto.Marshal(&uapi.DriverPrivate{Version: kernelsim.DriverPrivateVersion, Driver: "amdgpu"})
	req.Files = append(req.Files, &uapi.RestoreFile{Inode: 101, State: &uapi.FileCheckpoint{
		Minor: 129, Driver: "amdgpu", GpuId: 0x10020081, DriverPrivate: blob,
		Handles: []*uapi.HandleState{{Handle: 1, BoId: 3}}, Bos: []*uapi.BoState{proto.Clone(other).(*uapi.BoState)},
	}})

	to := &uapi.DeviceInfo{Minor: 131, Driver: "amdgpu", GpuId: 0x2222, VramSize: 4 << 30, GttSize: 8 << 30}
	if err := kernelsim.RetargetRestore(req, map[uint32]*uapi.DeviceInfo{128: to}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*uapi.BoState{req.Bos[0], req.Bos[1], st.Bos[0], st.Bos[1]} {
		if b.Minor != 131 {
			t.Errorf("BO %d stays on renderD%d", b.BoId, b.Minor)
		}
	}
	if st.Minor != 131 || st.GpuId != 0x2222 {
		t.Errorf("file on renderD%d gpu id %#x", st.Minor, st.GpuId)
	}
	h, err := uapi.ParseHeader(st.Io.UnreadReply)
	if err != nil || h.Op != uapi.OpVersion || h.Seq != 9 || h.Status != 0 {
		t.Fatalf("unread reply header %+v %v", h, err)
	}
	var v uapi.VersionReply
	if err := proto.Unmarshal(st.Io.UnreadReply[uapi.HeaderSize:], &v); err != nil {
		t.Fatal(err)
	}
	if v.Minor != 131 || v.GpuId != 0x2222 || v.VramSize != 4<<30 || v.GttSize != 8<<30 || v.Driver != "amdgpu" || v.SchedMode != "classic" || v.FileId != 4 {
		t.Errorf("unread VERSION reply describes %+v", &v)
	}
	// Left out: renderD129's objects stay.
	if o := req.Files[1].State; o.Minor != 129 || o.GpuId != 0x10020081 || o.Bos[0].Minor != 129 || req.Bos[2].Minor != 129 {
		t.Errorf("renderD129's objects moved: %v", o)
	}

	// The retargeted request is whole on the new devices, and names no
	// old one.
	devs := []*uapi.DeviceInfo{to, {Minor: 129, Driver: "amdgpu", VramSize: 1 << 30, GttSize: 1 << 30}}
	if p := kernelsim.CheckRestore(req, devs); len(p) != 0 {
		t.Errorf("problems on the new devices: %v", p)
	}
	if p := kernelsim.CheckRestore(req, append(oneDevice, devs[1])); len(p) == 0 {
		t.Error("the retargeted request passes on the old devices")
	}
}

// TestRetargetUnreadBO: the BO an unread PRIME_HANDLE_TO_FD reply carries
// moves too; other unread replies are left as they are.
func TestRetargetUnreadBO(t *testing.T) {
	req := goodRequest(t)
	st := req.Files[0].State
	reply := packet(t, uapi.Header{Op: uapi.OpPrimeHandleToFd, Seq: 3}, &uapi.Empty{})
	st.Io = &uapi.PendingIO{UnreadReply: reply, UnreadReplyDmabufInode: 500, UnreadReplyBo: proto.Clone(req.Bos[1]).(*uapi.BoState)}
	to := &uapi.DeviceInfo{Minor: 130, Driver: "amdgpu", GpuId: 7, VramSize: 1 << 30, GttSize: 1 << 30}
	if err := kernelsim.RetargetRestore(req, map[uint32]*uapi.DeviceInfo{128: to}); err != nil {
		t.Fatal(err)
	}
	if st.Io.UnreadReplyBo.Minor != 130 || string(st.Io.UnreadReply) != string(reply) {
		t.Errorf("unread reply BO on renderD%d; reply changed: %v", st.Io.UnreadReplyBo.Minor, string(st.Io.UnreadReply) != string(reply))
	}
	if p := kernelsim.CheckRestore(req, []*uapi.DeviceInfo{to}); len(p) != 0 {
		t.Errorf("problems on the new device: %v", p)
	}
}
