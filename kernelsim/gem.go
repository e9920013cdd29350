package kernelsim

import (
	"fmt"
	"io"
	"sync"
	"syscall"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// Backing is a BO's memory. The GPU engine and pread/pwrite use it
// concurrently, as a real GPU and CPU mappings would; the lock only keeps
// each access atomic.
type Backing struct {
	mu   sync.RWMutex
	data []byte
}

func newBacking(size uint64) *Backing { return &Backing{data: make([]byte, size)} }

// Size is the length of the memory.
func (b *Backing) Size() uint64 { return uint64(len(b.data)) }

func (b *Backing) check(n int, off uint64) error {
	if off > uint64(len(b.data)) || uint64(n) > uint64(len(b.data))-off {
		return errnof(syscall.EINVAL, "access of %d bytes at offset %d outside a %d-byte BO", n, off, len(b.data))
	}
	return nil
}

// ReadAt copies len(p) bytes at off into p.
func (b *Backing) ReadAt(p []byte, off uint64) error {
	if err := b.check(len(p), off); err != nil {
		return err
	}
	b.mu.RLock()
	copy(p, b.data[off:])
	b.mu.RUnlock()
	return nil
}

// WriteAt copies p into the memory at off.
func (b *Backing) WriteAt(p []byte, off uint64) error {
	if err := b.check(len(p), off); err != nil {
		return err
	}
	b.mu.Lock()
	copy(b.data[off:], p)
	b.mu.Unlock()
	return nil
}

// WriteTo streams the whole memory to w.
func (b *Backing) WriteTo(w io.Writer) (int64, error) {
	var done int64
	for off := uint64(0); off < b.Size(); off += backingChunk {
		n := min(backingChunk, b.Size()-off)
		// Write straight from the memory: no copy on the way to the image.
		b.mu.RLock()
		m, err := w.Write(b.data[off : off+n])
		b.mu.RUnlock()
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Fill fills the whole memory from r, which must hold exactly Size
// bytes, and feeds them to h as well.
func (b *Backing) Fill(r io.Reader, h io.Writer) error {
	for off := uint64(0); off < b.Size(); off += backingChunk {
		n := min(backingChunk, b.Size()-off)
		b.mu.Lock()
		m, err := io.ReadFull(r, b.data[off:off+n])
		h.Write(b.data[off : off+uint64(m)])
		b.mu.Unlock()
		if err != nil {
			return fmt.Errorf("short image: %d of %d bytes: %w", off+uint64(m), b.Size(), err)
		}
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n > 0 {
		return fmt.Errorf("image longer than the %d-byte BO", b.Size())
	}
	return nil
}

// backingChunk is the unit in which BO memory is streamed, so that the GPU
// and CPU accesses are not locked out for a whole large BO.
const backingChunk = 1 << 20

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
	refs   int     // handles, jobs, and one for a live dma-buf
	dmabuf *DmaBuf // obj->dma_buf: its export, while that is alive

	charged bool   // the size is charged to uid (see Limits)
	uid     uint32 // who created it
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
	page := uint64(1) << d.drv.pageShift
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
	if flags&^d.drv.gemFlags != 0 {
		return 0, errnof(syscall.EINVAL, "flags %#x not supported by %s (allowed %#x)", flags, d.drv.name, d.drv.gemFlags)
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
		mem = newBacking(size)
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
	bo.dev.uncharge(bo.domain, bo.size)
	if bo.charged {
		k.acct.unchargeBO(bo.uid, region{minor: bo.dev.cfg.Minor, domain: bo.domain}, bo.size)
	}
	bo.resv.Release()
}
