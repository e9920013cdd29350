package uapi

import (
	"math/bits"

	"lukechampine.com/blake3/guts"
)

// ChecksumSize is the size of a ContentChunk checksum.
const ChecksumSize = 32

// ChecksumName names the algorithm of ContentChunk checksums in images.
const ChecksumName = "blake3-256"

// ContentChecksum is the checksum of a ContentChunk's bytes: BLAKE3-256.
// BLAKE3 is a cryptographic hash (no other contents can be made to match
// a recorded checksum), and with SIMD it hashes a contiguous chunk at
// several GB/s per core, about twice SHA-256 with the SHA extensions, so
// that checking every byte does not set the speed of a dump or a restore
// (see docs/BENCHMARKS.md).
//
// It runs on the calling goroutine: the library's Sum256 starts a
// goroutine per 16 KiB, which costs more in scheduling than it gains
// where a worker per CPU already hashes chunks side by side.
func ContentChecksum(b []byte) []byte {
	var h ContentHasher
	h.Write(b)
	return h.Sum()
}

// ContentHasher computes ContentChecksum over bytes written to it in
// pieces of any size, so that a chunk can be checksummed piece by piece
// right after each piece is copied, while the piece is still in the CPU's
// cache, instead of in a second pass over the whole chunk. The zero value
// is ready; Sum equals ContentChecksum of everything written.
type ContentHasher struct {
	stack   [64][8]uint32
	counter uint64 // chunks pushed; bit i set: a subtree of height i on the stack
	tail    [guts.ChunkSize]byte
	ntail   int // bytes in tail: the last chunk so far, compressed by Sum
}

func (h *ContentHasher) push(cv [8]uint32, height int) {
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
func (h *ContentHasher) Write(p []byte) {
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
func (h *ContentHasher) Sum() []byte {
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
	return append([]byte(nil), out[:ChecksumSize]...)
}

// MaxContentChunk is the largest ContentChunk: the kernel writes chunks of
// at most this many bytes and refuses larger ones at restore.
const MaxContentChunk = 4 << 20

// MaxID is the largest GEM handle, context id, syncobj handle or sw_sync
// timeline: ids are positive ints to user space, as the kernel's
// idr_alloc(idr, ptr, 1, 0, ...) hands them out in [1, INT_MAX].
const MaxID = 1<<31 - 1
