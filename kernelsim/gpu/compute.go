package gpu

import (
	"encoding/binary"
	"math/bits"
)

// ComputeInit is the Compute accumulator's starting value.
const ComputeInit = 0xcbf29ce484222325

// Mix is one Compute iteration: acc ^= w + i*0x9E3779B97F4A7C15;
// acc *= 0x100000001b3; acc = rotl64(acc, 29) (all wrapping).
func Mix(acc, i, w uint64) uint64 {
	acc ^= w + i*0x9E3779B97F4A7C15
	acc *= 0x100000001b3
	return bits.RotateLeft64(acc, 29)
}

// computeWord is w_i of the ABI: 8 bytes of src read cyclically from 8i.
func computeWord(src []byte, i uint64) uint64 {
	l := uint64(len(src))
	start := (i % l) * 8 % l
	if start+8 <= l {
		return binary.LittleEndian.Uint64(src[start:])
	}
	var b [8]byte
	for j := range uint64(8) {
		b[j] = src[(start+j)%l]
	}
	return binary.LittleEndian.Uint64(b[:])
}

// runIters advances p by n iterations of a Compute over src.
func runIters(src []byte, p *Progress, n uint64) {
	acc, i := p.Acc, p.Iter
	for end := i + n; i < end; i++ {
		acc = Mix(acc, i, computeWord(src, i))
	}
	p.Acc, p.Iter = acc, i
}
