// Package bomem allocates the memory of buffer objects outside the Go heap
// and gives it back to the operating system the moment it is freed, as a
// kernel frees a BO's pages. The daemon's resident memory then follows
// its live BOs instead of the garbage collector's pace: a restore into the
// daemon right after the dumped processes died does not find their BOs'
// memory still held.
//
// Small allocations come from slabs of power-of-two slots (one slab
// family per size up to MaxSlot), so a hundred thousand small BOs do not
// cost a hundred thousand mappings; a freed slot's pages are dropped with
// MADV_DONTNEED (they read as zeros again). Larger allocations are
// mappings of their own, unmapped when freed. Memory is only touched, and
// so only resident, where it is written.
package bomem

import (
	"fmt"
	"math/bits"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	pageSize = 4096
	// MaxSlot is the largest allocation served from a slab.
	MaxSlot = 512 << 10
	// slabSize is the virtual size of one slab (never resident as a
	// whole).
	slabSize = 64 << 20

	minShift = 12 // 4 KiB slots
	classes  = 8  // 4 KiB .. 512 KiB
)

type slab struct {
	mem []byte
}

type class struct {
	mu    sync.Mutex
	slot  int
	slabs []slab
	free  [][]byte // freed slots, full capacity
	next  int      // next never-used slot of the last slab
}

var slabs [classes]class

func init() {
	for i := range slabs {
		slabs[i].slot = 1 << (minShift + i)
	}
}

func classOf(size uint64) int {
	if size <= pageSize {
		return 0
	}
	return bits.Len64(size-1) - minShift
}

// Alloc returns size bytes of zeroed memory (len size). Free gives it back;
// nothing else may.
func Alloc(size uint64) ([]byte, error) {
	if size == 0 {
		return []byte{}, nil
	}
	if size > MaxSlot {
		return allocLarge(size)
	}
	c := &slabs[classOf(size)]
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s[:size], nil
	}
	if len(c.slabs) == 0 || c.next == slabSize/c.slot {
		mem, err := mapAnon(slabSize)
		if err != nil {
			return nil, fmt.Errorf("bomem: map a slab of %d bytes: %w", slabSize, err)
		}
		c.slabs = append(c.slabs, slab{mem: mem})
		c.next = 0
	}
	last := c.slabs[len(c.slabs)-1].mem
	off := c.next * c.slot
	c.next++
	return last[off : off+int(size) : off+c.slot], nil
}

// Free gives memory from Alloc back to the system. b must be what Alloc
// returned (any length, the same start and capacity) and is not used
// again by anyone.
func Free(b []byte) error {
	if cap(b) == 0 {
		return nil
	}
	full := b[:cap(b)]
	if cap(b) > MaxSlot {
		if err := unmap(full); err != nil {
			return fmt.Errorf("bomem: unmap %d bytes: %w", cap(b), err)
		}
		return nil
	}
	ci := classOf(uint64(cap(b)))
	c := &slabs[ci]
	if c.slot != cap(b) || !c.owns(full) {
		return fmt.Errorf("bomem: free of %d bytes at %p that Alloc did not return", cap(b), unsafe.Pointer(&full[0]))
	}
	// The pages go back now and read as zeros when the slot is reused.
	if err := unix.Madvise(full, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("bomem: drop %d bytes: %w", cap(b), err)
	}
	c.mu.Lock()
	c.free = append(c.free, full)
	c.mu.Unlock()
	return nil
}

// allocLarge maps memory of its own. From hugeSize up it is aligned to
// 2 MiB, so that where transparent huge pages are always on, each 2 MiB
// can be one. It is not advised for them (MADV_HUGEPAGE): with the usual
// defrag setting ("madvise") advised memory is compacted for in the
// faulting thread, and filling fresh BO memory measured dearer so than
// in 4 KiB pages (reading 1 GiB into it: 0.40-1.0 s of CPU against
// 0.36-0.40; a restore of memory and BOs together 1.25-1.64 against
// 0.96-1.19 times the slower alone, see docs/BENCHMARKS.md).
func allocLarge(size uint64) ([]byte, error) {
	n := (size + pageSize - 1) &^ (pageSize - 1)
	if n < size || n > 1<<46 {
		return nil, fmt.Errorf("bomem: %d bytes: %w", size, unix.ENOMEM)
	}
	if n < hugeSize {
		mem, err := mapAnon(n)
		if err != nil {
			return nil, fmt.Errorf("bomem: map %d bytes: %w", n, err)
		}
		return mem[:size:n], nil
	}
	// Map a huge page more and trim both ends to an aligned range.
	raw, err := mapAnon(n + hugeSize)
	if err != nil {
		return nil, fmt.Errorf("bomem: map %d bytes: %w", n, err)
	}
	base := uintptr(unsafe.Pointer(&raw[0]))
	head := (hugeSize - base%hugeSize) % hugeSize
	if head > 0 {
		unmap(raw[:head])
	}
	if tail := hugeSize - head; tail > 0 {
		unmap(raw[head+uintptr(n) : head+uintptr(n)+tail])
	}
	mem := raw[head : head+uintptr(n) : head+uintptr(n)]
	return mem[:size:n], nil
}

// mapAnon maps n bytes of private anonymous memory, reserving no swap
// (only what is written is ever resident). It bypasses unix.Mmap, whose
// bookkeeping would refuse to unmap the trimmed or partial ranges.
func mapAnon(n uint64) ([]byte, error) {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), n), nil
}

func unmap(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(&b[0]), uintptr(len(b)))
}

const hugeSize = 2 << 20

func (c *class) owns(b []byte) bool {
	p := uintptr(unsafe.Pointer(&b[0]))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.slabs {
		base := uintptr(unsafe.Pointer(&s.mem[0]))
		if p >= base && p < base+slabSize {
			return (p-base)%uintptr(c.slot) == 0
		}
	}
	return false
}
