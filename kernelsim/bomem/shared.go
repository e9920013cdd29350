package bomem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Shared is BO memory that other processes can map: a memfd that the
// kernel maps MAP_SHARED, so that a client mapping the same file (its own
// open file description of it, from Open) shares the memory with the GPU.
//
// The file is sealed against shrinking and growing, and its seals are
// sealed: no process holding it can truncate the memory under a mapping
// of the daemon's (which would make its accesses fault) or seal it
// against writes.
//
// The kernel's own open file description is a counted one (opened
// through /proc/self/fd, not the one memfd_create returns, which Linux
// leaves out of the file's writer count and its close notifications):
// InUse then tells whether any other process still holds the file, open
// or mapped, by asking for a write lease.
type Shared struct {
	fd   int
	mem  []byte // len: the BO's size; cap: the mapping's
	dev  uint64
	ino  uint64
	size uint64
}

// SealsRequired are the seals every BO memfd carries.
const SealsRequired = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// NewShared makes a memfd of size bytes named name holding the contents
// of from (len size or nil: zeros). Only the pages of from that hold
// something other than zeros are copied: a page never written is not
// read (when /proc/self/pagemap says it is not present) and costs
// nothing in the file, which keeps a hole there.
func NewShared(name string, size uint64, from []byte) (*Shared, error) {
	if from != nil && uint64(len(from)) != size {
		return nil, fmt.Errorf("bomem: %d bytes to share from a %d-byte buffer", size, len(from))
	}
	n := (size + pageSize - 1) &^ (pageSize - 1)
	if n < size || n > 1<<46 {
		return nil, fmt.Errorf("bomem: shared memory of %d bytes: %w", size, unix.ENOMEM)
	}
	mfd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("bomem: memfd_create: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.Ftruncate(mfd, int64(n)); err != nil {
		return nil, fmt.Errorf("bomem: size memfd to %d bytes: %w", n, err)
	}
	if from != nil {
		if err := copyWritten(mfd, from); err != nil {
			return nil, err
		}
	}
	if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, SealsRequired); err != nil {
		return nil, fmt.Errorf("bomem: seal memfd: %w", err)
	}
	fd, err := reopen(mfd)
	if err != nil {
		return nil, err
	}
	s, err := mapShared(fd, size)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

// AdoptShared takes over fd, a memfd some other process made (a restored
// task's, which criu filled), as the memory of a size-byte BO. The file
// must be a regular file of exactly that size (rounded to the page),
// open for reading and writing, and carry SealsRequired: it is what
// NewShared made before the checkpoint. fd is closed in any case: the
// memory is kept through a description of its own.
func AdoptShared(fd int, size uint64) (*Shared, error) {
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("bomem: fstat: %w", err)
	}
	n := (size + pageSize - 1) &^ (pageSize - 1)
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, fmt.Errorf("bomem: adopt: not a regular file (mode %#o)", st.Mode)
	case uint64(st.Size) != n:
		return nil, fmt.Errorf("bomem: adopt: the file has %d bytes, the BO %d", st.Size, n)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("bomem: adopt: F_GETFL: %w", err)
	}
	if fl&unix.O_ACCMODE != unix.O_RDWR {
		return nil, fmt.Errorf("bomem: adopt: the file is not open for reading and writing")
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("bomem: adopt: not a memfd (F_GET_SEALS: %w)", err)
	}
	if seals&SealsRequired != SealsRequired {
		return nil, fmt.Errorf("bomem: adopt: the memfd has seals %#x, a BO's has at least %#x", seals, SealsRequired)
	}
	// The kernel's description must be a counted one for InUse (see
	// Shared): the one handed over may be memfd_create's own, which
	// would make the lease probe find a writer for good.
	own, err := reopen(fd)
	if err != nil {
		return nil, err
	}
	s, err := mapShared(own, size)
	if err != nil {
		unix.Close(own)
		return nil, err
	}
	unix.Close(fd)
	ok = true
	return s, nil
}

// reopen opens a new counted open file description of memfd mfd.
func reopen(mfd int) (int, error) {
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(mfd), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("bomem: reopen memfd: %w", err)
	}
	return fd, nil
}

func mapShared(fd int, size uint64) (*Shared, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("bomem: fstat: %w", err)
	}
	n := (size + pageSize - 1) &^ (pageSize - 1)
	s := &Shared{fd: fd, dev: st.Dev, ino: st.Ino, size: size}
	if n == 0 {
		s.mem = []byte{}
		return s, nil
	}
	p, err := unix.MmapPtr(fd, 0, nil, uintptr(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("bomem: map %d bytes of memfd: %w", n, err)
	}
	s.mem = unsafe.Slice((*byte)(p), n)[:size:n]
	// Advice only: where shmem huge pages are enabled "advise", it
	// spares a fault per 4 KiB.
	unix.Madvise(s.mem[:n], unix.MADV_HUGEPAGE)
	return s, nil
}

// Bytes is the memory (len: the BO's size).
func (s *Shared) Bytes() []byte { return s.mem }

// Inode identifies the file: its device and inode, as /proc/PID/maps and
// fstat show them.
func (s *Shared) Inode() (dev, ino uint64) { return s.dev, s.ino }

// Open returns a new open file description of the file, for reading and
// writing, close-on-exec. The caller owns it.
func (s *Shared) Open() (int, error) { return reopen(s.fd) }

// InUse reports whether another open file description of the file that
// can write exists: a process has it open, or mapped (a mapping holds
// its file), or it is in flight in a unix socket. It asks Linux for a
// write lease, granted only when the kernel's own description is the
// file's only writer, and gives the lease back at once. Descriptions
// memfd_create returns are not counted (see Shared): Open never hands
// one out.
func (s *Shared) InUse() (bool, error) {
	_, err := unix.FcntlInt(uintptr(s.fd), unix.F_SETLEASE, unix.F_WRLCK)
	switch {
	case err == nil:
		if _, err := unix.FcntlInt(uintptr(s.fd), unix.F_SETLEASE, unix.F_UNLCK); err != nil {
			return false, fmt.Errorf("bomem: give back a lease: %w", err)
		}
		return false, nil
	case errors.Is(err, unix.EAGAIN):
		return true, nil
	}
	return true, fmt.Errorf("bomem: write lease (fs.leases-enable?): %w", err)
}

// DataMap records where shared memory holds data; the rest are holes,
// which read as zeros and hold no memory (reading a hole through the
// mapping would allocate it, so checksums of holes use zeros instead).
// It comes from one pass of SEEK_DATA and SEEK_HOLE over the whole
// memory: asked range by range, each SEEK_HOLE scans from the range to
// the next hole, which in memory written throughout is the end, and a
// pass over a BO's chunks cost time quadratic in its size (80 ms of a
// 180 ms check of 1 GiB in 16 BOs). The map is a snapshot: take it while
// nothing writes the memory (a frozen tree). It holds one extent per run
// of data: at most one per two pages.
type DataMap struct {
	data [][2]uint64 // [start, end) of each run of data, in order
}

// DataMap maps the memory's data and holes.
func (s *Shared) DataMap() (*DataMap, error) {
	m := &DataMap{}
	for off := uint64(0); off < s.size; {
		d, err := unix.Seek(s.fd, int64(off), unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data from off on
		}
		if err != nil {
			return nil, fmt.Errorf("bomem: SEEK_DATA at %d: %w", off, err)
		}
		if uint64(d) >= s.size {
			break
		}
		h, err := unix.Seek(s.fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("bomem: SEEK_HOLE at %d: %w", d, err)
		}
		end := min(uint64(h), s.size)
		m.data = append(m.data, [2]uint64{uint64(d), end})
		off = end
	}
	return m, nil
}

// Extents calls fn for each extent of [off, off+n) in order, saying
// whether it holds data or is a hole.
func (m *DataMap) Extents(off, n uint64, fn func(off, n uint64, data bool) error) error {
	end := off + n
	i := sort.Search(len(m.data), func(i int) bool { return m.data[i][1] > off })
	for off < end {
		if i == len(m.data) || m.data[i][0] >= end {
			return fn(off, end-off, false)
		}
		if start := m.data[i][0]; start > off {
			if err := fn(off, start-off, false); err != nil {
				return err
			}
			off = start
		}
		e := min(m.data[i][1], end)
		if err := fn(off, e-off, true); err != nil {
			return err
		}
		off = e
		i++
	}
	return nil
}

// Free unmaps the memory and closes the kernel's description of the file;
// the memory lives on in the processes that still map it.
func (s *Shared) Free() error {
	var err error
	if cap(s.mem) > 0 {
		err = unmap(s.mem[:cap(s.mem)])
	}
	if cerr := unix.Close(s.fd); err == nil && cerr != nil {
		err = cerr
	}
	s.mem = nil
	if err != nil {
		return fmt.Errorf("bomem: free shared memory: %w", err)
	}
	return nil
}

// copyWritten writes into fd the pages of b that hold something, at their
// offsets. Pages that /proc/self/pagemap shows neither present nor
// swapped were never written and are skipped unread; the others are
// skipped if they read as zeros.
func copyWritten(fd int, b []byte) error {
	pm, _ := os.Open("/proc/self/pagemap") // nil: read every page
	if pm != nil {
		defer pm.Close()
	}
	var zero [pageSize]byte
	npages := (len(b) + pageSize - 1) / pageSize
	runStart := -1
	flush := func(end int) error {
		if runStart < 0 {
			return nil
		}
		lo, hi := runStart*pageSize, min(end*pageSize, len(b))
		runStart = -1
		return pwriteFull(fd, b[lo:hi], int64(lo))
	}
	raw := make([]byte, 8*min(npages, pagemapWindow))
	for w := 0; w < npages; w += pagemapWindow {
		wn := min(pagemapWindow, npages-w)
		present := pagemapWindowOf(pm, b[w*pageSize:], raw[:8*wn])
		for j := range wn {
			i := w + j
			lo, hi := i*pageSize, min((i+1)*pageSize, len(b))
			if (present == nil || present(j)) && !bytes.Equal(b[lo:hi], zero[:hi-lo]) {
				if runStart < 0 {
					runStart = i
				}
				continue
			}
			if err := flush(i); err != nil {
				return err
			}
		}
	}
	return flush(npages)
}

// pagemapWindow is how many pages' entries copyWritten reads at a time.
const pagemapWindow = 64 << 10

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("bomem: copy into memfd at %d: %w", off, err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// pagemapWindowOf reads, into raw (8 bytes per page), which pages from
// the start of b are present or swapped out; it returns nil if pagemap
// cannot say (then every page is read).
func pagemapWindowOf(pm *os.File, b []byte, raw []byte) func(j int) bool {
	if pm == nil || len(b) == 0 {
		return nil
	}
	first := uintptr(unsafe.Pointer(&b[0])) / pageSize
	if n, err := pm.ReadAt(raw, int64(first*8)); err != nil || n != len(raw) {
		return nil
	}
	const presentOrSwapped = 1<<63 | 1<<62
	return func(j int) bool {
		return binary.LittleEndian.Uint64(raw[8*j:])&presentOrSwapped != 0
	}
}

// FD is the kernel's own description of the file (owned by s).
func (s *Shared) FD() int { return s.fd }
