package kernelsim

import (
	"fmt"
	"sync"
	"syscall"

	"drmcr/kernelsim/bomem"
	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// Backing is a BO's memory. The GPU engine and pread/pwrite use it
// concurrently, as a real GPU and CPU mappings would; the lock only keeps
// each access atomic, and keeps every access out once the memory is
// released. The memory lives outside the Go heap (package bomem) and goes
// back to the system when the BO dies.
//
// A BO that a client maps (GEM_MMAP, a dma-buf's mmap) has its memory
// moved into a memfd the first time (share), which the client maps too;
// nothing outside the lock ever holds data, so the move is invisible to
// the rest of the kernel. A restored BO whose contents criu restores as a
// process's mapping starts without memory (pending) until the restore
// session adopts that mapping's memfd.
type Backing struct {
	size    uint64
	mu      sync.RWMutex
	data    []byte        // nil once released, or while pending
	shared  *bomem.Shared // the memfd data lives in, once shared
	pending bool          // restored memory not adopted yet
}

func newBacking(size uint64) (*Backing, error) {
	data, err := bomem.Alloc(size)
	if err != nil {
		return nil, errnof(syscall.ENOMEM, "BO memory: %v", err)
	}
	return &Backing{size: size, data: data}, nil
}

// newPendingBacking is memory that a restore session adopts later.
func newPendingBacking(size uint64) *Backing {
	return &Backing{size: size, pending: true}
}

// release gives the memory back. Accesses after it fail.
func (b *Backing) release() {
	b.mu.Lock()
	data, shared := b.data, b.shared
	b.data, b.shared, b.pending = nil, nil, false
	b.mu.Unlock()
	var err error
	switch {
	case shared != nil:
		err = shared.Free()
	case data != nil:
		err = bomem.Free(data)
	}
	if err != nil {
		panic(err) // a bug in the BO lifetime, not bad input
	}
}

// share moves the memory into a memfd, once, and returns it; the pages
// never written stay holes. The lock keeps every access out meanwhile.
func (b *Backing) share() (*bomem.Shared, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shared != nil {
		return b.shared, nil
	}
	if b.data == nil {
		return nil, b.check(0, 0)
	}
	s, err := bomem.NewShared(memfdName, b.size, b.data)
	if err != nil {
		return nil, errnof(syscall.ENOMEM, "move BO memory into a memfd: %v", err)
	}
	if err := bomem.Free(b.data); err != nil {
		panic(err)
	}
	b.data, b.shared = s.Bytes(), s
	return s, nil
}

// memfdName is the name of BO memfds, as /proc/PID/maps shows them
// ("/memfd:kernelsim-bo (deleted)").
const memfdName = "kernelsim-bo"

// adopt makes s, restored memory whose contents are verified, the
// memory of a pending Backing.
func (b *Backing) adopt(s *bomem.Shared) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.pending {
		return errnof(syscall.EINVAL, "BO memory is not waiting for restored memory")
	}
	b.data, b.shared, b.pending = s.Bytes(), s, false
	return nil
}

// sharedMem returns the memfd of shared memory, or nil.
func (b *Backing) sharedMem() *bomem.Shared {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.shared
}

// Size is the length of the memory.
func (b *Backing) Size() uint64 { return b.size }

// check bounds-checks an access. Called with b.mu held.
func (b *Backing) check(n int, off uint64) error {
	if b.data == nil {
		if b.pending {
			return errnof(syscall.EAGAIN, "access to the memory of a BO that is still being restored")
		}
		return errnof(syscall.ENODEV, "access to the memory of a freed BO")
	}
	if off > b.size || uint64(n) > b.size-off {
		return errnof(syscall.EINVAL, "access of %d bytes at offset %d outside a %d-byte BO", n, off, b.size)
	}
	return nil
}

// ReadAt copies len(p) bytes at off into p.
func (b *Backing) ReadAt(p []byte, off uint64) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check(len(p), off); err != nil {
		return err
	}
	copy(p, b.data[off:])
	return nil
}

// WriteAt copies p into the memory at off.
func (b *Backing) WriteAt(p []byte, off uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(len(p), off); err != nil {
		return err
	}
	copy(b.data[off:], p)
	return nil
}

// with runs fn on the memory's bytes [off, off+n) with the lock held
// (shared when write is false): the checkpoint and restore paths read and
// write contents in place. The restore's loaders write with the lock
// shared: each writes its own chunk's range, and nothing else touches
// the memory before its contents are verified; the lock still keeps
// release out while they are at it.
func (b *Backing) with(off, n uint64, write bool, fn func([]byte) error) error {
	if write {
		b.mu.Lock()
		defer b.mu.Unlock()
	} else {
		b.mu.RLock()
		defer b.mu.RUnlock()
	}
	if n > 1<<62 {
		return errnof(syscall.EINVAL, "access of %d bytes", n)
	}
	if err := b.check(int(n), off); err != nil {
		return err
	}
	return fn(b.data[off : off+n])
}

// BO is a GEM buffer object (drm_gem_object).
type BO struct {
	id        uint64
	dev       *Device
	size      uint64
	domain    uapi.Domain
	flags     uint64
	alignment uint64
	mem       *Backing
	resv      *dma.Resv

	// under k.mu
	refs   int      // handles, jobs, one for a live dma-buf, one for CPU mappings
	dmabuf *DmaBuf  // obj->dma_buf: its export, while that is alive
	maps   *cpuMaps // once a client mapped it (mmap.go)

	charged bool   // the size is charged to uid (see Limits)
	uid     uint32 // who created it

	// exporter is set on an import attachment (drm_gem_prime_import_dev
	// of another device's dma-buf): a GEM object of the importing device
	// with no memory of its own; mem and resv are the exporter's BO's,
	// dmabuf the dma-buf it imports (which it holds, as get_dma_buf
	// does), and it holds a reference on the exporter's BO.
	exporter *BO
}

// real is the BO that owns the memory: the exporter's for an import
// attachment, else the BO itself.
func (bo *BO) real() *BO {
	if bo.exporter != nil {
		return bo.exporter
	}
	return bo
}

// importAttach makes an import attachment of db on device d, with one
// reference. Called with k.mu held.
func (d *Device) importAttach(db *DmaBuf) *BO {
	k := d.k
	exp := db.bo.real()
	exp.get()
	db.getFile()
	k.nextBO++
	bo := &BO{
		id: k.nextBO, dev: d, size: exp.size, domain: uapi.Domain_DOMAIN_GTT,
		alignment: exp.alignment, mem: exp.mem, resv: exp.resv, refs: 1,
		exporter: exp, dmabuf: db,
	}
	k.bos[bo.id] = bo
	return bo
}

// chargedTo records that the BO's size is charged to uid's limit, to be
// uncharged when it is freed. Called with k.mu held.
func (bo *BO) chargedTo(uid uint32) { bo.charged, bo.uid = true, uid }

// ID is the BO's kernel-wide id (as in the debug view).
func (bo *BO) ID() uint64 { return bo.id }

// Mem returns the BO's memory.
func (bo *BO) Mem() *Backing { return bo.mem }

// Resv returns the BO's reservation object.
func (bo *BO) Resv() *dma.Resv { return bo.resv }

func (bo *BO) state() *uapi.BoState {
	st := &uapi.BoState{
		BoId: bo.id, Size: bo.size, Domain: bo.domain, Flags: bo.flags,
		Alignment: bo.alignment, Minor: bo.dev.cfg.Minor,
	}
	if bo.dmabuf != nil {
		st.DmabufInode = bo.dmabuf.ino
	}
	return st
}

// MaxBOSize is the largest BO a device creates (64 GiB).
const MaxBOSize = 1 << 36

// validateCreate checks a create request against the driver's rules and
// returns the effective alignment.
func (d *Device) validateCreate(size uint64, domain uapi.Domain, flags, alignment uint64) (uint64, error) {
	return d.drv.validateCreate(size, domain, flags, alignment)
}

func (drv *driver) validateCreate(size uint64, domain uapi.Domain, flags, alignment uint64) (uint64, error) {
	page := uint64(1) << drv.pageShift
	if size == 0 {
		return 0, errnof(syscall.EINVAL, "BO size 0")
	}
	if size%page != 0 {
		return 0, errnof(syscall.EINVAL, "BO size %d is not a multiple of the %d-byte page", size, page)
	}
	if size > MaxBOSize {
		return 0, errnof(syscall.EINVAL, "BO size %d too large (at most %d)", size, uint64(MaxBOSize))
	}
	if domain != uapi.Domain_DOMAIN_VRAM && domain != uapi.Domain_DOMAIN_GTT {
		return 0, errnof(syscall.EINVAL, "bad domain %d", domain)
	}
	if flags&^drv.gemFlags != 0 {
		return 0, errnof(syscall.EINVAL, "flags %#x not supported by %s (allowed %#x)", flags, drv.name, drv.gemFlags)
	}
	if alignment == 0 {
		alignment = page
	}
	if alignment&(alignment-1) != 0 || alignment > 1<<30 {
		return 0, errnof(syscall.EINVAL, "alignment %d is not a power of two up to 1 GiB", alignment)
	}
	return max(alignment, page), nil
}

// newBO allocates a BO with one reference. Called with k.mu held.
func (d *Device) newBO(size uint64, domain uapi.Domain, flags, alignment uint64, mem *Backing) (*BO, error) {
	alignment, err := d.validateCreate(size, domain, flags, alignment)
	if err != nil {
		return nil, err
	}
	if mem != nil && mem.Size() != size {
		return nil, fmt.Errorf("backing of %d bytes for a %d-byte BO", mem.Size(), size)
	}
	if err := d.charge(domain, size); err != nil {
		return nil, err
	}
	if mem == nil {
		if mem, err = newBacking(size); err != nil {
			d.uncharge(domain, size)
			return nil, err
		}
	}
	k := d.k
	k.nextBO++
	bo := &BO{
		id: k.nextBO, dev: d, size: size, domain: domain, flags: flags,
		alignment: alignment, mem: mem, resv: dma.NewResv(), refs: 1,
	}
	k.bos[bo.id] = bo
	return bo, nil
}

// get takes a reference. Called with k.mu held.
func (bo *BO) get() { bo.refs++ }

// put drops a reference and frees the BO with the last. Called with k.mu
// held.
func (bo *BO) put() {
	bo.refs--
	if bo.refs > 0 {
		return
	}
	k := bo.dev.k
	delete(k.bos, bo.id)
	if exp := bo.exporter; exp != nil {
		// An attachment owns nothing but its references.
		bo.dmabuf.putFile()
		exp.put()
		return
	}
	bo.dev.uncharge(bo.domain, bo.size)
	if bo.charged {
		k.acct.unchargeBO(bo.uid, region{minor: bo.dev.cfg.Minor, domain: bo.domain}, bo.size)
	}
	bo.resv.Release()
	k.untrackMaps(bo)
	bo.mem.release()
}
