package kernelsim

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/uapi"
)

// RetargetRestore rewrites a restore request for a kernel whose devices
// differ from those of the checkpoint, as a restore on another machine
// needs: every reference the request makes to a device follows to, which
// gives, by checkpointed minor, the device that minor's objects are
// recreated on. Those references are the minor of every BO record (the
// request's, each file's copies, the BO an unread reply carries), each
// file's minor and gpu id, and an unread VERSION reply, which describes
// its device to the task. A minor that to leaves out keeps its device.
// It rewrites req in place and checks nothing: CheckRestore, run after
// it against the new devices, does.
//
// Which device takes which is the caller's choice (the plugin maps them,
// see drmcore); the driver blob names no device.
func RetargetRestore(req *uapi.SessionOpenRequest, to map[uint32]*uapi.DeviceInfo) error {
	bo := func(st *uapi.BoState) {
		if d := to[st.GetMinor()]; st != nil && d != nil {
			st.Minor = d.Minor
		}
	}
	for _, st := range req.Bos {
		bo(st)
	}
	for _, rf := range req.Files {
		st := rf.GetState()
		if st == nil {
			continue
		}
		for _, b := range st.Bos {
			bo(b)
		}
		if st.Io != nil {
			bo(st.Io.UnreadReplyBo)
		}
		d := to[st.Minor]
		if d == nil {
			continue
		}
		if st.Io != nil && len(st.Io.UnreadReply) > 0 {
			pkt, err := retargetVersionReply(st.Io.UnreadReply, d)
			if err != nil {
				return fmt.Errorf("drm file inode %d: unread reply: %w", rf.Inode, err)
			}
			st.Io.UnreadReply = pkt
		}
		st.Minor, st.GpuId = d.Minor, d.GpuId
	}
	return nil
}

// retargetVersionReply returns an unread VERSION reply describing d
// instead of the device it was sent for. Other replies, and packets that
// do not decode (CheckRestore refuses those), are returned as they are.
func retargetVersionReply(pkt []byte, d *uapi.DeviceInfo) ([]byte, error) {
	h, payload, err := checkPacket(pkt)
	if err != nil || h.Op != uapi.OpVersion || h.Status != 0 {
		return pkt, nil
	}
	var v uapi.VersionReply
	if err := proto.Unmarshal(payload, &v); err != nil {
		return pkt, nil
	}
	v.Minor, v.GpuId, v.VramSize, v.GttSize = d.Minor, d.GpuId, d.VramSize, d.GttSize
	return uapi.Marshal(h, &v)
}
