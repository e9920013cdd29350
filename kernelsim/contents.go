package kernelsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/bomem"
	"drmcr/kernelsim/uapi"
)

// BO contents travel between BO memory and pages files (see CHECKPOINT_BOS
// and SESSION_LOAD_PAGES in uapi.proto) in chunks of at most
// contentChunk bytes, each checksummed (uapi.Checksum). Chunks are
// independent, so a pool of workers, one per CPU, copies and checksums
// several at once: checking every byte costs CPU time, not a serial pass.

// contentChunk is the largest chunk. Large enough that the checksum runs
// on long contiguous buffers (the SIMD paths) and a syscall moves
// megabytes; small enough that a worker's staging buffer is cheap.
const contentChunk = uapi.MaxContentChunk

// segment is a range of one BO's memory within a chunk.
type segment struct {
	mem     *Backing
	off, n  uint64 // in the BO
	at      uint64 // in the chunk
	boIndex int    // position of the BO in the request or session
}

// chunkPlan is one chunk: an extent of a pages file and the BO memory it
// holds, in order.
type chunkPlan struct {
	fileOff, length uint64
	segs            []segment
}

// planChunks lays BOs of the given memories out back to back from start
// and cuts the extent into chunks: whole BOs while they fit in a chunk, a
// BO larger than a chunk in chunks of its own.
func planChunks(mems []*Backing, start uint64) ([]chunkPlan, uint64) {
	var out []chunkPlan
	pos := start
	var cur *chunkPlan
	for i, m := range mems {
		size := m.Size()
		if size > contentChunk {
			cur = nil
			for off := uint64(0); off < size; off += contentChunk {
				n := min(contentChunk, size-off)
				out = append(out, chunkPlan{fileOff: pos + off, length: n, segs: []segment{{mem: m, off: off, n: n, boIndex: i}}})
			}
			pos += size
			continue
		}
		if cur == nil || cur.length+size > contentChunk {
			out = append(out, chunkPlan{fileOff: pos})
			cur = &out[len(out)-1]
		}
		cur.segs = append(cur.segs, segment{mem: m, n: size, at: cur.length, boIndex: i})
		cur.length += size
		pos += size
	}
	return out, pos - start
}

// stagingPool holds the workers' chunk buffers.
var stagingPool = sync.Pool{New: func() any { b := make([]byte, contentChunk); return &b }}

// forEachChunk runs fn on every chunk with up to workers workers (0: one
// per CPU), each with a staging buffer, and returns the first error (the
// others stop early).
func forEachChunk(ctx context.Context, n, workers int, fn func(ctx context.Context, i int, staging []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bp := stagingPool.Get().(*[]byte)
			defer stagingPool.Put(bp)
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i, *bp); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// contentPiece is how much of a chunk the dump copies before it
// checksums it: small enough that the piece is still in the CPU's cache
// when the checksum reads it, so each byte comes from memory once. (The
// restore reads and checksums whole chunks: reading into fresh BO memory
// in pieces measured slower, see docs/BENCHMARKS.md.)
const contentPiece = 256 << 10

// writeChunk copies a chunk's bytes to the pages file at its offset and
// returns their checksum. The bytes are taken under the BOs' locks, so
// checksum and file agree even if a process outside the dump writes a
// shared BO meanwhile. Each piece is written, then checksummed while it is
// still cached (writing first and checksumming the whole chunk after cost
// a second pass over memory, and on two CPUs the checksum of one worker
// then slowed the other's copy). The workers write side by side: in
// pieces this size the file's inode lock is held briefly.
func writeChunk(fd int, c *chunkPlan, staging []byte, alg uapi.Checksum, maps dataMaps) ([]byte, error) {
	h := alg.New()
	writeAndSum := func(b []byte, off uint64) error {
		for len(b) > 0 {
			p := b[:min(len(b), contentPiece)]
			if err := pwriteAll(fd, p, off); err != nil {
				return err
			}
			h.Write(p)
			b, off = b[len(p):], off+uint64(len(p))
		}
		return nil
	}
	if len(c.segs) == 1 && c.segs[0].mem.sharedMem() == nil {
		s := c.segs[0]
		err := s.mem.with(s.off, s.n, false, func(b []byte) error {
			return writeAndSum(b, c.fileOff)
		})
		if err != nil {
			return nil, err
		}
		return h.Sum(), nil
	}
	buf := staging[:c.length]
	pos := uint64(0)
	for _, s := range c.segs {
		if err := s.mem.copyOut(s.off, buf[pos:pos+s.n], maps[s.mem]); err != nil {
			return nil, err
		}
		pos += s.n
	}
	if err := writeAndSum(buf, c.fileOff); err != nil {
		return nil, err
	}
	return h.Sum(), nil
}

// errChecksum is the error of a chunk whose bytes do not match.
var errChecksum = errors.New("does not match the checksum recorded at dump")

// loadChunk reads a chunk from the pages file into BO memory and checks
// it against sum, of algorithm alg. A chunk that is one BO's memory is
// read in place; any other goes through the staging buffer, and only what
// is verified is copied into the BOs.
func loadChunk(fd int, c *chunkPlan, sum []byte, staging []byte, alg uapi.Checksum) error {
	// The lock is taken shared (see Backing.with): chunks of one large BO
	// load side by side.
	if len(c.segs) == 1 && c.segs[0].at == 0 && c.segs[0].n == c.length {
		s := c.segs[0]
		return s.mem.with(s.off, s.n, false, func(b []byte) error {
			if err := preadFull(fd, b, c.fileOff); err != nil {
				return err
			}
			if !bytes.Equal(alg.Sum(b), sum) {
				return errChecksum
			}
			return nil
		})
	}
	buf := staging[:c.length]
	if err := preadFull(fd, buf, c.fileOff); err != nil {
		return err
	}
	if !bytes.Equal(alg.Sum(buf), sum) {
		return errChecksum
	}
	for _, s := range c.segs {
		if err := s.mem.with(s.off, s.n, false, func(b []byte) error {
			copy(b, buf[s.at:s.at+s.n])
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func pwriteAll(fd int, b []byte, off uint64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write at offset %d: %w", off, err)
		}
		b = b[n:]
		off += uint64(n)
	}
	return nil
}

// preadFull fills b from the file at off; a file that ends first gives an
// error saying where.
func preadFull(fd int, b []byte, off uint64) error {
	start := off
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read at offset %d: %w", off, err)
		}
		if n == 0 {
			return fmt.Errorf("short contents: the file ends at byte %d, the chunk needs [%d, %d): %w", off, start, off+uint64(len(b)), io.ErrUnexpectedEOF)
		}
		b = b[n:]
		off += uint64(n)
	}
	return nil
}

// regularFile refuses descriptors other than regular files: reading a FIFO
// or a socket could block a loader forever.
func regularFile(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errnof(syscall.EINVAL, "a pages file must be a regular file (mode %#o)", st.Mode)
	}
	return nil
}

// ChecksumBOs checksums (with alg) the contents of BOs without writing them
// anywhere, in chunks of at most contentChunk bytes relative to each BO
// (ContentChunk.bo_id set), in request order: for BOs whose contents
// criu saves itself, as the memory of a dumped process's mapping. Holes
// of a mapped BO's memory are checksummed as zeros without being read,
// which would allocate them. Jobs writing the BOs must have been drained
// by Pause.
func (k *Kernel) ChecksumBOs(ids []uint64, alg uapi.Checksum) ([]*uapi.ContentChunk, error) {
	bos, release, err := k.getBOs(ids)
	defer release()
	if err != nil {
		return nil, err
	}
	var chunks []*uapi.ContentChunk
	var mems []*Backing
	for _, bo := range bos {
		for off := uint64(0); off < bo.size; off += contentChunk {
			chunks = append(chunks, &uapi.ContentChunk{BoId: bo.id, Offset: off, Length: min(contentChunk, bo.size-off)})
			mems = append(mems, bo.mem)
		}
	}
	maps, err := dataMapsOf(mems)
	if err != nil {
		return nil, err
	}
	err = forEachChunk(context.Background(), len(chunks), 0, func(_ context.Context, i int, _ []byte) error {
		c := chunks[i]
		sum, err := mems[i].checksum(c.Offset, c.Length, alg, maps[mems[i]])
		if err != nil {
			return fmt.Errorf("BO %d contents: %w", c.BoId, err)
		}
		c.Checksum = sum
		return nil
	})
	if err != nil {
		return nil, err
	}
	return chunks, nil
}

// getBOs references the BOs of ids, each listed once; release drops the
// references (call it whatever the error).
func (k *Kernel) getBOs(ids []uint64) ([]*BO, func(), error) {
	k.mu.Lock()
	bos := make([]*BO, 0, len(ids))
	seen := make(map[uint64]bool, len(ids))
	var err error
	for _, id := range ids {
		bo, ok := k.bos[id]
		switch {
		case seen[id]:
			err = errnof(syscall.EINVAL, "BO %d listed twice", id)
		case !ok:
			err = errnof(syscall.ENOENT, "no BO %d", id)
		}
		if err != nil {
			break
		}
		seen[id] = true
		bo.get()
		bos = append(bos, bo)
	}
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		for _, bo := range bos {
			bo.put()
		}
		k.mu.Unlock()
	}
	return bos, release, err
}

// checksum returns the checksum of the memory's bytes [off, off+n), at
// most contentChunk of them. Holes of shared memory (dm: its data map,
// taken for the operation; nil: taken now) count as zeros and are not
// touched (sharedChecksum).
func (b *Backing) checksum(off, n uint64, alg uapi.Checksum, dm *bomem.DataMap) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check(int(n), off); err != nil {
		return nil, err
	}
	if b.shared == nil {
		return alg.Sum(b.data[off : off+n]), nil
	}
	dm, err := b.dataMapLocked(dm)
	if err != nil {
		return nil, err
	}
	return sharedChecksum(b.shared, dm, off, n, alg)
}

// copyOut copies the memory's bytes from off into dst. Holes of shared
// memory (dm: its data map, taken for the operation this copy is part of;
// nil: taken now) are copied as zeros without being touched.
func (b *Backing) copyOut(off uint64, dst []byte, dm *bomem.DataMap) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check(len(dst), off); err != nil {
		return err
	}
	return b.copyOutLocked(off, dst, dm)
}

// copyOutLocked is copyOut with b.mu held and the range checked.
func (b *Backing) copyOutLocked(off uint64, dst []byte, dm *bomem.DataMap) error {
	n := uint64(len(dst))
	if b.shared == nil {
		copy(dst, b.data[off:off+n])
		return nil
	}
	dm, err := b.dataMapLocked(dm)
	if err != nil {
		return err
	}
	return dm.Extents(off, n, func(o, l uint64, data bool) error {
		d := dst[o-off : o-off+l]
		if data {
			copy(d, b.data[o:o+l])
		} else {
			clear(d)
		}
		return nil
	})
}

// sharedChecksum is the checksum of bytes [off, off+n) of shared memory
// whose data map is dm, at most contentChunk of them. Data is read in
// place through the kernel's mapping, each extent's pages mapped in one
// call first (MADV_POPULATE_READ, rather than a fault every few pages);
// holes count as zeros and are not touched (reading them through the
// mapping would allocate them). The mapping is the one the GPU uses from
// now on: its pages are not mapped in vain. (Reading with pread into a
// staging buffer cost half as much CPU time again.)
func sharedChecksum(mem *bomem.Shared, dm *bomem.DataMap, off, n uint64, alg uapi.Checksum) ([]byte, error) {
	b := mem.Bytes()
	if off > uint64(len(b)) || n > uint64(len(b))-off {
		return nil, errnof(syscall.EINVAL, "bytes [%d, +%d) past the memory's %d", off, n, len(b))
	}
	var data, holes bool
	dm.Extents(off, n, func(_, _ uint64, d bool) error {
		data, holes = data || d, holes || !d
		return nil
	})
	switch {
	case !data:
		return zeroChecksum(n, alg), nil
	case !holes:
		populate(b[off : off+n])
		return alg.Sum(b[off : off+n]), nil
	}
	h := alg.New()
	dm.Extents(off, n, func(o, l uint64, isData bool) error {
		if isData {
			populate(b[o : o+l])
			h.Write(b[o : o+l])
		} else {
			h.Write(zeroChunk[:l])
		}
		return nil
	})
	return h.Sum(), nil
}

// populate maps the pages of b, memory that holds data, into the page
// tables in one call. Only an optimization: a kernel without
// MADV_POPULATE_READ (before 5.14) faults them in as they are read.
func populate(b []byte) {
	unix.Madvise(b, unix.MADV_POPULATE_READ)
}

type zeroSumKey struct {
	n   uint64
	alg uapi.Checksum
}

var (
	zeroSumsMu sync.Mutex
	zeroSums   = map[zeroSumKey][]byte{}
	zeroChunk  = make([]byte, contentChunk)
)

// zeroChecksum is the checksum of n zero bytes (n <= contentChunk).
func zeroChecksum(n uint64, alg uapi.Checksum) []byte {
	zeroSumsMu.Lock()
	defer zeroSumsMu.Unlock()
	k := zeroSumKey{n, alg}
	if s, ok := zeroSums[k]; ok {
		return s
	}
	s := alg.Sum(zeroChunk[:n])
	zeroSums[k] = s
	return s
}

// dataMaps holds the data map of each BO memory in shared memory that an
// operation over chunks reads, taken once before the chunks (see
// bomem.DataMap).
type dataMaps map[*Backing]*bomem.DataMap

// dataMapsOf takes the data maps of those of mems in shared memory.
func dataMapsOf(mems []*Backing) (dataMaps, error) {
	maps := dataMaps{}
	for _, m := range mems {
		if _, done := maps[m]; done {
			continue
		}
		if sh := m.sharedMem(); sh != nil {
			dm, err := sh.DataMap()
			if err != nil {
				return nil, err
			}
			maps[m] = dm
		}
	}
	return maps, nil
}

// dataMapLocked is dm, or when the memory became shared after the
// operation took its maps (nil), the memory's map taken now. b.mu is held
// and b.shared set.
func (b *Backing) dataMapLocked(dm *bomem.DataMap) (*bomem.DataMap, error) {
	if dm != nil {
		return dm, nil
	}
	return b.shared.DataMap()
}
