package gpu

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// chunk bounds the temporary memory of streaming ops.
const chunk = 64 << 10

// apply performs the effect of a validated non-Compute, non-Hang command.
func apply(c Command, bufs []Buffer) error {
	switch c.Op {
	case OpFill:
		var pat [4]byte
		binary.LittleEndian.PutUint32(pat[:], uint32(c.Value))
		return stream(bufs[c.Dst], c.DstOff, c.Len, func(p []byte, pos uint64) {
			for k := range p {
				p[k] = pat[(pos+uint64(k))%4]
			}
		})
	case OpRandFill:
		rng := newXorshift(c.Value)
		var word [8]byte
		return stream(bufs[c.Dst], c.DstOff, c.Len, func(p []byte, pos uint64) {
			// pos is a multiple of chunk, hence of 8: words stay aligned.
			for k := range p {
				if (pos+uint64(k))%8 == 0 {
					binary.LittleEndian.PutUint64(word[:], rng.next())
				}
				p[k] = word[(pos+uint64(k))%8]
			}
		})
	case OpCopy:
		tmp := make([]byte, c.Len)
		if err := bufs[c.Src].ReadAt(tmp, c.SrcOff); err != nil {
			return fmt.Errorf("copy: read src: %w", err)
		}
		if err := bufs[c.Dst].WriteAt(tmp, c.DstOff); err != nil {
			return fmt.Errorf("copy: write dst: %w", err)
		}
		return nil
	case OpAddCounter:
		var b [8]byte
		if err := bufs[c.Dst].ReadAt(b[:], c.DstOff); err != nil {
			return fmt.Errorf("addcounter: %w", err)
		}
		binary.LittleEndian.PutUint64(b[:], binary.LittleEndian.Uint64(b[:])+c.Value)
		return bufs[c.Dst].WriteAt(b[:], c.DstOff)
	case OpChecksum:
		h := fnv.New64a()
		buf := make([]byte, min(c.Len, chunk))
		for done := uint64(0); done < c.Len; {
			n := min(c.Len-done, chunk)
			if err := bufs[c.Src].ReadAt(buf[:n], c.SrcOff+done); err != nil {
				return fmt.Errorf("checksum: read src: %w", err)
			}
			h.Write(buf[:n])
			done += n
		}
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], h.Sum64())
		return bufs[c.Dst].WriteAt(b[:], c.DstOff)
	}
	return fmt.Errorf("apply: unexpected op %v: %w", c.Op, ErrInvalid)
}

// stream writes n bytes at off in chunks produced by gen, which gets each
// chunk and its position relative to off.
func stream(b Buffer, off, n uint64, gen func(p []byte, pos uint64)) error {
	buf := make([]byte, min(n, chunk))
	for pos := uint64(0); pos < n; {
		k := min(n-pos, chunk)
		gen(buf[:k], pos)
		if err := b.WriteAt(buf[:k], off+pos); err != nil {
			return fmt.Errorf("write at %d: %w", off+pos, err)
		}
		pos += k
	}
	return nil
}

type xorshift struct{ s uint64 }

func newXorshift(seed uint64) *xorshift {
	if seed == 0 {
		seed = 0x9E3779B97F4A7C15
	}
	return &xorshift{seed}
}

func (x *xorshift) next() uint64 {
	x.s ^= x.s >> 12
	x.s ^= x.s << 25
	x.s ^= x.s >> 27
	return x.s * 0x2545F4914F6CDD1D
}
