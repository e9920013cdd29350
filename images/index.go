package images

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
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
	f    *os.File
	w    *bufio.Writer
	buf  []byte
	sum  hash.Hash // the seal's digest, over every byte written
	size uint64
	seal *ImageSeal
}

// CreateIndex creates the BO index and writes its first record.
func (d *Dir) CreateIndex(hdr *BoIndex) (*IndexWriter, error) {
	f, err := d.Create(IndexName)
	if err != nil {
		return nil, err
	}
	w := &IndexWriter{f: f, buf: make([]byte, 4, 4096), sum: newDigest()}
	w.w = bufio.NewWriterSize(io.MultiWriter(f, w.sum), 256<<10)
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
	w.size += uint64(len(w.buf))
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
	w.seal = &ImageSeal{Name: IndexName, Size: w.size, Digest: w.sum.Sum(nil)}
	return nil
}

// Seal is the index's seal, once Close succeeded.
func (w *IndexWriter) Seal() *ImageSeal { return w.seal }

// Index is a BO index as read.
type Index struct {
	Header *BoIndex
	Bos    []*Bo
	Chunks []*PagesChunk
}

// Checksum is the algorithm of the index's chunk checksums, which the
// header must name.
func (x *Index) Checksum() (uapi.Checksum, error) {
	if x.Header.Checksum == "" {
		return 0, errors.New("no checksum algorithm named")
	}
	return uapi.ParseChecksum(x.Header.Checksum)
}

// ReadIndex reads the directory's BO index and checks every record's
// version, not its seal (for tools that edit it) nor its consistency
// (Check). A restore reads with ReadIndexSealed.
func (d *Dir) ReadIndex() (*Index, error) {
	f, err := d.OpenRegular(IndexName)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadIndexFrom(f)
}

// ReadIndexSealed reads the directory's BO index in one pass, checking it
// against the seal the inventory recorded (nil: none) as it goes. A seal
// that does not match is a problem; the index is still returned for
// tools that report everything, and a restore refuses it.
func (d *Dir) ReadIndexSealed(seal *ImageSeal) (*Index, []Problem, error) {
	f, err := d.OpenRegular(IndexName)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if seal != nil {
		// A size that differs is known without reading the file.
		if st, err := f.Stat(); err == nil && uint64(st.Size()) != seal.Size {
			probs := CheckSeal(IndexName, seal, uint64(st.Size()), nil)
			x, err := ReadIndexFrom(f)
			return x, probs, err
		}
	}
	h := newDigest()
	cr := &countingReader{r: io.TeeReader(f, h)}
	x, err := ReadIndexFrom(cr)
	if err != nil {
		return nil, nil, err
	}
	return x, CheckSeal(IndexName, seal, cr.n, h.Sum(nil)), nil
}

type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
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
		// The record's name is made only for an error: there is one
		// record per BO.
		if err := proto.Unmarshal(buf, m); err != nil {
			return false, fmt.Errorf("image %s record %d: %w", IndexName, n, err)
		}
		return true, checkVersion(n, m.(Versioned).GetVersion())
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
			if e.Bo.CpuMapped {
				if e.Bo.Version != MappedBoVersion {
					return nil, fmt.Errorf("image %s record %d: a mapped BO's record of format version %d, this plugin reads version %d", IndexName, n, e.Bo.Version, MappedBoVersion)
				}
			} else if err := checkVersion(n, e.Bo.Version); err != nil {
				return nil, err
			}
			x.Bos = append(x.Bos, e.Bo)
		case e.Chunk != nil && e.Bo == nil:
			if err := checkVersion(n, e.Chunk.Version); err != nil {
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

// checkVersion checks the version of record n of the index.
func checkVersion(n int, v uint32) error {
	if v < MinVersion || v > Version {
		return fmt.Errorf("image %s record %d: format version %d, this plugin reads versions %d to %d", IndexName, n, v, MinVersion, Version)
	}
	return nil
}

// Check reports what makes the index itself unusable: an unknown
// checksum algorithm, a pages file that is not one of the directory's
// pages files, a BO record without state, with id 0 or listed twice, and
// references to pages files the index does not list. The chunks and how
// they cover the BOs are the kernel's to check, as it loads them
// (kernelsim.CheckRestore); Check reads no pages file.
func (x *Index) Check() []Problem {
	var out []Problem
	add := func(field, format string, args ...any) {
		out = append(out, Problemf(IndexName, field, format, args...))
	}
	if _, err := x.Checksum(); err != nil {
		add("checksum", "%v", err)
	}
	for i, name := range x.Header.PagesFiles {
		if KindOf(name) != KindPages || name != PagesName(i+1) {
			add(fmt.Sprintf("pages_files[%d]", i), "%q, want %s: pages files are the directory's drm-pages-<n>.img, in order", name, PagesName(i+1))
		}
	}
	nfiles := uint32(len(x.Header.PagesFiles))
	for _, c := range x.Chunks {
		if c.Chunk == nil {
			add(fmt.Sprintf("chunk record of pages file %d", c.PagesFile), "without its chunk (offset, length, checksum)")
			continue
		}
		if c.PagesFile >= nfiles {
			add(fmt.Sprintf("chunk at offset %d of pages file %d", c.GetChunk().GetOffset(), c.PagesFile), "the index lists %d pages file(s)", nfiles)
		}
	}
	seen := make(map[uint64]bool, len(x.Bos))
	for _, b := range x.Bos {
		st := b.GetState()
		if st == nil {
			add("BO record", "without state")
			continue
		}
		switch {
		case st.BoId == 0:
			add("BO 0", "BO id 0 is no BO")
		case seen[st.BoId]:
			add(fmt.Sprintf("BO %d", st.BoId), "listed twice")
		}
		seen[st.BoId] = true
		if b.CpuMapped {
			continue // its chunks are the kernel's to check, as a pages file's
		}
		if len(b.MappedChunks) > 0 {
			add(fmt.Sprintf("BO %d mapped_chunks", st.BoId), "set, but the BO is not mapped (cpu_mapped false)")
		}
		if b.PagesFile >= nfiles {
			add(fmt.Sprintf("BO %d pages_file", st.BoId), "%d, the index lists %d pages file(s)", b.PagesFile, nfiles)
		}
	}
	return out
}

// VerifyPages reads every chunk the index lists and reports, one line per
// problem, pages files that are missing or too short and chunks whose
// bytes do not match their checksum, naming the BOs they hold. It reads
// with a worker per CPU. Problems of the index itself are Check's.
func (d *Dir) VerifyPages(x *Index) []Problem {
	type job struct {
		f    *os.File
		name string
		c    *PagesChunk
	}
	var (
		out  []Problem
		jobs []job
	)
	alg, err := x.Checksum()
	if err != nil {
		return nil // Check reports it
	}
	files := make([]*os.File, len(x.Header.PagesFiles))
	for i, name := range x.Header.PagesFiles {
		if checkName(name) != nil {
			continue // Check reports it
		}
		f, err := d.OpenRegular(name)
		if err != nil {
			out = append(out, Problemf(name, "", "%v", err))
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
	results := make([]*Problem, len(jobs))
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
				where := fmt.Sprintf("chunk [%d, %d)", cc.Offset, cc.Offset+cc.Length)
				if cc.Length == 0 || cc.Length > uapi.MaxContentChunk || cc.Offset+cc.Length < cc.Offset || cc.Offset > math.MaxInt64 || len(cc.Checksum) != alg.Size() {
					continue // the kernel's checks report it
				}
				buf = slices.Grow(buf[:0], int(cc.Length))[:cc.Length]
				n, err := j.f.ReadAt(buf, int64(cc.Offset))
				held := heldBy(bosIn[j.c.PagesFile], cc.Offset, cc.Offset+cc.Length)
				switch {
				case uint64(n) < cc.Length:
					p := Problemf(j.name, where, "cut short at byte %d (%v)%s", cc.Offset+uint64(n), err, held)
					results[i] = &p
				case !bytes.Equal(alg.Sum(buf), cc.Checksum):
					p := Problemf(j.name, where, "does not match its %v checksum%s", alg, held)
					results[i] = &p
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r != nil {
			out = append(out, *r)
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
		if st := b.GetState(); st != nil && !b.CpuMapped {
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
