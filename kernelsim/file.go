package kernelsim

import (
	"context"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// Cred is who opened a drm file (from the socket's peer credentials).
type Cred struct {
	PID      int32
	UID, GID uint32
}

// File is an open render node (struct drm_file): its own GEM handle table,
// PRIME table, GPU address space, contexts and syncobjs.
type File struct {
	k     *Kernel
	id    uint64
	dev   *Device
	owner Cred

	// under k.mu
	clientIno uint64   // inode of the client's end of the file's own socket, 0 when not served
	ios       []fileIO // the connections serving the file: its own socket, reply channels
	frozen    bool     // its connections are frozen by a checkpoint

	waiting  atomic.Int32 // requests waiting in the kernel (debug view)
	handles  *idr[*BO]
	prime    map[uint32]*DmaBuf
	vm       []*Mapping // sorted by VA
	contexts *idr[*Context]
	syncobjs *idr[*dma.Syncobj]
	swsync   *idr[*dma.SwSyncTimeline]
	paused   bool
	closed   bool
	priv     FilePriv // the driver's state (drm_file.driver_priv)
}

// Open creates a drm file on the device.
func (d *Device) Open(owner Cred) *File {
	k := d.k
	k.mu.Lock()
	defer k.mu.Unlock()
	return d.openLocked(owner)
}

func (d *Device) openLocked(owner Cred) *File {
	k := d.k
	k.nextFile++
	f := &File{
		k: k, id: k.nextFile, dev: d, owner: owner,
		handles:  newIDR[*BO](),
		prime:    make(map[uint32]*DmaBuf),
		contexts: newIDR[*Context](),
		syncobjs: newIDR[*dma.Syncobj](),
		swsync:   newIDR[*dma.SwSyncTimeline](),
	}
	f.priv = d.drv.impl.Open(f)
	k.files[f.id] = f
	return f
}

// ID is the file's kernel-wide id.
func (f *File) ID() uint64 { return f.id }

// Device returns the device the file is open on.
func (f *File) Device() *Device { return f.dev }

// Owner returns the credentials of the opener.
func (f *File) Owner() Cred { return f.owner }

// Close releases the file (drm_file_free / postclose): contexts are torn
// down, which cancels their queued work, then every handle, PRIME entry,
// mapping, syncobj and timeline goes.
func (f *File) Close() {
	k := f.k
	k.mu.Lock()
	if f.closed {
		k.mu.Unlock()
		return
	}
	f.closed = true
	ctxs := make([]*Context, 0, f.contexts.len())
	for _, id := range f.contexts.ids() {
		c, _ := f.contexts.remove(id)
		ctxs = append(ctxs, c)
	}
	k.mu.Unlock()

	// Entity teardown may wait for the hardware to let go of a job, and
	// freeing a job takes k.mu, so it runs unlocked.
	for _, c := range ctxs {
		c.destroy()
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	f.priv.Postclose()
	// The mappings go all at once: dropping them handle by handle would
	// cost a pass over them per handle.
	f.vm = nil
	for _, h := range f.handles.ids() {
		f.closeHandle(h)
	}
	for _, id := range f.syncobjs.ids() {
		s, _ := f.syncobjs.remove(id)
		s.Release()
	}
	for _, id := range f.swsync.ids() {
		t, _ := f.swsync.remove(id)
		t.Release()
	}
	delete(k.files, f.id)
}

// lookup returns the BO of a handle. Called with k.mu held.
func (f *File) lookup(handle uint32) (*BO, error) {
	if f.closed {
		return nil, errnof(syscall.EBADF, "file closed")
	}
	bo, ok := f.handles.get(handle)
	if !ok {
		return nil, errnof(syscall.ENOENT, "no GEM handle %d", handle)
	}
	return bo, nil
}

// GemCreate allocates a BO and returns its handle (the lowest free one).
func (f *File) GemCreate(size uint64, domain uapi.Domain, flags, alignment uint64) (uint32, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return 0, errnof(syscall.EBADF, "file closed")
	}
	// Charge the owner before the memory is allocated, as dmem does.
	if _, err := f.dev.validateCreate(size, domain, flags, alignment); err != nil {
		return 0, err
	}
	r := region{minor: f.dev.cfg.Minor, domain: domain}
	if err := k.acct.chargeBO(f.owner, r, f.dev.domainSize(domain), size); err != nil {
		return 0, err
	}
	bo, err := f.dev.newBO(size, domain, flags, alignment, nil)
	if err != nil {
		k.acct.unchargeBO(f.owner.UID, r, size)
		return 0, err
	}
	bo.chargedTo(f.owner.UID)
	h, err := f.handles.alloc(bo)
	if err != nil {
		bo.put()
		return 0, errnof(syscall.ENOSPC, "%v", err)
	}
	return h, nil
}

// GemClose drops a handle (DRM_IOCTL_GEM_CLOSE). An unknown handle is
// EINVAL, as drm_gem_handle_delete returns (lookups elsewhere are ENOENT).
func (f *File) GemClose(handle uint32) error {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return errnof(syscall.EBADF, "file closed")
	}
	if _, ok := f.handles.get(handle); !ok {
		return errnof(syscall.EINVAL, "no GEM handle %d", handle)
	}
	f.closeHandle(handle)
	return nil
}

// closeHandle drops handle, its PRIME entry and its mappings, as
// drm_gem_object_release_handle does. Called with k.mu held.
func (f *File) closeHandle(handle uint32) {
	bo, ok := f.handles.remove(handle)
	if !ok {
		return
	}
	f.removePrime(handle)
	f.vm = removeMappings(f.vm, func(m *Mapping) bool { return m.Handle == handle })
	bo.put()
}

// GemInfo describes a handle's BO.
func (f *File) GemInfo(handle uint32) (*uapi.GemInfoReply, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	bo, err := f.lookup(handle)
	if err != nil {
		return nil, err
	}
	return &uapi.GemInfoReply{Size: bo.size, Domain: bo.domain, Flags: bo.flags, Alignment: bo.alignment, BoId: bo.id}, nil
}

// BO returns the BO behind a handle.
func (f *File) BO(handle uint32) (*BO, error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	return f.lookup(handle)
}

// GemPwrite writes data into the BO at offset.
func (f *File) GemPwrite(handle uint32, offset uint64, data []byte) error {
	bo, err := f.BO(handle)
	if err != nil {
		return err
	}
	return bo.mem.WriteAt(data, offset)
}

// GemPread reads length bytes of the BO at offset.
func (f *File) GemPread(handle uint32, offset, length uint64) ([]byte, error) {
	bo, err := f.BO(handle)
	if err != nil {
		return nil, err
	}
	if length > uapi.MaxData {
		return nil, errnof(syscall.EINVAL, "pread of %d bytes exceeds %d", length, uapi.MaxData)
	}
	p := make([]byte, length)
	if err := bo.mem.ReadAt(p, offset); err != nil {
		return nil, err
	}
	return p, nil
}

// GemWaitIdle waits until an access of the given kind would not have to
// wait for the GPU. It reports whether the BO is still busy after timeout.
func (f *File) GemWaitIdle(ctx context.Context, handle uint32, write bool, timeout time.Duration) (busy bool, err error) {
	bo, err := f.BO(handle)
	if err != nil {
		return false, err
	}
	u := dma.UsageRW(write)
	if timeout == 0 {
		return !bo.resv.TestSignaled(u), nil
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// A replayable blocking point: the wait has no effect, so a
	// checkpoint may catch the request here and replay it after restore.
	err = blockingWait(ctx, func(ctx context.Context) error { return bo.resv.Wait(ctx, u) })
	if err != nil {
		if ctx.Err() != nil {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// Mapping is one GPU virtual address range of a file mapping part of a BO.
type Mapping struct {
	Handle   uint32
	BOOffset uint64
	VA       uint64
	Size     uint64
	Flags    uint64
	bo       *BO
}

func removeMappings(vm []*Mapping, drop func(*Mapping) bool) []*Mapping {
	out := vm[:0]
	for _, m := range vm {
		if !drop(m) {
			out = append(out, m)
		}
	}
	return out
}

// VMMap maps [boOffset, boOffset+size) of a handle's BO at va in the
// file's GPU address space. Ranges must be page-aligned, inside the BO and
// the address space, and must not overlap an existing mapping.
func (f *File) VMMap(handle uint32, boOffset, va, size, flags uint64) error {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	bo, err := f.lookup(handle)
	if err != nil {
		return err
	}
	page := uint64(1) << f.dev.drv.pageShift
	if size == 0 || va%page != 0 || boOffset%page != 0 || size%page != 0 {
		return errnof(syscall.EINVAL, "VA map va=%#x offset=%#x size=%#x: not page aligned or empty", va, boOffset, size)
	}
	if boOffset > bo.size || size > bo.size-boOffset {
		return errnof(syscall.EINVAL, "VA map: range [%#x,+%#x) outside the %#x-byte BO", boOffset, size, bo.size)
	}
	if va > f.dev.drv.vaMax || size > f.dev.drv.vaMax-va {
		return errnof(syscall.EINVAL, "VA map: [%#x,+%#x) outside the address space", va, size)
	}
	i := sort.Search(len(f.vm), func(i int) bool { return f.vm[i].VA >= va })
	if i > 0 && f.vm[i-1].VA+f.vm[i-1].Size > va {
		return errnof(syscall.EEXIST, "VA map: [%#x,+%#x) overlaps mapping at %#x", va, size, f.vm[i-1].VA)
	}
	if i < len(f.vm) && va+size > f.vm[i].VA {
		return errnof(syscall.EEXIST, "VA map: [%#x,+%#x) overlaps mapping at %#x", va, size, f.vm[i].VA)
	}
	m := &Mapping{Handle: handle, BOOffset: boOffset, VA: va, Size: size, Flags: flags, bo: bo}
	f.vm = append(f.vm, nil)
	copy(f.vm[i+1:], f.vm[i:])
	f.vm[i] = m
	return nil
}

// VMUnmap removes the mapping that starts at va.
func (f *File) VMUnmap(va uint64) error {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return errnof(syscall.EBADF, "file closed")
	}
	for i, m := range f.vm {
		if m.VA == va {
			f.vm = append(f.vm[:i], f.vm[i+1:]...)
			return nil
		}
	}
	return errnof(syscall.ENOENT, "no mapping at VA %#x", va)
}

// Mappings returns a copy of the file's mappings.
func (f *File) Mappings() []Mapping {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]Mapping, len(f.vm))
	for i, m := range f.vm {
		out[i] = *m
	}
	return out
}
