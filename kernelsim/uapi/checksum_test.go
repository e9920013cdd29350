package uapi

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"

	"lukechampine.com/blake3"
)

// TestBLAKE3IsTheLibrarys: the sequential tree walk gives the
// library's BLAKE3-256 at every length shape: within a chunk, at chunk
// and 16-chunk boundaries, and around them.
func TestBLAKE3IsTheLibrarys(t *testing.T) {
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
		if got := BLAKE3.Sum(data[:n]); !bytes.Equal(got, want[:]) {
			t.Fatalf("length %d: %x, BLAKE3 gives %x", n, got, want)
		}
	}
}

// TestContentHashInPieces: every algorithm's ContentHash gives its Sum
// however the bytes are cut into pieces: every length shape, cut at
// BLAKE3's chunk and group boundaries, next to them, and at random.
func TestContentHashInPieces(t *testing.T) {
	data := make([]byte, 5<<20+3)
	for i := range data {
		data[i] = byte(i*131 + i>>9)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, alg := range Checksums {
		for _, n := range []int{0, 1, 240, 241, 1023, 1024, 1025, 2048, 16<<10 - 1, 16 << 10, 16<<10 + 1, 100 * 1024, 1 << 20, 4<<20 + 7, len(data)} {
			want := alg.Sum(data[:n])
			if len(want) != alg.Size() {
				t.Fatalf("%v: %d bytes, Size says %d", alg, len(want), alg.Size())
			}
			for _, piece := range []int{1, 1000, 1024, 1025, 4096, 16 << 10, 16<<10 + 3, 256 << 10, 1 << 30, -1} {
				h := alg.New()
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
					t.Fatalf("%v: length %d in pieces of %d: %x, want %x", alg, n, piece, got, want)
				}
			}
		}
	}
}

// TestXXH3KnownAnswers: XXH3-128 in its canonical byte order (the
// reference implementation's XXH128_canonicalFromHash: big-endian, high
// half first), from xxhsum -H2.
func TestXXH3KnownAnswers(t *testing.T) {
	for in, want := range map[string]string{
		"": "99aa06d3014798d86001c324468d497f",
	} {
		if got := hex.EncodeToString(XXH3.Sum([]byte(in))); got != want {
			t.Errorf("XXH3-128(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestParseChecksum: every algorithm parses from its name, the empty name
// is the default, and an unknown name is an error that names it and the
// known ones.
func TestParseChecksum(t *testing.T) {
	for _, c := range Checksums {
		if got, err := ParseChecksum(c.String()); err != nil || got != c {
			t.Errorf("ParseChecksum(%q) = %v, %v", c.String(), got, err)
		}
	}
	if got, err := ParseChecksum(""); err != nil || got != DefaultChecksum {
		t.Errorf(`ParseChecksum("") = %v, %v`, got, err)
	}
	_, err := ParseChecksum("sha1")
	if err == nil || !strings.Contains(err.Error(), `"sha1"`) || !strings.Contains(err.Error(), "xxh3-128, blake3-256") {
		t.Errorf("ParseChecksum(sha1): %v", err)
	}
}

func BenchmarkChecksum(b *testing.B) {
	data := make([]byte, 4<<20)
	for _, alg := range Checksums {
		b.Run(alg.String(), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				alg.Sum(data)
			}
		})
	}
}

func BenchmarkLibrarySum256(b *testing.B) {
	data := make([]byte, 4<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		blake3.Sum256(data)
	}
}
