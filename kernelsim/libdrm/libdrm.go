// Package libdrm is the client library of kernelsim's render nodes, shaped
// like libdrm: open a render node, create and share buffer objects, map
// them into the GPU address space, and submit command lists to contexts.
//
// A Device is safe for concurrent use: its requests run concurrently in
// the kernel, as ioctls on one fd do on Linux (a thread waiting in
// SyncobjWait does not hold up another thread's Submit). A process that
// shares a render-node fd with others (a child that inherited it, or a
// process that received it over a socket) wraps it with FromSharedFD.
package libdrm

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

// Device is an open render node: one drm file.
type Device struct {
	c *uapi.Conn
}

// Open opens a render node socket by path. Like open(2) of a render node,
// it returns once the drm file exists: connecting only queues the
// connection for the kernel to accept, so Open makes a VERSION round trip.
func Open(path string) (*Device, error) {
	c, err := uapi.Dial(path)
	if err != nil {
		return nil, fmt.Errorf("open render node: %w", err)
	}
	d := &Device{c: c}
	if _, err := d.Version(); err != nil {
		c.Close()
		return nil, fmt.Errorf("open render node %s: %w", path, err)
	}
	return d, nil
}

// FromConn makes a Device of an already connected render-node socket, for
// example one on which a restored task has just claimed its drm file. The
// Device owns c from then on.
func FromConn(c *uapi.Conn) *Device { return &Device{c: c} }

// Conn returns the device's connection, for requests the library does not
// wrap. Calls on it are serialised with the Device's own.
func (d *Device) Conn() *uapi.Conn { return d.c }

// OpenMinor opens renderD<minor> of the kernelsim runtime directory
// (KERNELSIM_RUNTIME_DIR or the default).
func OpenMinor(minor uint32) (*Device, error) {
	return Open(kernelsim.RenderNodePath(kernelsim.RuntimeDirFromEnv(), minor))
}

// FromFD wraps a connected render-node socket that this process alone
// uses, such as one it connected itself or one the CRIU plugin restored.
// The Device owns fd. For a socket other processes use too, see
// FromSharedFD.
func FromFD(fd int) *Device { return &Device{c: uapi.NewConn(fd)} }

// FromSharedFD wraps a render-node socket that other processes may hold
// and use at the same time: one inherited from a parent (fork), or
// received over a unix socket. The kernel answers a request on the socket
// it came on, and a reply that another process read could not reach its
// caller; so the Device sends its requests on a reply channel of its own,
// a new connection to the same render node that joins the same drm file
// (uapi.OpAttach), made on first use. The Device owns fd.
func FromSharedFD(fd int) *Device {
	return &Device{c: uapi.NewSharedConn(fd, func() (int, error) { return dialSameNode(fd) })}
}

// dialSameNode connects a new socket to the render node of drm file fd:
// at the path the daemon's socket is bound to, or, where this process
// sees the daemon's runtime directory elsewhere (a container's mount of
// it), at the same node under KERNELSIM_RUNTIME_DIR (or the default). A
// drm file being checkpointed takes no channel (EAGAIN): it is tried
// again until the checkpoint is done.
func dialSameNode(fd int) (int, error) {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return -1, fmt.Errorf("render node of fd %d: %w", fd, err)
	}
	ua, ok := sa.(*unix.SockaddrUnix)
	if !ok || !strings.HasPrefix(filepath.Base(ua.Name), "renderD") {
		return -1, fmt.Errorf("fd %d is not connected to a render node (peer %v)", fd, sa)
	}
	paths := []string{ua.Name, filepath.Join(kernelsim.RuntimeDirFromEnv(), "dri", filepath.Base(ua.Name))}
	var errs []error
	for _, p := range paths {
		ch, err := uapi.DialSocket(p)
		if err == nil {
			return ch, nil
		}
		errs = append(errs, err)
	}
	return -1, errors.Join(errs...)
}

// FD returns the drm file's descriptor.
func (d *Device) FD() int { return d.c.FD() }

// Close closes the drm file; the kernel releases everything it held.
func (d *Device) Close() error { return d.c.Close() }

// Version describes the device.
func (d *Device) Version() (*uapi.VersionReply, error) {
	r := &uapi.VersionReply{}
	_, err := d.c.Call(uapi.OpVersion, versionRequest, r)
	return r, err
}

// versionRequest is every VERSION's request (it has no fields); only
// ever read, by any number of calls at once.
var versionRequest = &uapi.VersionRequest{}

// BOCreate allocates a buffer object and returns its GEM handle.
func (d *Device) BOCreate(size uint64, domain uapi.Domain, flags, alignment uint64) (uint32, error) {
	r := &uapi.GemCreateReply{}
	_, err := d.c.Call(uapi.OpGemCreate, &uapi.GemCreateRequest{Size: size, Domain: domain, Flags: flags, Alignment: alignment}, r)
	return r.Handle, err
}

// BOClose closes a GEM handle.
func (d *Device) BOClose(handle uint32) error {
	_, err := d.c.Call(uapi.OpGemClose, &uapi.GemCloseRequest{Handle: handle}, nil)
	return err
}

// BOInfo describes a handle's BO.
func (d *Device) BOInfo(handle uint32) (*uapi.GemInfoReply, error) {
	r := &uapi.GemInfoReply{}
	_, err := d.c.Call(uapi.OpGemInfo, &uapi.GemInfoRequest{Handle: handle}, r)
	return r, err
}

// Write copies data into the BO at offset, in chunks.
func (d *Device) Write(handle uint32, offset uint64, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), uapi.MaxData)
		if _, err := d.c.Call(uapi.OpGemPwrite, &uapi.GemPwriteRequest{Handle: handle, Offset: offset, Data: data[:n]}, nil); err != nil {
			return err
		}
		data, offset = data[n:], offset+uint64(n)
	}
	return nil
}

// Read copies len(p) bytes of the BO at offset into p, in chunks.
func (d *Device) Read(handle uint32, offset uint64, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), uapi.MaxData)
		r := &uapi.GemPreadReply{}
		if _, err := d.c.Call(uapi.OpGemPread, &uapi.GemPreadRequest{Handle: handle, Offset: offset, Length: uint64(n)}, r); err != nil {
			return err
		}
		if len(r.Data) != n {
			return fmt.Errorf("pread: got %d bytes, want %d", len(r.Data), n)
		}
		copy(p, r.Data)
		p, offset = p[n:], offset+uint64(n)
	}
	return nil
}

// WaitIdle waits until the BO is idle for an access of the given kind; a
// negative timeout waits forever. It reports whether it is still busy.
func (d *Device) WaitIdle(handle uint32, write bool, timeout time.Duration) (bool, error) {
	r := &uapi.GemWaitIdleReply{}
	_, err := d.c.Call(uapi.OpGemWaitIdle, &uapi.GemWaitIdleRequest{Handle: handle, Write: write, TimeoutNs: int64(timeout)}, r)
	return r.Busy, err
}

// VMMap maps part of a BO into the file's GPU address space.
func (d *Device) VMMap(handle uint32, boOffset, va, size, flags uint64) error {
	_, err := d.c.Call(uapi.OpVmMap, &uapi.VmMapRequest{Handle: handle, BoOffset: boOffset, Va: va, Size: size, Flags: flags}, nil)
	return err
}

// VMUnmap removes the mapping at va.
func (d *Device) VMUnmap(va uint64) error {
	_, err := d.c.Call(uapi.OpVmUnmap, &uapi.VmUnmapRequest{Va: va}, nil)
	return err
}

// ExportDmaBuf exports a handle as a dma-buf file descriptor (owned by the
// caller). Exporting the same BO again returns the same file.
func (d *Device) ExportDmaBuf(handle uint32) (int, error) {
	fds, err := d.c.Call(uapi.OpPrimeHandleToFd, &uapi.PrimeHandleToFdRequest{Handle: handle}, nil)
	if err != nil {
		return -1, err
	}
	if len(fds) != 1 {
		uapi.CloseFDs(fds)
		return -1, fmt.Errorf("PRIME export: got %d fds", len(fds))
	}
	return fds[0], nil
}

// ImportDmaBuf imports a dma-buf fd (which stays the caller's) and returns
// the file's handle for its BO.
func (d *Device) ImportDmaBuf(fd int) (uint32, error) {
	r := &uapi.PrimeFdToHandleReply{}
	_, err := d.c.Call(uapi.OpPrimeFdToHandle, &uapi.PrimeFdToHandleRequest{}, r, fd)
	return r.Handle, err
}

// CtxCreate creates a GPU context.
func (d *Device) CtxCreate(priority int32) (uint32, error) {
	r := &uapi.CtxCreateReply{}
	_, err := d.c.Call(uapi.OpCtxCreate, &uapi.CtxCreateRequest{Priority: priority}, r)
	return r.CtxId, err
}

// CtxDestroy destroys a context, cancelling its queued work.
func (d *Device) CtxDestroy(id uint32) error {
	_, err := d.c.Call(uapi.OpCtxDestroy, &uapi.CtxDestroyRequest{CtxId: id}, nil)
	return err
}

// CtxQuery reports a context's state.
func (d *Device) CtxQuery(id uint32) (*uapi.CtxQueryReply, error) {
	r := &uapi.CtxQueryReply{}
	_, err := d.c.Call(uapi.OpCtxQuery, &uapi.CtxQueryRequest{CtxId: id}, r)
	return r, err
}

// Submit queues a job.
func (d *Device) Submit(req *uapi.SubmitRequest) (*uapi.SubmitReply, error) {
	r := &uapi.SubmitReply{}
	_, err := d.c.Call(uapi.OpSubmit, req, r)
	return r, err
}

// SyncobjCreate creates a syncobj.
func (d *Device) SyncobjCreate(signaled bool) (uint32, error) {
	r := &uapi.SyncobjCreateReply{}
	_, err := d.c.Call(uapi.OpSyncobjCreate, &uapi.SyncobjCreateRequest{Signaled: signaled}, r)
	return r.Handle, err
}

// SyncobjDestroy destroys a syncobj.
func (d *Device) SyncobjDestroy(h uint32) error {
	_, err := d.c.Call(uapi.OpSyncobjDestroy, &uapi.SyncobjHandleRequest{Handle: h}, nil)
	return err
}

// SyncobjReset removes a syncobj's fence.
func (d *Device) SyncobjReset(h uint32) error {
	_, err := d.c.Call(uapi.OpSyncobjReset, &uapi.SyncobjHandleRequest{Handle: h}, nil)
	return err
}

// SyncobjSignal signals a syncobj.
func (d *Device) SyncobjSignal(h uint32) error {
	_, err := d.c.Call(uapi.OpSyncobjSignal, &uapi.SyncobjHandleRequest{Handle: h}, nil)
	return err
}

// SyncobjQuery reports a syncobj's fence state.
func (d *Device) SyncobjQuery(h uint32) (*uapi.SyncobjQueryReply, error) {
	r := &uapi.SyncobjQueryReply{}
	_, err := d.c.Call(uapi.OpSyncobjQuery, &uapi.SyncobjHandleRequest{Handle: h}, r)
	return r, err
}

// SyncobjWait waits for syncobjs; a negative timeout waits forever.
func (d *Device) SyncobjWait(handles []uint32, timeout time.Duration, all, waitForSubmit bool) (uint32, error) {
	r := &uapi.SyncobjWaitReply{}
	_, err := d.c.Call(uapi.OpSyncobjWait, &uapi.SyncobjWaitRequest{Handles: handles, TimeoutNs: int64(timeout), WaitAll: all, WaitForSubmit: waitForSubmit}, r)
	return r.FirstSignaled, err
}

// SwSyncCreate creates a sw_sync timeline.
func (d *Device) SwSyncCreate() (uint32, error) {
	r := &uapi.SwSyncCreateReply{}
	_, err := d.c.Call(uapi.OpSwSyncCreate, &uapi.SwSyncCreateRequest{}, r)
	return r.Timeline, err
}

// SwSyncFence puts a fence for point on the timeline into a syncobj.
func (d *Device) SwSyncFence(timeline uint32, point uint64, syncobj uint32) error {
	_, err := d.c.Call(uapi.OpSwSyncFence, &uapi.SwSyncFenceRequest{Timeline: timeline, Point: point, Syncobj: syncobj}, nil)
	return err
}

// SwSyncInc advances a timeline.
func (d *Device) SwSyncInc(timeline uint32, inc uint64) error {
	_, err := d.c.Call(uapi.OpSwSyncInc, &uapi.SwSyncIncRequest{Timeline: timeline, Inc: inc}, nil)
	return err
}

// CloseFD closes a dma-buf fd.
func CloseFD(fd int) error { return unix.Close(fd) }
