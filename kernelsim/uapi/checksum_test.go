package uapi

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"lukechampine.com/blake3"
)

// TestContentChecksumIsBLAKE3: the sequential tree walk gives the
// library's BLAKE3-256 at every length shape: within a chunk, at chunk
// and 16-chunk boundaries, and around them.
func TestContentChecksumIsBLAKE3(t *testing.T) {
	data := make([]byte, 5<<20+3)
	for i := range data {
		data[i] = byte(i*131 + i>>9)
	}
	var lengths []int
	for _, base := range []int{0, 64, 1024, 2048, 16 << 10, 32 << 10, 1 << 20, 4 << 20, 5 << 20} {
		for _, d := range []int{-1025, -1024, -1, 0, 1, 1023, 1024, 4096} {
			if n := base + d; n >= 0 && n <= len(data) {
				lengths = append(lengths, n)
			}
		}
	}
	lengths = append(lengths, 12345, 17*1024+5, 100*1024, 3*4096)
	for _, n := range lengths {
		want := blake3.Sum256(data[:n])
		if got := ContentChecksum(data[:n]); !bytes.Equal(got, want[:]) {
			t.Fatalf("length %d: %x, BLAKE3 gives %x", n, got, want)
		}
	}
}

// TestContentHasherInPieces: ContentHasher gives ContentChecksum however
// the bytes are cut into pieces: every length shape, cut at chunk and
// group boundaries, next to them, and at random.
func TestContentHasherInPieces(t *testing.T) {
	data := make([]byte, 5<<20+3)
	for i := range data {
		data[i] = byte(i*131 + i>>9)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 1023, 1024, 1025, 2048, 16<<10 - 1, 16 << 10, 16<<10 + 1, 100 * 1024, 1 << 20, 4<<20 + 7, len(data)} {
		want := ContentChecksum(data[:n])
		for _, piece := range []int{1, 1000, 1024, 1025, 4096, 16 << 10, 16<<10 + 3, 256 << 10, 1 << 30, -1} {
			var h ContentHasher
			for p := data[:n]; len(p) > 0; {
				k := piece
				if k < 0 {
					k = 1 + rng.IntN(70<<10)
				}
				k = min(k, len(p))
				h.Write(p[:k])
				p = p[k:]
			}
			if got := h.Sum(); !bytes.Equal(got, want) {
				t.Fatalf("length %d in pieces of %d: %x, want %x", n, piece, got, want)
			}
		}
	}
}

func BenchmarkContentChecksum(b *testing.B) {
	data := make([]byte, 4<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		ContentChecksum(data)
	}
}

func BenchmarkLibrarySum256(b *testing.B) {
	data := make([]byte, 4<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		blake3.Sum256(data)
	}
}
