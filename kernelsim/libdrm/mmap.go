package libdrm

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/uapi"
)

// Mapping is a CPU mapping of a BO: its memory, shared with the GPU and
// with every other mapping of the BO. See kernelsim's package doc for
// when the GPU's writes are visible through it and the CPU's to the GPU
// (after the jobs' fences; before the submit of the job that reads).
type Mapping struct {
	// Data is the mapped range of the BO.
	Data []byte
	// Offset is where Data starts in the BO.
	Offset uint64
	// WriteCombined: a VRAM BO, write-combined on real hardware (reads
	// through the mapping are slow there).
	WriteCombined bool
}

// Unmap unmaps the memory; the mapping's reference to the BO goes with it.
func (m *Mapping) Unmap() error {
	if m.Data == nil {
		return nil
	}
	err := unix.Munmap(m.Data)
	m.Data = nil
	return err
}

// Map maps [offset, offset+size) of a handle's BO into this process
// (GEM_MMAP, then mmap of the file the kernel returns, MAP_SHARED);
// size 0 maps the rest of the BO. prot is unix.PROT_READ and/or
// unix.PROT_WRITE. The mapping keeps the BO alive after its handle is
// closed.
func (d *Device) Map(handle uint32, offset, size uint64, prot int) (*Mapping, error) {
	r := &uapi.GemMmapReply{}
	fds, err := d.c.Call(uapi.OpGemMmap, &uapi.GemMmapRequest{Handle: handle}, r)
	if err != nil {
		return nil, err
	}
	return mapReply(fds, r, offset, size, prot)
}

// MapDmaBuf maps [offset, offset+size) of a dma-buf's BO (dma_buf_mmap),
// asking through the dma-buf fd itself: a process that holds only the
// dma-buf, and no drm file, can map it. size 0 maps the rest of the BO.
func MapDmaBuf(fd int, offset, size uint64, prot int) (*Mapping, error) {
	r := &uapi.GemMmapReply{}
	fds, err := uapi.CallReplyVia(fd, uapi.OpDmaBufMmap, &uapi.DmaBufMmapRequest{}, r)
	if err != nil {
		return nil, err
	}
	return mapReply(fds, r, offset, size, prot)
}

// mapReply maps the file a GEM_MMAP or DMABUF_MMAP reply carried, and
// closes it: the mapping holds it from then on.
func mapReply(fds []int, r *uapi.GemMmapReply, offset, size uint64, prot int) (*Mapping, error) {
	defer uapi.CloseFDs(fds)
	if len(fds) != 1 {
		return nil, fmt.Errorf("mmap: the reply carried %d files, want 1", len(fds))
	}
	if size == 0 && offset < r.Size {
		size = r.Size - offset
	}
	page := uint64(unix.Getpagesize())
	if offset%page != 0 || size == 0 || offset > r.Size || size > r.Size-offset {
		return nil, fmt.Errorf("mmap of [%d, +%d) of a %d-byte BO: %w", offset, size, r.Size, syscall.EINVAL)
	}
	data, err := unix.Mmap(fds[0], int64(offset), int(size), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes of a BO: %w", size, err)
	}
	return &Mapping{Data: data, Offset: offset, WriteCombined: r.WriteCombined}, nil
}
