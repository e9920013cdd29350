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
	const group = guts.MaxSIMD * guts.ChunkSize
	if len(b) <= guts.ChunkSize {
		n := guts.CompressChunk(b, &guts.IV, 0, 0)
		return root(n)
	}
	// The last chunk (full or not) is compressed last, as the root's
	// leftmost descendant chain ends there; everything before it is pushed
	// as complete subtrees onto the stack of subtree roots, one per height.
	last := (len(b) - 1) / guts.ChunkSize * guts.ChunkSize
	var (
		stack   [64][8]uint32
		counter uint64 // chunks pushed; bit i set: a subtree of height i on the stack
	)
	push := func(cv [8]uint32, height int) {
		i := height
		for counter&(1<<i) != 0 {
			cv = guts.ChainingValue(guts.ParentNode(stack[i], cv, &guts.IV, 0))
			i++
		}
		stack[i] = cv
		counter += 1 << height
	}
	groupHeight := bits.TrailingZeros(guts.MaxSIMD)
	pos := 0
	for ; pos+group <= last; pos += group {
		n := guts.CompressBuffer((*[group]byte)(b[pos:pos+group]), group, &guts.IV, counter, 0)
		push(guts.ChainingValue(n), groupHeight)
	}
	for ; pos < last; pos += guts.ChunkSize {
		push(guts.ChainingValue(guts.CompressChunk(b[pos:pos+guts.ChunkSize], &guts.IV, counter, 0)), 0)
	}
	n := guts.CompressChunk(b[last:], &guts.IV, counter, 0)
	for i := bits.TrailingZeros64(counter); i < bits.Len64(counter); i++ {
		if counter&(1<<i) != 0 {
			n = guts.ParentNode(stack[i], guts.ChainingValue(n), &guts.IV, 0)
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
