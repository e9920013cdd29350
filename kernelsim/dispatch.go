package kernelsim

import (
	"context"
	"encoding/hex"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/uapi"
)

// ioctl is one render-node request handler; the request is its context
// (see request). fds are the descriptors that came with the request; the
// handler owns them. A reply fd is the caller's (it is sent, then closed).
type ioctl func(r *request, payload []byte, fds []int) (reply proto.Message, fd int, db *DmaBuf, err error)

// unary adapts a handler taking a decoded request and no descriptors.
func unary[R any, PR interface {
	*R
	proto.Message
}](fn func(ctx context.Context, f *File, req PR) (proto.Message, error)) ioctl {
	return func(r *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		if err := noFDs(fds); err != nil {
			return nil, -1, nil, err
		}
		req := PR(new(R))
		// An empty payload is the zero request (VERSION's always is):
		// decoding it would only reset req.
		if len(payload) > 0 {
			if err := proto.Unmarshal(payload, req); err != nil {
				return nil, -1, nil, errnof(syscall.EINVAL, "malformed request: %v", err)
			}
		}
		reply, err := fn(r, r.c.f, req)
		return reply, -1, nil, err
	}
}

func closeFDs(fds []int) { uapi.CloseFDs(fds) }

// noFDs refuses descriptors sent with a request that takes none (an
// ioctl cannot smuggle files either); they are closed.
func noFDs(fds []int) error {
	if len(fds) == 0 {
		return nil
	}
	closeFDs(fds)
	return errnof(syscall.EINVAL, "unexpected file descriptor (%d sent)", len(fds))
}

var empty = &uapi.Empty{}

func nsDuration(ns int64) time.Duration {
	if ns < 0 {
		return -1
	}
	return time.Duration(ns)
}

var ioctls = map[uapi.Op]ioctl{
	uapi.OpVersion: unary(func(_ context.Context, f *File, _ *uapi.VersionRequest) (proto.Message, error) {
		d := f.dev
		return &uapi.VersionReply{
			Driver: d.drv.name, Minor: d.cfg.Minor, GpuId: d.cfg.GPUID, VramSize: d.cfg.VRAMSize,
			GttSize: d.cfg.GTTSize, SchedMode: d.drv.mode.String(), FileId: f.id,
		}, nil
	}),
	uapi.OpGemCreate: unary(func(_ context.Context, f *File, r *uapi.GemCreateRequest) (proto.Message, error) {
		h, err := f.GemCreate(r.Size, r.Domain, r.Flags, r.Alignment)
		return &uapi.GemCreateReply{Handle: h}, err
	}),
	uapi.OpGemClose: unary(func(_ context.Context, f *File, r *uapi.GemCloseRequest) (proto.Message, error) {
		return empty, f.GemClose(r.Handle)
	}),
	uapi.OpGemInfo: unary(func(_ context.Context, f *File, r *uapi.GemInfoRequest) (proto.Message, error) {
		return f.GemInfo(r.Handle)
	}),
	uapi.OpGemPwrite: unary(func(_ context.Context, f *File, r *uapi.GemPwriteRequest) (proto.Message, error) {
		return empty, f.GemPwrite(r.Handle, r.Offset, r.Data)
	}),
	uapi.OpGemPread: unary(func(_ context.Context, f *File, r *uapi.GemPreadRequest) (proto.Message, error) {
		data, err := f.GemPread(r.Handle, r.Offset, r.Length)
		return &uapi.GemPreadReply{Data: data}, err
	}),
	uapi.OpGemWaitIdle: unary(func(ctx context.Context, f *File, r *uapi.GemWaitIdleRequest) (proto.Message, error) {
		busy, err := f.GemWaitIdle(ctx, r.Handle, r.Write, nsDuration(r.TimeoutNs))
		return &uapi.GemWaitIdleReply{Busy: busy}, err
	}),
	uapi.OpPrimeHandleToFd: func(rq *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		if err := noFDs(fds); err != nil {
			return nil, -1, nil, err
		}
		var r uapi.PrimeHandleToFdRequest
		if err := proto.Unmarshal(payload, &r); err != nil {
			return nil, -1, nil, errnof(syscall.EINVAL, "malformed request: %v", err)
		}
		fd, db, err := rq.c.f.PrimeHandleToFD(r.Handle, rq.c)
		return empty, fd, db, err
	},
	uapi.OpGemMmap: func(rq *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		if err := noFDs(fds); err != nil {
			return nil, -1, nil, err
		}
		var r uapi.GemMmapRequest
		if err := proto.Unmarshal(payload, &r); err != nil {
			return nil, -1, nil, errnof(syscall.EINVAL, "malformed request: %v", err)
		}
		fd, reply, err := rq.c.f.GemMmap(r.Handle)
		if err != nil {
			return nil, -1, nil, err
		}
		return reply, fd, nil, nil
	},
	uapi.OpPrimeFdToHandle: func(rq *request, _ []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		if len(fds) != 1 {
			closeFDs(fds)
			return nil, -1, nil, errnof(syscall.EINVAL, "PRIME import needs exactly one fd, got %d", len(fds))
		}
		h, err := rq.c.f.PrimeFDToHandle(fds[0])
		return &uapi.PrimeFdToHandleReply{Handle: h}, -1, nil, err
	},
	uapi.OpCtxCreate: unary(func(_ context.Context, f *File, r *uapi.CtxCreateRequest) (proto.Message, error) {
		id, err := f.CtxCreate(r.Priority)
		return &uapi.CtxCreateReply{CtxId: id}, err
	}),
	uapi.OpCtxDestroy: unary(func(_ context.Context, f *File, r *uapi.CtxDestroyRequest) (proto.Message, error) {
		return empty, f.CtxDestroy(r.CtxId)
	}),
	uapi.OpCtxQuery: unary(func(_ context.Context, f *File, r *uapi.CtxQueryRequest) (proto.Message, error) {
		return f.CtxQuery(r.CtxId)
	}),
	uapi.OpSubmit: unary(func(ctx context.Context, f *File, r *uapi.SubmitRequest) (proto.Message, error) {
		return f.Submit(ctx, r)
	}),
	uapi.OpSyncobjCreate: unary(func(_ context.Context, f *File, r *uapi.SyncobjCreateRequest) (proto.Message, error) {
		h, err := f.SyncobjCreate(r.Signaled)
		return &uapi.SyncobjCreateReply{Handle: h}, err
	}),
	uapi.OpSyncobjDestroy: unary(func(_ context.Context, f *File, r *uapi.SyncobjHandleRequest) (proto.Message, error) {
		return empty, f.SyncobjDestroy(r.Handle)
	}),
	uapi.OpSyncobjReset: unary(func(_ context.Context, f *File, r *uapi.SyncobjHandleRequest) (proto.Message, error) {
		return empty, f.SyncobjReset(r.Handle)
	}),
	uapi.OpSyncobjSignal: unary(func(_ context.Context, f *File, r *uapi.SyncobjHandleRequest) (proto.Message, error) {
		return empty, f.SyncobjSignal(r.Handle)
	}),
	uapi.OpSyncobjQuery: unary(func(_ context.Context, f *File, r *uapi.SyncobjHandleRequest) (proto.Message, error) {
		return f.SyncobjQuery(r.Handle)
	}),
	uapi.OpSyncobjWait: unary(func(ctx context.Context, f *File, r *uapi.SyncobjWaitRequest) (proto.Message, error) {
		first, err := f.SyncobjWait(ctx, r.Handles, nsDuration(r.TimeoutNs), r.WaitAll, r.WaitForSubmit)
		return &uapi.SyncobjWaitReply{FirstSignaled: first}, err
	}),
	uapi.OpSwSyncCreate: unary(func(_ context.Context, f *File, _ *uapi.SwSyncCreateRequest) (proto.Message, error) {
		id, err := f.SwSyncCreate()
		return &uapi.SwSyncCreateReply{Timeline: id}, err
	}),
	uapi.OpSwSyncFence: unary(func(_ context.Context, f *File, r *uapi.SwSyncFenceRequest) (proto.Message, error) {
		return empty, f.SwSyncFence(r.Timeline, r.Point, r.Syncobj)
	}),
	uapi.OpSwSyncInc: unary(func(_ context.Context, f *File, r *uapi.SwSyncIncRequest) (proto.Message, error) {
		return empty, f.SwSyncInc(r.Timeline, r.Inc)
	}),
	uapi.OpClaimFile: func(rq *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		var r uapi.ClaimFileRequest
		if err := firstRequest(rq, payload, fds, &r); err != nil {
			return nil, -1, nil, err
		}
		return empty, -1, nil, rq.c.claim(rq, r.Token, r.Inode, false)
	},
	uapi.OpClaimChannel: func(rq *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		var r uapi.ClaimChannelRequest
		if err := firstRequest(rq, payload, fds, &r); err != nil {
			return nil, -1, nil, err
		}
		return empty, -1, nil, rq.c.claim(rq, r.Token, r.Inode, true)
	},
	uapi.OpClaimDmaBuf: func(rq *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		if err := noFDs(fds); err != nil {
			return nil, -1, nil, err
		}
		var r uapi.ClaimDmaBufRequest
		if err := proto.Unmarshal(payload, &r); err != nil {
			return nil, -1, nil, errnof(syscall.EINVAL, "malformed request: %v", err)
		}
		s, err := rq.c.s.k.Session(hex.EncodeToString(r.Token))
		if err != nil {
			return nil, -1, nil, err
		}
		fd, db, err := s.ClaimDmaBuf(r.Inode, rq.c)
		return empty, fd, db, err
	},
	uapi.OpAttach: func(rq *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
		if rq.n != 1 {
			closeFDs(fds)
			return nil, -1, nil, errnof(syscall.EINVAL, "ATTACH must be the first request of a connection")
		}
		if len(fds) != 1 {
			closeFDs(fds)
			return nil, -1, nil, errnof(syscall.EINVAL, "ATTACH needs exactly one fd, the drm file's, got %d", len(fds))
		}
		var r uapi.AttachRequest
		if err := proto.Unmarshal(payload, &r); err != nil {
			closeFDs(fds)
			return nil, -1, nil, errnof(syscall.EINVAL, "malformed request: %v", err)
		}
		id, err := rq.c.attach(fds[0])
		return &uapi.AttachReply{FileId: id}, -1, nil, err
	},
}

// firstRequest checks that a claim is the connection's first request and
// decodes it.
func firstRequest(rq *request, payload []byte, fds []int, m proto.Message) error {
	if err := noFDs(fds); err != nil {
		return err
	}
	if rq.n != 1 {
		return errnof(syscall.EINVAL, "a claim must be the first request of a connection")
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return errnof(syscall.EINVAL, "malformed request: %v", err)
	}
	return nil
}

// dispatch runs one request.
func (c *conn) dispatch(r *request, h uapi.Header, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
	if fn, ok := ioctls[h.Op]; ok {
		return fn(r, payload, fds)
	}
	if io, ok := driverIoctl(c.f, h.Op); ok {
		return runDriverIoctl(io, r, payload, fds)
	}
	closeFDs(fds)
	return nil, -1, nil, errnof(syscall.ENOTTY, "unknown request %v", h.Op)
}
