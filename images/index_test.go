package images_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// writeIndex writes an index and a pages file holding contents, with the
// chunks given as [offset, length) pairs over it.
func writeIndex(t *testing.T, d *images.Dir, path string, bos []*images.Bo, contents []byte, chunks [][2]uint64) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(path, images.PagesName(1)), contents, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := d.CreateIndex(&images.BoIndex{Version: images.Version, Checksum: uapi.DefaultChecksum.String(), PagesFiles: []string{images.PagesName(1)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bos {
		if err := w.AddBo(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range chunks {
		cc := &uapi.ContentChunk{Offset: c[0], Length: c[1], Checksum: uapi.DefaultChecksum.Sum(contents[c[0] : c[0]+c[1]])}
		if err := w.AddChunk(&images.PagesChunk{Version: images.Version, Chunk: cc}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func bo(id, size, off uint64) *images.Bo {
	return &images.Bo{Version: images.Version, State: &uapi.BoState{BoId: id, Size: size}, Offset: off}
}

func TestIndexRoundTripAndVerify(t *testing.T) {
	d, path := openDir(t)
	contents := make([]byte, 5*4096)
	for i := range contents {
		contents[i] = byte(i * 7)
	}
	bos := []*images.Bo{bo(3, 4096, 0), bo(9, 3*4096, 4096), bo(4, 4096, 4*4096)}
	writeIndex(t, d, path, bos, contents, [][2]uint64{{0, 2 * 4096}, {2 * 4096, 3 * 4096}})
	x, err := d.ReadIndex()
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Bos) != 3 || len(x.Chunks) != 2 || !proto.Equal(x.Bos[1], bos[1]) {
		t.Fatalf("read back %d BOs, %d chunks: %v", len(x.Bos), len(x.Chunks), x.Bos)
	}
	if p := x.Check(); p != nil {
		t.Fatalf("Check of a good index: %v", p)
	}
	if p := d.VerifyPages(x); p != nil {
		t.Fatalf("VerifyPages of good contents: %v", p)
	}

	// One flipped byte is found and the chunk's BOs named.
	contents[3*4096] ^= 1
	if err := os.WriteFile(filepath.Join(path, images.PagesName(1)), contents, 0o600); err != nil {
		t.Fatal(err)
	}
	p := d.VerifyPages(x)
	if len(p) != 1 || p[0].String() != "drm-pages-1.img: chunk [8192, 20480): does not match its xxh3-128 checksum (BOs 9, 4)" {
		t.Fatalf("flipped byte: %v", p)
	}
	// A truncated pages file.
	if err := os.Truncate(filepath.Join(path, images.PagesName(1)), 4096); err != nil {
		t.Fatal(err)
	}
	p = d.VerifyPages(x)
	if len(p) != 2 || !strings.Contains(p[0].String(), "chunk [0, 8192): cut short at byte 4096") {
		t.Fatalf("truncated pages file: %v", p)
	}
}

// noChunk in TestIndexCheck's chunks is a chunk record without its chunk.
const noChunk = ^uint32(0)

func TestIndexCheck(t *testing.T) {
	cases := []struct {
		name   string
		bos    []*images.Bo
		chunks []uint32 // pages file of each chunk
		want   []string
	}{
		{"twice", []*images.Bo{bo(1, 4096, 0), bo(1, 4096, 0)}, nil, []string{"drm-bo-index.img: BO 1: listed twice"}},
		{"id 0", []*images.Bo{bo(0, 4096, 0)}, nil, []string{"drm-bo-index.img: BO 0: BO id 0 is no BO"}},
		{"no state", []*images.Bo{{Version: images.Version}}, nil, []string{"drm-bo-index.img: BO record: without state"}},
		{"BO in an unlisted pages file", []*images.Bo{{Version: images.Version, State: &uapi.BoState{BoId: 3, Size: 4096}, PagesFile: 1}}, nil,
			[]string{"drm-bo-index.img: BO 3 pages_file: 1, the index lists 1 pages file(s)"}},
		{"chunk in an unlisted pages file", nil, []uint32{4}, []string{"chunk at offset 0 of pages file 4: the index lists 1 pages file(s)"}},
		{"chunk record without its chunk", nil, []uint32{noChunk}, []string{"drm-bo-index.img: chunk record of pages file 0: without its chunk"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := &images.Index{Header: &images.BoIndex{Version: images.Version, Checksum: uapi.DefaultChecksum.String(), PagesFiles: []string{images.PagesName(1)}}, Bos: tc.bos}
			for _, f := range tc.chunks {
				if f == noChunk {
					x.Chunks = append(x.Chunks, &images.PagesChunk{Version: images.Version})
					continue
				}
				x.Chunks = append(x.Chunks, &images.PagesChunk{Version: images.Version, PagesFile: f, Chunk: &uapi.ContentChunk{Length: 4096, Checksum: make([]byte, 32)}})
			}
			got := problems(x.Check())
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Check: %q lacks %q", got, w)
				}
			}
		})
	}
	x := &images.Index{Header: &images.BoIndex{Version: images.Version, PagesFiles: []string{images.PagesName(1)}}}
	if got := problems(x.Check()); got != "drm-bo-index.img: checksum: no checksum algorithm named" {
		t.Errorf("Check of an index naming no checksum: %q", got)
	}
	x = &images.Index{Header: &images.BoIndex{Version: images.Version, Checksum: "sha1", PagesFiles: []string{"../etc/passwd"}}}
	got := problems(x.Check())
	for _, w := range []string{`drm-bo-index.img: checksum: unknown checksum algorithm "sha1"`, `drm-bo-index.img: pages_files[0]: "../etc/passwd", want drm-pages-1.img`} {
		if !strings.Contains(got, w) {
			t.Errorf("Check: %q lacks %q", got, w)
		}
	}
}

func problems(ps []images.Problem) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, "\n")
}

func TestReadIndexRejectsBadRecords(t *testing.T) {
	d, path := openDir(t)
	good := images.JoinRecords([][]byte{mustMarshal(t, &images.BoIndex{Version: images.Version})})
	for name, data := range map[string][]byte{
		"empty":                nil,
		"cut length":           {1, 0},
		"cut record":           append(append([]byte(nil), good...), 9, 0, 0, 0, 1),
		"huge record":          {0xff, 0xff, 0xff, 0xff},
		"old version":          images.JoinRecords([][]byte{mustMarshal(t, &images.BoIndex{Version: 1})}),
		"neither bo nor chunk": images.JoinRecords([][]byte{mustMarshal(t, &images.BoIndex{Version: images.Version}), mustMarshal(t, &images.BoIndexEntry{Version: images.Version})}),
	} {
		if err := os.WriteFile(filepath.Join(path, images.IndexName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadIndex(); err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o600) }

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenRegularRefusesFIFOsAndLinks(t *testing.T) {
	d, path := openDir(t)
	fifo := filepath.Join(path, images.PagesName(1))
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenRegular(images.PagesName(1)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(path, images.PagesName(2))); err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenRegular(images.PagesName(2)); err == nil {
		t.Error("opened a symlink out of the directory")
	}
	if _, err := d.OpenRegular("../x"); err == nil {
		t.Error("opened a path out of the directory")
	}
}
