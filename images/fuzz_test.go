package images_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// The seed corpora (testdata/fuzz) come from real checkpoints: see
// internal/fuzzing's TestSeedCheckpoints.

// decodeKinds are the image messages FuzzDecode feeds bytes to.
var decodeKinds = []struct {
	name string
	new  func() images.Versioned
}{
	{images.InventoryName, func() images.Versioned { return &images.Inventory{} }},
	{images.FileName(1), func() images.Versioned { return &images.DrmFile{} }},
	{images.DmaBufName(2), func() images.Versioned { return &images.DmaBuf{} }},
	{images.ChannelName(3), func() images.Versioned { return &images.DrmChannel{} }},
}

// FuzzDecode: any bytes as an inventory, drm file, dma-buf or reply
// channel image decode or fail naming the image, never panic; reading them
// from a directory gives the same verdict; what decodes is of a format
// version this code reads and survives a round trip.
func FuzzDecode(f *testing.F) {
	f.Add(byte(0), []byte{})
	f.Add(byte(1), []byte{0x08, 0x02})
	f.Add(byte(2), []byte{0x08, 0x03})
	dir := f.TempDir()
	d, err := images.OpenDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	f.Fuzz(func(t *testing.T, kind byte, data []byte) {
		k := decodeKinds[int(kind)%len(decodeKinds)]
		m := k.new()
		err := images.Decode(k.name, data, m)
		if err != nil {
			if !strings.Contains(err.Error(), k.name) {
				t.Fatalf("error does not name the image: %v", err)
			}
		} else if v := m.GetVersion(); v < images.MinVersion || v > images.Version {
			t.Fatalf("decoded version %d", m.GetVersion())
		}
		if err := os.WriteFile(filepath.Join(dir, k.name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if rerr := d.Read(k.name, k.new()); (rerr == nil) != (err == nil) {
			t.Fatalf("Decode says %v, Dir.Read says %v", err, rerr)
		}
		if err != nil {
			return
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back := k.new()
		if err := images.Decode(k.name, b, back); err != nil || !proto.Equal(m, back) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzIndex: any bytes as the BO index, with any pages file, are read,
// checked and verified without a panic. The record stream splits and
// joins back byte for byte; and in an index that Check and VerifyPages
// find nothing wrong with, every chunk lies in the pages file and its
// bytes match their checksum. Whether the chunks cover every BO is not
// theirs to say but the kernel's (kernelsim.CheckRestore, which restore
// and drmcrit verify run; an input where no chunk covers a BO is kept as
// a seed).
func FuzzIndex(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add([]byte{2, 0, 0, 0, 0x08, 0x02}, []byte{})
	f.Fuzz(func(t *testing.T, index, pages []byte) {
		recs, serr := images.SplitRecords(index)
		if serr == nil && !bytes.Equal(images.JoinRecords(recs), index) {
			t.Fatal("the records do not join back into the index")
		}
		x, err := images.ReadIndexFrom(bytes.NewReader(index))
		if err != nil {
			if !strings.Contains(err.Error(), images.IndexName) {
				t.Fatalf("error does not name the index: %v", err)
			}
			return
		}
		if serr != nil || len(recs) != 1+len(x.Bos)+len(x.Chunks) {
			t.Fatalf("the index reads as %d BOs and %d chunks, but splits into %d records (%v)", len(x.Bos), len(x.Chunks), len(recs), serr)
		}
		problems := x.Check()
		dir := t.TempDir()
		for name, b := range map[string][]byte{images.IndexName: index, images.PagesName(1): pages} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		d, err := images.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := d.ReadIndex(); err != nil {
			t.Fatalf("ReadIndexFrom read it, Dir.ReadIndex says %v", err)
		}
		problems = append(problems, d.VerifyPages(x)...)
		if len(problems) > 0 {
			return
		}
		// Nothing wrong: check that independently.
		for _, c := range x.Chunks {
			cc := c.Chunk
			if cc == nil {
				t.Fatal("a chunk record without its chunk passed Check")
			}
			if cc.Length == 0 || cc.Length > uapi.MaxContentChunk || cc.Offset+cc.Length < cc.Offset || len(cc.Checksum) != uapi.DefaultChecksum.Size() {
				continue // malformed: VerifyPages leaves it to the kernel's checks, as Check does coverage
			}
			if c.PagesFile != 0 || cc.Offset+cc.Length > uint64(len(pages)) {
				t.Fatalf("chunk %v of pages file %d passed, pages file 1 has %d bytes", cc, c.PagesFile, len(pages))
			}
			if !bytes.Equal(uapi.DefaultChecksum.Sum(pages[cc.Offset:cc.Offset+cc.Length]), cc.Checksum) {
				t.Fatalf("chunk %v passed with a wrong checksum", cc)
			}
		}
	})
}
