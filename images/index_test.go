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
	w, err := d.CreateIndex(&images.BoIndex{Version: images.Version, Checksum: uapi.ChecksumName, PagesFiles: []string{images.PagesName(1)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bos {
		if err := w.AddBo(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range chunks {
		cc := &uapi.ContentChunk{Offset: c[0], Length: c[1], Checksum: uapi.ContentChecksum(contents[c[0] : c[0]+c[1]])}
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
	if len(p) != 1 || !strings.Contains(p[0], "chunk [8192, 20480) does not match its blake3-256 checksum (BOs 9, 4)") {
		t.Fatalf("flipped byte: %v", p)
	}
	// A truncated pages file.
	if err := os.Truncate(filepath.Join(path, images.PagesName(1)), 4096); err != nil {
		t.Fatal(err)
	}
	p = d.VerifyPages(x)
	if len(p) != 2 || !strings.Contains(p[0], "chunk [0, 8192) is cut short at byte 4096") {
		t.Fatalf("truncated pages file: %v", p)
	}
}

func TestIndexCheck(t *testing.T) {
	cases := []struct {
		name   string
		bos    []*images.Bo
		chunks [][2]uint64
		sums   map[int][]byte // chunk index -> checksum override
		want   []string
	}{
		{"gap", []*images.Bo{bo(1, 8192, 0)}, [][2]uint64{{0, 4096}}, nil,
			[]string{"bytes [4096, 8192) of BO 1 in drm-pages-1.img are covered by no checksummed chunk"}},
		{"hole in the middle", []*images.Bo{bo(1, 3*4096, 0)}, [][2]uint64{{0, 4096}, {2 * 4096, 4096}}, nil,
			[]string{"bytes [4096, 8192) of BO 1"}},
		{"overlap", []*images.Bo{bo(1, 8192, 0)}, [][2]uint64{{0, 8192}, {4096, 8192}}, nil,
			[]string{"chunks [0, 8192) and [4096, 12288) of drm-pages-1.img overlap"}},
		{"twice", []*images.Bo{bo(1, 4096, 0), bo(1, 4096, 0)}, [][2]uint64{{0, 4096}}, nil,
			[]string{"BO 1 listed twice"}},
		{"no checksum", []*images.Bo{bo(1, 4096, 0)}, [][2]uint64{{0, 4096}}, map[int][]byte{0: nil},
			[]string{"chunk [0, 4096) of drm-pages-1.img has no checksum"}},
		{"short checksum", []*images.Bo{bo(1, 4096, 0)}, [][2]uint64{{0, 4096}}, map[int][]byte{0: {1, 2}},
			[]string{"has a checksum of 2 bytes, want 32"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := &images.Index{Header: &images.BoIndex{Version: images.Version, Checksum: uapi.ChecksumName, PagesFiles: []string{images.PagesName(1)}}, Bos: tc.bos}
			for i, c := range tc.chunks {
				sum := make([]byte, uapi.ChecksumSize)
				if s, ok := tc.sums[i]; ok {
					sum = s
				}
				x.Chunks = append(x.Chunks, &images.PagesChunk{Version: images.Version, Chunk: &uapi.ContentChunk{Offset: c[0], Length: c[1], Checksum: sum}})
			}
			got := strings.Join(x.Check(), "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Check: %q lacks %q", got, w)
				}
			}
		})
	}
	x := &images.Index{Header: &images.BoIndex{Version: images.Version, Checksum: "sha1", PagesFiles: []string{"../etc/passwd"}}}
	got := strings.Join(x.Check(), "\n")
	for _, w := range []string{`checksum algorithm "sha1"`, `pages file 0 is "../etc/passwd", want drm-pages-1.img`} {
		if !strings.Contains(got, w) {
			t.Errorf("Check: %q lacks %q", got, w)
		}
	}
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
