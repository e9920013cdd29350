package kernelsim

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/uapi"
)

// controlConn serves the privileged control socket: identification of
// client sockets, pause/resume, checkpoint and restore sessions, and the
// debug view. Whatever a control connection paused is resumed, and every
// session it opened and did not close is aborted, when it goes away, so a
// crashed criu leaves no client stuck.
type controlConn struct {
	s     *Server
	sock  *os.File // non-blocking, in the netpoller
	rc    syscall.RawConn
	out   packetOut
	owner Cred

	paused   map[uint64]bool
	sessions map[string]*Session
}

func newControlConn(s *Server, fd int, owner Cred) (*controlConn, error) {
	sock := os.NewFile(uintptr(fd), "control")
	rc, err := sock.SyscallConn()
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &controlConn{s: s, sock: sock, rc: rc, owner: owner, paused: map[uint64]bool{}, sessions: map[string]*Session{}}, nil
}

// shutdown disconnects the client; serve() then cleans up.
func (c *controlConn) shutdown() {
	c.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// recv waits in the netpoller for the next request.
func (c *controlConn) recv(buf []byte) (n int, fds []int, err error) {
	if rerr := c.rc.Read(func(fd uintptr) bool {
		n, fds, err = recvRequest(int(fd), buf)
		return err != unix.EAGAIN
	}); rerr != nil {
		return 0, nil, rerr
	}
	return n, fds, err
}

func (c *controlConn) serve() {
	defer c.cleanup()
	for {
		buf := bufs.Get().(*[]byte)
		err := c.serveOne(*buf)
		bufs.Put(buf)
		if err != nil {
			return
		}
	}
}

// serveOne answers one request; an error ends the connection.
func (c *controlConn) serveOne(buf []byte) error {
	n, fds, err := c.recv(buf)
	var bad *Error
	if err != nil && !errors.As(err, &bad) {
		return err
	}
	var h uapi.Header
	var reply proto.Message
	if err == nil {
		if h, err = uapi.ParseHeader(buf[:n]); err != nil {
			uapi.CloseFDs(fds)
			h = uapi.Header{}
			err = errnof(syscall.EPROTO, "bad request: %v", err)
		}
	}
	var payload []byte
	if err == nil {
		// Large requests and replies travel out of line (memfd).
		if payload, fds, err = uapi.InlinePayload(&h, buf[uapi.HeaderSize:n], fds); err != nil {
			err = errnof(syscall.EPROTO, "bad request: %v", err)
		}
	}
	if err == nil {
		reply, err = c.dispatch(h, payload, fds)
	}
	out := uapi.Header{Op: h.Op, Seq: h.Seq}
	if err != nil {
		out.Status = -int32(ErrnoOf(err))
		reply = &uapi.ErrorReply{Message: truncate(err.Error(), 64<<10)}
	}
	pkt, oolFD, merr := uapi.MarshalOutOfLine(out, reply)
	if merr != nil {
		out.Status = -int32(syscall.EOVERFLOW)
		pkt, _ = uapi.Marshal(out, &uapi.ErrorReply{Message: merr.Error()})
	}
	if oolFD >= 0 {
		defer unix.Close(oolFD)
	}
	return c.out.sendPacket(c.rc, pkt, oolFD)
}

func (c *controlConn) cleanup() {
	k := c.s.k
	var ids []uint64
	for id := range c.paused {
		ids = append(ids, id)
	}
	k.Resume(ids)
	for _, s := range c.sessions {
		s.Close(true)
	}
	c.sock.Close()
}

func decode(payload []byte, m proto.Message) error {
	if err := proto.Unmarshal(payload, m); err != nil {
		return errnof(syscall.EINVAL, "malformed request: %v", err)
	}
	return nil
}

func (c *controlConn) session(token []byte) (*Session, error) {
	s, ok := c.sessions[hex.EncodeToString(token)]
	if !ok {
		return nil, errnof(syscall.ENOENT, "no restore session of this connection with that token")
	}
	return s, nil
}

func (c *controlConn) dispatch(h uapi.Header, payload []byte, fds []int) (proto.Message, error) {
	k := c.s.k
	takeFD := func() (int, error) {
		if len(fds) != 1 {
			uapi.CloseFDs(fds)
			return -1, errnof(syscall.EINVAL, "%v needs exactly one fd, got %d", h.Op, len(fds))
		}
		return fds[0], nil
	}
	if h.Op != uapi.OpCheckpointBos && h.Op != uapi.OpSessionLoadPages && h.Op != uapi.OpSessionAdoptMemory && h.Op != uapi.OpDebug && h.Op != uapi.OpCheckpointIo && len(fds) > 0 {
		uapi.CloseFDs(fds)
		return nil, errnof(syscall.EINVAL, "unexpected file descriptor")
	}
	switch h.Op {
	case uapi.OpIdentify:
		var r uapi.IdentifyRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		return &uapi.IdentifyReply{Objects: c.s.identify(r.Inodes)}, nil
	case uapi.OpIdentifyMemory:
		var r uapi.IdentifyMemoryRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		return &uapi.IdentifyMemoryReply{Files: k.identifyMemory(r.Files)}, nil
	case uapi.OpPause:
		var r uapi.PauseRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		if err := k.Pause(r.FileIds, time.Duration(r.TimeoutNs)); err != nil {
			return nil, err
		}
		for _, id := range r.FileIds {
			c.paused[id] = true
		}
		return empty, nil
	case uapi.OpResume:
		var r uapi.ResumeRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		k.Resume(r.FileIds)
		for _, id := range r.FileIds {
			delete(c.paused, id)
		}
		return empty, nil
	case uapi.OpCheckpointFile:
		var r uapi.CheckpointFileRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		return k.CheckpointFile(r.FileId)
	case uapi.OpCheckpointIo:
		var r uapi.CheckpointIoRequest
		if err := decode(payload, &r); err != nil {
			uapi.CloseFDs(fds)
			return nil, err
		}
		fd, err := takeFD()
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
		return k.CheckpointIO(r.FileId, r.Inode, fd)
	case uapi.OpCheckpointDmaBuf:
		var r uapi.CheckpointDmaBufRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		st, err := k.CheckpointDmaBuf(r.Inode)
		return &uapi.CheckpointDmaBufReply{Bo: st}, err
	case uapi.OpCheckpointBos:
		var r uapi.CheckpointBosRequest
		if err := decode(payload, &r); err != nil {
			uapi.CloseFDs(fds)
			return nil, err
		}
		alg, err := uapi.ParseChecksum(r.Checksum)
		if err != nil {
			uapi.CloseFDs(fds)
			return nil, errnof(syscall.EINVAL, "%v", err)
		}
		if r.ChecksumOnly {
			if err := noFDs(fds); err != nil {
				return nil, err
			}
			chunks, err := k.ChecksumBOs(r.BoIds, alg)
			return &uapi.CheckpointBosReply{Chunks: chunks}, err
		}
		defer uapi.CloseFDs(fds)
		if len(r.BoIds) > 0 {
			return nil, errnof(syscall.EINVAL, "%v: BOs to write are named by their targets, bo_ids is for checksum_only", h.Op)
		}
		if len(fds) != len(r.Targets) || len(fds) == 0 {
			return nil, errnof(syscall.EINVAL, "%v: %d pages file(s) passed for %d target(s)", h.Op, len(fds), len(r.Targets))
		}
		targets := make([]PagesTarget, len(r.Targets))
		for i, t := range r.Targets {
			targets[i] = PagesTarget{IDs: t.BoIds, FD: fds[i], Offset: t.Offset}
		}
		extents, err := k.CheckpointBOs(targets, alg)
		return &uapi.CheckpointBosReply{Targets: extents}, err
	case uapi.OpSessionOpen:
		var r uapi.SessionOpenRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		s, err := k.OpenSession(&r)
		if err != nil {
			return nil, err
		}
		c.sessions[s.token] = s
		tok, _ := hex.DecodeString(s.token)
		reply := &uapi.SessionOpenReply{Token: tok}
		for _, f := range r.Files {
			reply.FileSockets = append(reply.FileSockets, RenderNodePath(c.s.dir, f.State.Minor))
		}
		for _, d := range r.Dmabufs {
			reply.DmabufSockets = append(reply.DmabufSockets, RenderNodePath(c.s.dir, s.bos[d.BoId].st.Minor))
		}
		for _, ch := range r.Channels {
			reply.ChannelSockets = append(reply.ChannelSockets, RenderNodePath(c.s.dir, s.files[ch.FileInode].st.Minor))
		}
		return reply, nil
	case uapi.OpSessionLoadPages:
		var r uapi.SessionLoadPagesRequest
		if err := decode(payload, &r); err != nil {
			uapi.CloseFDs(fds)
			return nil, err
		}
		fd, err := takeFD()
		if err != nil {
			return nil, err
		}
		s, err := c.session(r.Token)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		return empty, s.LoadPages(r.PagesFile, fd)
	case uapi.OpSessionAdoptMemory:
		var r uapi.SessionAdoptMemoryRequest
		if err := decode(payload, &r); err != nil {
			uapi.CloseFDs(fds)
			return nil, err
		}
		fd, err := takeFD()
		if err != nil {
			return nil, err
		}
		s, err := c.session(r.Token)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		return empty, s.AdoptMemory(r.BoId, fd, r.Holders)
	case uapi.OpSessionResume:
		var r uapi.SessionResumeRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		s, err := c.session(r.Token)
		if err != nil {
			return nil, err
		}
		timeout := time.Duration(r.TimeoutNs)
		if timeout <= 0 {
			timeout = time.Minute
		}
		return empty, s.ResumeTask(r.Pid, timeout)
	case uapi.OpSessionClose:
		var r uapi.SessionCloseRequest
		if err := decode(payload, &r); err != nil {
			return nil, err
		}
		s, err := c.session(r.Token)
		if err != nil {
			return nil, err
		}
		delete(c.sessions, s.token)
		return empty, s.Close(r.Abort)
	case uapi.OpDevices:
		return &uapi.DevicesReply{Devices: k.DeviceInfos()}, nil
	case uapi.OpDebug:
		// A client may pass a file descriptor that the kernel writes the
		// JSON to instead of the reply (which goes out of line when large).
		if len(fds) > 1 {
			uapi.CloseFDs(fds)
			return nil, errnof(syscall.EINVAL, "%v takes at most one fd, got %d", h.Op, len(fds))
		}
		js, err := json.MarshalIndent(k.Debug(), "", "  ")
		if err != nil {
			uapi.CloseFDs(fds)
			return nil, err
		}
		if len(fds) == 1 {
			w := os.NewFile(uintptr(fds[0]), "debug-view")
			defer w.Close()
			if _, err := w.Write(js); err != nil {
				return nil, errnof(syscall.EIO, "write debug view: %v", err)
			}
			return &uapi.DebugReply{}, nil
		}
		return &uapi.DebugReply{Json: string(js)}, nil
	}
	return nil, errnof(syscall.ENOTTY, "unknown control request %v", h.Op)
}

// identify tells which inodes are client sockets of this kernel.
func (s *Server) identify(inodes []uint64) []*uapi.IdentifiedObject {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	byIno := map[uint64]*File{}
	channel := map[uint64]bool{}
	for _, f := range k.files {
		if f.closed {
			continue
		}
		for _, e := range f.ios {
			byIno[e.clientIno] = f
			channel[e.clientIno] = e.channel
		}
	}
	out := make([]*uapi.IdentifiedObject, 0, len(inodes))
	for _, ino := range inodes {
		obj := &uapi.IdentifiedObject{Inode: ino}
		if f, ok := byIno[ino]; ok {
			obj.Kind = uapi.ObjectKind_OBJECT_DRM_FILE
			if channel[ino] {
				obj.Kind = uapi.ObjectKind_OBJECT_DRM_CHANNEL
				obj.FileInode = f.clientIno
			}
			obj.FileId = f.id
			obj.Minor = f.dev.cfg.Minor
			obj.Driver = f.dev.drv.name
			obj.OwnerPid = f.owner.PID
			obj.SocketPath = RenderNodePath(s.dir, f.dev.cfg.Minor)
		} else if db, ok := k.dmabufs[ino]; ok {
			obj.Kind = uapi.ObjectKind_OBJECT_DMA_BUF
			obj.DmabufId = db.id
			obj.Minor = db.bo.dev.cfg.Minor
			obj.Driver = db.bo.dev.drv.name
			obj.SocketPath = RenderNodePath(s.dir, db.bo.dev.cfg.Minor)
		}
		out = append(out, obj)
	}
	return out
}

// packetOut sends packets on a non-blocking socket; while the peer's
// receive queue is full it waits in the netpoller, not in a thread. It is
// reused from packet to packet, so that sending allocates nothing.
type packetOut struct {
	send func(fd uintptr) bool // trySend, made once
	pkt  []byte
	fd   int
	err  error
}

func (o *packetOut) sendPacket(rc syscall.RawConn, pkt []byte, fd int) error {
	if o.send == nil {
		o.send = o.trySend
	}
	o.pkt, o.fd = pkt, fd
	err := rc.Write(o.send)
	if err == nil {
		err = o.err
	}
	o.pkt, o.err = nil, nil
	return err
}

func (o *packetOut) trySend(fd uintptr) bool {
	if o.fd >= 0 {
		o.err = uapi.SendNonblock(int(fd), o.pkt, o.fd)
	} else {
		o.err = uapi.SendNonblock(int(fd), o.pkt)
	}
	return o.err != unix.EAGAIN
}
