package kernelsim

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/uapi"
)

// TestIoctlMessagesCoverTheIoctlTable: every render-node request but the
// first requests of a connection (claims, ATTACH) can be caught in flight,
// so the table of their messages has them all, and nothing else.
func TestIoctlMessagesCoverTheIoctlTable(t *testing.T) {
	for op := range ioctls {
		_, ok := ioctlMessages[op]
		claim := op == uapi.OpClaimFile || op == uapi.OpClaimDmaBuf || op == uapi.OpClaimChannel || op == uapi.OpAttach
		if ok == claim {
			t.Errorf("%v: in the table of in-flight messages: %v", op, ok)
		}
	}
	for op := range ioctlMessages {
		if _, ok := ioctls[op]; !ok {
			t.Errorf("%v has messages but no handler", op)
		}
	}
	// A driver's own ioctls bring their messages; they never shadow the
	// core's.
	for _, name := range Drivers() {
		d, _ := lookupDriver(name)
		for op, io := range d.impl.Ioctls() {
			if _, core := ioctls[op]; core || io.Request == nil || io.Reply == nil || io.Run == nil {
				t.Errorf("%s %v: a core op, or messages or handler missing", name, op)
			}
			if m, ok := ioctlMessagesOf(op); !ok || m.req == nil {
				t.Errorf("%s %v: no messages for the in-flight checks", name, op)
			}
		}
	}
}

// TestSameBOComparesEveryField: sameBO compares BoState field by field;
// a field added to BoState must be added there too.
func TestSameBOComparesEveryField(t *testing.T) {
	if n := (&uapi.BoState{}).ProtoReflect().Descriptor().Fields().Len(); n != 7 {
		t.Fatalf("BoState has %d fields, sameBO compares 7: compare the new ones too", n)
	}
	a := &uapi.BoState{BoId: 1, Size: 2, Domain: 1, Flags: 3, Alignment: 4, DmabufInode: 5, Minor: 6}
	for i, edit := range []func(b *uapi.BoState){
		func(b *uapi.BoState) { b.BoId++ }, func(b *uapi.BoState) { b.Size++ }, func(b *uapi.BoState) { b.Domain++ },
		func(b *uapi.BoState) { b.Flags++ }, func(b *uapi.BoState) { b.Alignment++ }, func(b *uapi.BoState) { b.DmabufInode++ },
		func(b *uapi.BoState) { b.Minor++ },
	} {
		b := proto.Clone(a).(*uapi.BoState)
		edit(b)
		if sameBO(a, b) {
			t.Errorf("field %d: a difference is not seen", i)
		}
	}
}

// TestGemMmapInFlight: a GEM_MMAP request caught in flight is replayed
// (it carries no file), its reply never re-sent (it carries one).
func TestGemMmapInFlight(t *testing.T) {
	req, err := uapi.Marshal(uapi.Header{Op: uapi.OpGemMmap, Seq: 3}, &uapi.GemMmapRequest{Handle: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRequestPacket(req); err != nil {
		t.Errorf("GEM_MMAP request: %v", err)
	}
	reply, err := uapi.Marshal(uapi.Header{Op: uapi.OpGemMmap, Seq: 3}, &uapi.GemMmapReply{Size: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckReplyPacket(reply); err == nil {
		t.Error("an unread GEM_MMAP reply, which carries a file, passes")
	}
	errReply, _ := uapi.Marshal(uapi.Header{Op: uapi.OpGemMmap, Seq: 3, Status: -2}, &uapi.ErrorReply{Message: "no handle"})
	if _, err := CheckReplyPacket(errReply); err != nil {
		t.Errorf("a GEM_MMAP error reply: %v", err)
	}
}
