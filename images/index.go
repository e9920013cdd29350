package images

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/uapi"
)

// The BO index (drm-bo-index.img) is a stream of records, each a
// little-endian u32 length and that many bytes of protobuf, the way CRIU's
// images hold their entries: a BoIndex, then BoIndexEntry records. It is
// written while the dump runs and read in one pass, so its size grows
// with the number of BOs but no message does.

// IndexWriter appends records to the BO index.
type IndexWriter struct {
	f   *os.File
	w   *bufio.Writer
	buf []byte
}

// CreateIndex creates the BO index and writes its first record.
func (d *Dir) CreateIndex(hdr *BoIndex) (*IndexWriter, error) {
	f, err := d.Create(IndexName)
	if err != nil {
		return nil, err
	}
	w := &IndexWriter{f: f, w: bufio.NewWriterSize(f, 256<<10), buf: make([]byte, 4, 4096)}
	if err := w.record(hdr); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// AddBo records where a BO's contents are.
func (w *IndexWriter) AddBo(b *Bo) error {
	return w.record(&BoIndexEntry{Version: Version, Bo: b})
}

// AddChunk records a checksummed extent of a pages file.
func (w *IndexWriter) AddChunk(c *PagesChunk) error {
	return w.record(&BoIndexEntry{Version: Version, Chunk: c})
}

func (w *IndexWriter) record(m proto.Message) error {
	var err error
	w.buf, err = proto.MarshalOptions{}.MarshalAppend(w.buf[:4], m)
	if err != nil {
		return fmt.Errorf("encode %s record: %w", IndexName, err)
	}
	binary.LittleEndian.PutUint32(w.buf, uint32(len(w.buf)-4))
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("write %s: %w", IndexName, err)
	}
	return nil
}

// Close flushes and closes the index.
func (w *IndexWriter) Close() error {
	err := w.w.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", IndexName, err)
	}
	return nil
}

// Index is a BO index as read.
type Index struct {
	Header *BoIndex
	Bos    []*Bo
	Chunks []*PagesChunk
}

// ReadIndex reads the directory's BO index and checks every record's
// version (not the index's consistency: see Check).
func (d *Dir) ReadIndex() (*Index, error) {
	f, err := d.Open(IndexName)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadIndexFrom(f)
}

// ReadIndexFrom reads a BO index from r.
func ReadIndexFrom(r io.Reader) (*Index, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	x := &Index{Header: &BoIndex{}}
	var buf []byte
	next := func(n int, m proto.Message) (bool, error) {
		var lb [4]byte
		if _, err := io.ReadFull(br, lb[:]); err != nil {
			if err == io.EOF && n > 0 {
				return false, nil
			}
			return false, fmt.Errorf("image %s: record %d: %w", IndexName, n, noEOF(err))
		}
		size := binary.LittleEndian.Uint32(lb[:])
		if size > MaxMessage {
			return false, fmt.Errorf("image %s: record %d claims %d bytes, more than %d", IndexName, n, size, MaxMessage)
		}
		buf = slices.Grow(buf[:0], int(size))[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return false, fmt.Errorf("image %s: record %d: %w", IndexName, n, noEOF(err))
		}
		return true, Decode(fmt.Sprintf("%s record %d", IndexName, n), buf, m.(versioned))
	}
	if _, err := next(0, x.Header); err != nil {
		return nil, err
	}
	for n := 1; ; n++ {
		e := &BoIndexEntry{}
		ok, err := next(n, e)
		if err != nil {
			return nil, err
		}
		if !ok {
			return x, nil
		}
		switch {
		case e.Bo != nil && e.Chunk == nil:
			if err := checkVersion(fmt.Sprintf("%s record %d", IndexName, n), e.Bo.Version); err != nil {
				return nil, err
			}
			x.Bos = append(x.Bos, e.Bo)
		case e.Chunk != nil && e.Bo == nil:
			if err := checkVersion(fmt.Sprintf("%s record %d", IndexName, n), e.Chunk.Version); err != nil {
				return nil, err
			}
			x.Chunks = append(x.Chunks, e.Chunk)
		default:
			return nil, fmt.Errorf("image %s: record %d holds %s", IndexName, n, entryWhat(e))
		}
	}
}

func entryWhat(e *BoIndexEntry) string {
	if e.Bo == nil {
		return "neither a BO nor a chunk"
	}
	return "both a BO and a chunk"
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func checkVersion(name string, v uint32) error {
	if v != Version {
		return fmt.Errorf("image %s: format version %d, this plugin reads version %d", name, v, Version)
	}
	return nil
}

// Check reports what makes the index unusable, one line per problem: an
// unknown checksum algorithm, a pages file that is not one of the
// directory's pages files, BOs listed twice, references to pages files
// that do not exist, chunks without a checksum or overlapping, and bytes
// of a BO that no chunk covers. It reads no pages file.
func (x *Index) Check() []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if x.Header.Checksum != uapi.ChecksumName {
		add("%s: checksum algorithm %q, this plugin knows %q", IndexName, x.Header.Checksum, uapi.ChecksumName)
	}
	for i, name := range x.Header.PagesFiles {
		if KindOf(name) != KindPages || name != PagesName(i+1) {
			add("%s: pages file %d is %q, want %s", IndexName, i, name, PagesName(i+1))
		}
	}
	nfiles := uint32(len(x.Header.PagesFiles))
	chunks := make([][]extent, nfiles)
	for _, c := range x.Chunks {
		cc := c.GetChunk()
		if c.PagesFile >= nfiles {
			add("%s: chunk at offset %d of pages file %d, which the index does not list", IndexName, cc.GetOffset(), c.PagesFile)
			continue
		}
		name := x.Header.PagesFiles[c.PagesFile]
		switch {
		case cc == nil || cc.Length == 0:
			add("%s: empty chunk in %s", IndexName, name)
			continue
		case cc.Offset+cc.Length < cc.Offset:
			add("%s: chunk at offset %d of %s overflows", IndexName, cc.Offset, name)
			continue
		case len(cc.Checksum) == 0:
			add("%s: chunk [%d, %d) of %s has no checksum", IndexName, cc.Offset, cc.Offset+cc.Length, name)
		case len(cc.Checksum) != uapi.ChecksumSize:
			add("%s: chunk [%d, %d) of %s has a checksum of %d bytes, want %d", IndexName, cc.Offset, cc.Offset+cc.Length, name, len(cc.Checksum), uapi.ChecksumSize)
		}
		chunks[c.PagesFile] = append(chunks[c.PagesFile], extent{cc.Offset, cc.Offset + cc.Length})
	}
	for f, cs := range chunks {
		sort.Slice(cs, func(i, j int) bool { return cs[i].off < cs[j].off })
		for i := 1; i < len(cs); i++ {
			if cs[i].off < cs[i-1].end {
				add("%s: chunks [%d, %d) and [%d, %d) of %s overlap", IndexName, cs[i-1].off, cs[i-1].end, cs[i].off, cs[i].end, x.Header.PagesFiles[f])
			}
		}
	}
	seen := map[uint64]bool{}
	for _, b := range x.Bos {
		st := b.GetState()
		if st == nil {
			add("%s: a BO record without state", IndexName)
			continue
		}
		if seen[st.BoId] {
			add("%s: BO %d listed twice", IndexName, st.BoId)
		}
		seen[st.BoId] = true
		if b.PagesFile >= nfiles {
			add("%s: BO %d is in pages file %d, which the index does not list", IndexName, st.BoId, b.PagesFile)
			continue
		}
		end := b.Offset + st.Size
		if end < b.Offset {
			add("%s: BO %d at offset %d overflows", IndexName, st.BoId, b.Offset)
			continue
		}
		// The chunks must tile [offset, end) without a gap.
		cs := chunks[b.PagesFile]
		pos := b.Offset
		i := sort.Search(len(cs), func(i int) bool { return cs[i].end > pos })
		for ; pos < end && i < len(cs) && cs[i].off <= pos; i++ {
			pos = cs[i].end
		}
		if pos < end {
			add("%s: bytes [%d, %d) of BO %d in %s are covered by no checksummed chunk", IndexName, pos-b.Offset, min(end, nextStart(cs, i))-b.Offset, st.BoId, x.Header.PagesFiles[b.PagesFile])
		}
	}
	return out
}

type extent struct{ off, end uint64 }

func nextStart(cs []extent, i int) uint64 {
	if i < len(cs) {
		return cs[i].off
	}
	return ^uint64(0)
}

// maxChunk bounds the chunk VerifyPages reads at once; the kernel's own
// chunks are 4 MiB.
const maxChunk = 64 << 20

// VerifyPages reads every chunk the index lists and reports, one line per
// problem, pages files that are missing or too short and chunks whose
// bytes do not match their checksum, naming the BOs they hold. It reads
// with a worker per CPU. Problems of the index itself are Check's.
func (d *Dir) VerifyPages(x *Index) []string {
	type job struct {
		f    *os.File
		name string
		c    *PagesChunk
	}
	var (
		out  []string
		jobs []job
	)
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	files := make([]*os.File, len(x.Header.PagesFiles))
	for i, name := range x.Header.PagesFiles {
		f, err := d.OpenRegular(name)
		if err != nil {
			add("%v", err)
			continue
		}
		files[i] = f
		defer f.Close()
	}
	for _, c := range x.Chunks {
		if int(c.PagesFile) < len(files) && files[c.PagesFile] != nil && c.Chunk != nil {
			jobs = append(jobs, job{files[c.PagesFile], x.Header.PagesFiles[c.PagesFile], c})
		}
	}
	bosIn := x.bosByPagesFile()
	results := make([]string, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				cc := j.c.Chunk
				if cc.Length > maxChunk {
					results[i] = fmt.Sprintf("%s: chunk [%d, %d) is larger than %d bytes", j.name, cc.Offset, cc.Offset+cc.Length, maxChunk)
					continue
				}
				buf = slices.Grow(buf[:0], int(cc.Length))[:cc.Length]
				n, err := j.f.ReadAt(buf, int64(cc.Offset))
				held := heldBy(bosIn[j.c.PagesFile], cc.Offset, cc.Offset+cc.Length)
				switch {
				case uint64(n) < cc.Length:
					results[i] = fmt.Sprintf("%s: chunk [%d, %d) is cut short at byte %d (%v)%s", j.name, cc.Offset, cc.Offset+cc.Length, cc.Offset+uint64(n), err, held)
				case !bytes.Equal(uapi.ContentChecksum(buf), cc.Checksum):
					results[i] = fmt.Sprintf("%s: chunk [%d, %d) does not match its %s checksum%s", j.name, cc.Offset, cc.Offset+cc.Length, uapi.ChecksumName, held)
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r != "" {
			out = append(out, r)
		}
	}
	return out
}

type boExtent struct {
	off, end, id uint64
}

// bosByPagesFile lists each pages file's BOs by offset.
func (x *Index) bosByPagesFile() map[uint32][]boExtent {
	m := map[uint32][]boExtent{}
	for _, b := range x.Bos {
		if st := b.GetState(); st != nil {
			m[b.PagesFile] = append(m[b.PagesFile], boExtent{b.Offset, b.Offset + st.Size, st.BoId})
		}
	}
	for _, l := range m {
		sort.Slice(l, func(i, j int) bool { return l[i].off < l[j].off })
	}
	return m
}

// heldBy names the BOs with bytes in [off, end).
func heldBy(bos []boExtent, off, end uint64) string {
	var ids []string
	i := sort.Search(len(bos), func(i int) bool { return bos[i].end > off })
	for ; i < len(bos) && bos[i].off < end; i++ {
		ids = append(ids, strconv.FormatUint(bos[i].id, 10))
	}
	switch len(ids) {
	case 0:
		return ""
	case 1:
		return " (BO " + ids[0] + ")"
	}
	return " (BOs " + strings.Join(ids, ", ") + ")"
}

// SplitRecords splits an index's bytes into its records' payloads.
func SplitRecords(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, fmt.Errorf("record %d: %d stray bytes at the end", len(out), len(data))
		}
		n := binary.LittleEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) {
			return nil, fmt.Errorf("record %d claims %d bytes, %d are left", len(out), n, len(data)-4)
		}
		out = append(out, data[4:4+n])
		data = data[4+n:]
	}
	return out, nil
}

// JoinRecords is the inverse of SplitRecords.
func JoinRecords(recs [][]byte) []byte {
	var out []byte
	for _, r := range recs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(r)))
		out = append(out, r...)
	}
	return out
}
