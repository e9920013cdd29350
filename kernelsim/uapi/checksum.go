package uapi

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/zeebo/xxh3"
	"lukechampine.com/blake3/guts"
)

// Checksum is an algorithm of ContentChunk checksums. The BO index of a
// checkpoint names the one its chunks use, and requests carry that name
// (CheckpointBosRequest, SessionOpenRequest), so a checkpoint made with
// either restores.
type Checksum uint8

const (
	// XXH3 is XXH3-128, the default: it finds any accidental damage (a
	// flipped bit, a pages file of another checkpoint, a truncation) with
	// a collision chance of 2^-128, at 20-30 GB/s per core, so that
	// checking every byte costs a dump or a restore a few percent of its
	// copy (see docs/BENCHMARKS.md). It is not cryptographic: contents
	// can be crafted to match a given checksum.
	XXH3 Checksum = iota + 1
	// BLAKE3 is BLAKE3-256, cryptographic (no other contents can be made
	// to match a recorded checksum), at about 5 GB/s per core: for
	// checkpoints whose index is protected on its own (a signed
	// inventory), so that the index's checksums vouch for the contents.
	BLAKE3
)

// DefaultChecksum is what a dump uses unless told otherwise, and what an
// empty name in a request means.
const DefaultChecksum = XXH3

// Checksums lists every algorithm this code reads and writes.
var Checksums = []Checksum{XXH3, BLAKE3}

// ParseChecksum returns the algorithm of a name ("xxh3-128",
// "blake3-256"); the empty name is DefaultChecksum, as in requests.
func ParseChecksum(name string) (Checksum, error) {
	if name == "" {
		return DefaultChecksum, nil
	}
	for _, c := range Checksums {
		if c.String() == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown checksum algorithm %q (known: %s)", name, checksumNames())
}

func checksumNames() string {
	var names []string
	for _, c := range Checksums {
		names = append(names, c.String())
	}
	return strings.Join(names, ", ")
}

// String returns the algorithm's name, as images record it.
func (c Checksum) String() string {
	switch c {
	case XXH3:
		return "xxh3-128"
	case BLAKE3:
		return "blake3-256"
	}
	return fmt.Sprintf("checksum(%d)", uint8(c))
}

// Size is the size of a checksum in bytes.
func (c Checksum) Size() int {
	switch c {
	case XXH3:
		return 16
	case BLAKE3:
		return 32
	}
	return 0
}

// New returns a ContentHash of the algorithm.
func (c Checksum) New() ContentHash {
	switch c {
	case XXH3:
		return xxh3Hash{xxh3.New()}
	case BLAKE3:
		return &blake3Hash{}
	}
	panic(fmt.Sprintf("uapi: %v has no hash", c))
}

// Sum is the checksum of b.
func (c Checksum) Sum(b []byte) []byte {
	if c == XXH3 {
		s := xxh3.Hash128(b).Bytes()
		return s[:]
	}
	if c != BLAKE3 {
		panic(fmt.Sprintf("uapi: %v has no hash", c))
	}
	var h blake3Hash // on the stack, not through New: once per chunk
	h.Write(b)
	return h.Sum()
}

// ContentHash computes a checksum over bytes written to it in pieces of
// any size, so that a chunk can be checksummed piece by piece right after
// each piece is copied, while the piece is still in the CPU's cache,
// instead of in a second pass over the whole chunk. Sum equals the
// algorithm's Sum of everything written.
type ContentHash interface {
	Write(p []byte)
	Sum() []byte
}

type xxh3Hash struct{ h *xxh3.Hasher }

func (x xxh3Hash) Write(p []byte) { _, _ = x.h.Write(p) } // never fails
func (x xxh3Hash) Sum() []byte {
	s := x.h.Sum128().Bytes() // canonical XXH128: big-endian, high half first
	return s[:]
}

// blake3Hash is BLAKE3-256 as a sequential tree walk on the calling
// goroutine: the library's Sum256 starts a goroutine per 16 KiB, which
// costs more in scheduling than it gains where a worker per CPU already
// hashes chunks side by side.
type blake3Hash struct {
	stack   [64][8]uint32
	counter uint64 // chunks pushed; bit i set: a subtree of height i on the stack
	tail    [guts.ChunkSize]byte
	ntail   int // bytes in tail: the last chunk so far, compressed by Sum
}

func (h *blake3Hash) push(cv [8]uint32, height int) {
	i := height
	for h.counter&(1<<i) != 0 {
		cv = guts.ChainingValue(guts.ParentNode(h.stack[i], cv, &guts.IV, 0))
		i++
	}
	h.stack[i] = cv
	h.counter += 1 << height
}

// Write adds p. A chunk is compressed only once bytes follow it: the last
// chunk is compressed last, by Sum.
func (h *blake3Hash) Write(p []byte) {
	const group = guts.MaxSIMD * guts.ChunkSize
	if h.ntail > 0 && len(p) > 0 {
		n := copy(h.tail[h.ntail:], p)
		h.ntail += n
		p = p[n:]
		if len(p) == 0 {
			return
		}
		h.push(guts.ChainingValue(guts.CompressChunk(h.tail[:], &guts.IV, h.counter, 0)), 0)
		h.ntail = 0
	}
	groupHeight := bits.TrailingZeros(guts.MaxSIMD)
	for len(p) > guts.ChunkSize {
		if h.counter%guts.MaxSIMD == 0 && len(p) > group {
			n := guts.CompressBuffer((*[group]byte)(p[:group]), group, &guts.IV, h.counter, 0)
			h.push(guts.ChainingValue(n), groupHeight)
			p = p[group:]
			continue
		}
		h.push(guts.ChainingValue(guts.CompressChunk(p[:guts.ChunkSize], &guts.IV, h.counter, 0)), 0)
		p = p[guts.ChunkSize:]
	}
	h.ntail += copy(h.tail[h.ntail:], p)
}

// Sum returns the checksum of everything written.
func (h *blake3Hash) Sum() []byte {
	n := guts.CompressChunk(h.tail[:h.ntail], &guts.IV, h.counter, 0)
	for i := bits.TrailingZeros64(h.counter); i < bits.Len64(h.counter); i++ {
		if h.counter&(1<<i) != 0 {
			n = guts.ParentNode(h.stack[i], guts.ChainingValue(n), &guts.IV, 0)
		}
	}
	return root(n)
}

func root(n guts.Node) []byte {
	n.Flags |= guts.FlagRoot
	out := guts.WordsToBytes(guts.CompressNode(n))
	return append([]byte(nil), out[:32]...)
}

// MaxContentChunk is the largest ContentChunk: the kernel writes chunks of
// at most this many bytes and refuses larger ones at restore.
const MaxContentChunk = 4 << 20

// MaxID is the largest GEM handle, context id, syncobj handle or sw_sync
// timeline: ids are positive ints to user space, as the kernel's
// idr_alloc(idr, ptr, 1, 0, ...) hands them out in [1, INT_MAX].
const MaxID = 1<<31 - 1
