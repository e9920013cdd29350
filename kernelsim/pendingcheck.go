package kernelsim

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"drmcr/kernelsim/uapi"
)

// ioctlMessage is the messages of a render-node request and its reply.
type ioctlMessage struct {
	req, reply func() proto.Message
	fdIn       bool // the request carries a file descriptor
	fdOut      bool // the reply carries a file of its own (never re-sent)
}

// ioctlMessages gives, for each render-node request, the messages of its
// request and reply: what a request or reply caught in flight at a
// checkpoint must decode as before a restore replays or re-sends it. Every
// op of the ioctl table but the claims has an entry (tested).
var ioctlMessages = map[uapi.Op]ioctlMessage{
	uapi.OpVersion:         {req: func() proto.Message { return &uapi.VersionRequest{} }, reply: func() proto.Message { return &uapi.VersionReply{} }},
	uapi.OpGemCreate:       {req: func() proto.Message { return &uapi.GemCreateRequest{} }, reply: func() proto.Message { return &uapi.GemCreateReply{} }},
	uapi.OpGemClose:        {req: func() proto.Message { return &uapi.GemCloseRequest{} }, reply: emptyMsg},
	uapi.OpGemInfo:         {req: func() proto.Message { return &uapi.GemInfoRequest{} }, reply: func() proto.Message { return &uapi.GemInfoReply{} }},
	uapi.OpGemPwrite:       {req: func() proto.Message { return &uapi.GemPwriteRequest{} }, reply: emptyMsg},
	uapi.OpGemPread:        {req: func() proto.Message { return &uapi.GemPreadRequest{} }, reply: func() proto.Message { return &uapi.GemPreadReply{} }},
	uapi.OpGemWaitIdle:     {req: func() proto.Message { return &uapi.GemWaitIdleRequest{} }, reply: func() proto.Message { return &uapi.GemWaitIdleReply{} }},
	uapi.OpPrimeHandleToFd: {req: func() proto.Message { return &uapi.PrimeHandleToFdRequest{} }, reply: emptyMsg},
	uapi.OpPrimeFdToHandle: {req: func() proto.Message { return &uapi.PrimeFdToHandleRequest{} }, reply: func() proto.Message { return &uapi.PrimeFdToHandleReply{} }, fdIn: true},
	uapi.OpCtxCreate:       {req: func() proto.Message { return &uapi.CtxCreateRequest{} }, reply: func() proto.Message { return &uapi.CtxCreateReply{} }},
	uapi.OpCtxDestroy:      {req: func() proto.Message { return &uapi.CtxDestroyRequest{} }, reply: emptyMsg},
	uapi.OpCtxQuery:        {req: func() proto.Message { return &uapi.CtxQueryRequest{} }, reply: func() proto.Message { return &uapi.CtxQueryReply{} }},
	uapi.OpSubmit:          {req: func() proto.Message { return &uapi.SubmitRequest{} }, reply: func() proto.Message { return &uapi.SubmitReply{} }},
	uapi.OpSyncobjCreate:   {req: func() proto.Message { return &uapi.SyncobjCreateRequest{} }, reply: func() proto.Message { return &uapi.SyncobjCreateReply{} }},
	uapi.OpSyncobjDestroy:  {req: syncobjHandleMsg, reply: emptyMsg},
	uapi.OpSyncobjWait:     {req: func() proto.Message { return &uapi.SyncobjWaitRequest{} }, reply: func() proto.Message { return &uapi.SyncobjWaitReply{} }},
	uapi.OpSyncobjReset:    {req: syncobjHandleMsg, reply: emptyMsg},
	uapi.OpSyncobjSignal:   {req: syncobjHandleMsg, reply: emptyMsg},
	uapi.OpSyncobjQuery:    {req: syncobjHandleMsg, reply: func() proto.Message { return &uapi.SyncobjQueryReply{} }},
	uapi.OpSwSyncCreate:    {req: func() proto.Message { return &uapi.SwSyncCreateRequest{} }, reply: func() proto.Message { return &uapi.SwSyncCreateReply{} }},
	uapi.OpSwSyncFence:     {req: func() proto.Message { return &uapi.SwSyncFenceRequest{} }, reply: emptyMsg},
	uapi.OpSwSyncInc:       {req: func() proto.Message { return &uapi.SwSyncIncRequest{} }, reply: emptyMsg},
	// A GEM_MMAP request in flight is replayed; its reply, which carries
	// the file of the BO's memory, is never caught unread (the dump fails
	// with EAGAIN).
	uapi.OpGemMmap: {req: func() proto.Message { return &uapi.GemMmapRequest{} }, reply: func() proto.Message { return &uapi.GemMmapReply{} }, fdOut: true},
}

func emptyMsg() proto.Message         { return &uapi.Empty{} }
func syncobjHandleMsg() proto.Message { return &uapi.SyncobjHandleRequest{} }

// CheckRequestPacket checks a request a checkpoint caught in flight, which
// a restore replays into the restored file: a packet with a good header,
// a render-node request that carries no file descriptor (those are never
// caught: the dump fails with EAGAIN), whose payload decodes exactly as
// that request, with no field this kernel does not know. A garbage
// request must be refused, not replayed into a task that would wait for
// its reply forever.
func CheckRequestPacket(pkt []byte) error {
	h, payload, err := checkPacket(pkt)
	if err != nil {
		return err
	}
	if h.Status != 0 {
		return fmt.Errorf("a request with status %d (requests carry 0)", h.Status)
	}
	m, ok := ioctlMessagesOf(h.Op)
	switch {
	case !ok:
		return fmt.Errorf("%v is not a render-node request a task can have in flight", h.Op)
	case m.fdIn:
		return fmt.Errorf("%v carries a file descriptor, which a checkpoint never holds in flight", h.Op)
	}
	if err := decodeExact(payload, m.req()); err != nil {
		return fmt.Errorf("%v request: %w", h.Op, err)
	}
	return nil
}

// CheckReplyPacket checks a reply the task had not read at the checkpoint,
// which a restore re-sends: a good header answering a render-node
// request, with a status of 0 and that request's reply, or a negative
// errno and an error message. It returns the request the reply answers.
func CheckReplyPacket(pkt []byte) (uapi.Op, error) {
	h, payload, err := checkPacket(pkt)
	if err != nil {
		return 0, err
	}
	m, ok := ioctlMessagesOf(h.Op)
	switch {
	case !ok:
		return 0, fmt.Errorf("answers %v, which is not a render-node request", h.Op)
	case h.Status > 0 || h.Status < -4095:
		return h.Op, fmt.Errorf("status %d is neither 0 nor a negative errno", h.Status)
	case m.fdOut && h.Status == 0:
		return h.Op, fmt.Errorf("a %v reply carries a file, which a checkpoint never holds unread", h.Op)
	}
	reply := m.reply()
	if h.Status < 0 {
		reply = &uapi.ErrorReply{}
	}
	if err := decodeExact(payload, reply); err != nil {
		return h.Op, fmt.Errorf("%v reply: %w", h.Op, err)
	}
	return h.Op, nil
}

func checkPacket(pkt []byte) (uapi.Header, []byte, error) {
	if len(pkt) > uapi.MaxMessage {
		return uapi.Header{}, nil, fmt.Errorf("a packet of %d bytes, more than the %d of any", len(pkt), uapi.MaxMessage)
	}
	h, err := uapi.ParseHeader(pkt)
	if err != nil {
		return h, nil, fmt.Errorf("not a packet: %w", err)
	}
	return h, pkt[uapi.HeaderSize:], nil
}

// decodeExact decodes a payload as m, refusing fields m does not have.
func decodeExact(payload []byte, m proto.Message) error {
	if err := proto.Unmarshal(payload, m); err != nil {
		return fmt.Errorf("payload does not decode: %w", err)
	}
	if hasUnknown(m.ProtoReflect()) {
		return errors.New("payload holds fields the message does not have")
	}
	return nil
}

// hasUnknown reports whether m or a message in it holds unknown fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind:
		case fd.IsList():
			for i := 0; i < v.List().Len() && !found; i++ {
				found = hasUnknown(v.List().Get(i).Message())
			}
		case !fd.IsMap():
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

// ioctlMessagesOf returns the messages of a render-node request, the
// core's or a registered driver's own.
func ioctlMessagesOf(op uapi.Op) (ioctlMessage, bool) {
	if m, ok := ioctlMessages[op]; ok {
		return m, true
	}
	req, reply, ok := driverMessages(op)
	if !ok {
		return ioctlMessage{}, false
	}
	return ioctlMessage{req: req, reply: reply}, true
}
