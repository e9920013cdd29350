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

	"drmcr/kernelsim/uapi"
)

// BO contents travel between BO memory and pages files (see CHECKPOINT_BOS
// and SESSION_LOAD_PAGES in uapi.proto) in chunks of at most
// contentChunk bytes, each checksummed (uapi.ContentChecksum). Chunks are
// independent, so a pool of workers, one per CPU, copies and checksums
// several at once: checking every byte costs CPU time, not a serial pass.

// contentChunk is the largest chunk. Large enough that the checksum runs
// on long contiguous buffers (BLAKE3's SIMD paths) and a syscall moves
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

// forEachChunk runs fn on every chunk with a worker per CPU, each with a
// staging buffer, and returns the first error (the others stop early).
func forEachChunk(ctx context.Context, n int, fn func(ctx context.Context, i int, staging []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	workers := min(runtime.GOMAXPROCS(0), n)
	for range workers {
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

// writeChunk copies a chunk's bytes to the pages file at its offset and
// returns their checksum. The bytes are taken under the BOs' locks, so
// checksum and file agree even if a process outside the dump writes a
// shared BO meanwhile. Writes to the file take turns (writeMu): writers of
// one file queue on its inode lock in the kernel, spinning, which cost
// more CPU than the copy itself; this way one worker writes while the
// others checksum their next chunk.
func writeChunk(fd int, writeMu *sync.Mutex, c *chunkPlan, staging []byte) ([]byte, error) {
	write := func(b []byte, off uint64) error {
		writeMu.Lock()
		defer writeMu.Unlock()
		return pwriteAll(fd, b, off)
	}
	var sum []byte
	if len(c.segs) == 1 {
		s := c.segs[0]
		err := s.mem.with(s.off, s.n, false, func(b []byte) error {
			sum = uapi.ContentChecksum(b)
			return write(b, c.fileOff)
		})
		return sum, err
	}
	buf := staging[:c.length]
	pos := uint64(0)
	for _, s := range c.segs {
		if err := s.mem.with(s.off, s.n, false, func(b []byte) error {
			copy(buf[pos:], b)
			return nil
		}); err != nil {
			return nil, err
		}
		pos += s.n
	}
	return uapi.ContentChecksum(buf), write(buf, c.fileOff)
}

// errChecksum is the error of a chunk whose bytes do not match.
var errChecksum = errors.New("does not match the checksum recorded at dump")

// loadChunk reads a chunk from the pages file into BO memory and checks
// it against sum. A chunk that is one BO's memory is read in place; any
// other goes through the staging buffer, and only what is verified is
// copied into the BOs.
func loadChunk(fd int, c *chunkPlan, sum []byte, staging []byte) error {
	// The lock is taken shared (see Backing.with): chunks of one large BO
	// load side by side.
	if len(c.segs) == 1 && c.segs[0].at == 0 && c.segs[0].n == c.length {
		s := c.segs[0]
		return s.mem.with(s.off, s.n, false, func(b []byte) error {
			if err := preadFull(fd, b, c.fileOff); err != nil {
				return err
			}
			if !bytes.Equal(uapi.ContentChecksum(b), sum) {
				return errChecksum
			}
			return nil
		})
	}
	buf := staging[:c.length]
	if err := preadFull(fd, buf, c.fileOff); err != nil {
		return err
	}
	if !bytes.Equal(uapi.ContentChecksum(buf), sum) {
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
