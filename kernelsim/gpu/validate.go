package gpu

import (
	"fmt"

	"drmcr/kernelsim/dma"
)

const (
	// MaxCommands bounds a command list.
	MaxCommands = 4096
	// MaxIterations bounds OpCompute.
	MaxIterations = 1 << 32
)

// ErrInvalid wraps every validation error (-EINVAL).
var ErrInvalid = dma.ErrInvalid

// Validate checks a command list against nbufs buffers of the given sizes:
// known opcodes, buffer indexes, byte ranges (overflow-safe), alignment of
// u64 destinations and bounded iteration counts.
func Validate(cmds []Command, nbufs int, sizes []uint64) error {
	if nbufs < 0 || len(sizes) != nbufs {
		return fmt.Errorf("gpu: %d buffer sizes for %d buffers: %w", len(sizes), nbufs, ErrInvalid)
	}
	if len(cmds) > MaxCommands {
		return fmt.Errorf("gpu: %d commands, limit %d: %w", len(cmds), MaxCommands, ErrInvalid)
	}
	for i, c := range cmds {
		if err := validateOne(c, sizes); err != nil {
			return fmt.Errorf("gpu: command %d (%v): %w", i, c.Op, err)
		}
	}
	return nil
}

func validateOne(c Command, sizes []uint64) error {
	switch c.Op {
	case OpFill:
		if c.Value > 0xffffffff {
			return fmt.Errorf("fill pattern %#x does not fit in 32 bits: %w", c.Value, ErrInvalid)
		}
		return checkRange("dst", c.Dst, c.DstOff, c.Len, sizes)
	case OpRandFill:
		return checkRange("dst", c.Dst, c.DstOff, c.Len, sizes)
	case OpCopy:
		if err := checkRange("src", c.Src, c.SrcOff, c.Len, sizes); err != nil {
			return err
		}
		return checkRange("dst", c.Dst, c.DstOff, c.Len, sizes)
	case OpAddCounter:
		return checkU64("dst", c.Dst, c.DstOff, sizes)
	case OpChecksum:
		if err := checkRange("src", c.Src, c.SrcOff, c.Len, sizes); err != nil {
			return err
		}
		return checkU64("dst", c.Dst, c.DstOff, sizes)
	case OpCompute:
		if c.Len == 0 {
			return fmt.Errorf("compute needs a non-empty source range: %w", ErrInvalid)
		}
		if c.Iterations > MaxIterations {
			return fmt.Errorf("%d iterations, limit %d: %w", c.Iterations, uint64(MaxIterations), ErrInvalid)
		}
		if err := checkRange("src", c.Src, c.SrcOff, c.Len, sizes); err != nil {
			return err
		}
		return checkU64("dst", c.Dst, c.DstOff, sizes)
	case OpHang:
		return nil
	}
	return fmt.Errorf("unknown opcode %d: %w", uint32(c.Op), ErrInvalid)
}

func checkIndex(what string, idx int, sizes []uint64) error {
	if idx < 0 || idx >= len(sizes) {
		return fmt.Errorf("%s buffer index %d out of [0,%d): %w", what, idx, len(sizes), ErrInvalid)
	}
	return nil
}

func checkRange(what string, idx int, off, n uint64, sizes []uint64) error {
	if err := checkIndex(what, idx, sizes); err != nil {
		return err
	}
	if size := sizes[idx]; off > size || n > size-off {
		return fmt.Errorf("%s range [%d,+%d) exceeds buffer %d of %d bytes: %w", what, off, n, idx, size, ErrInvalid)
	}
	return nil
}

func checkU64(what string, idx int, off uint64, sizes []uint64) error {
	if off%8 != 0 {
		return fmt.Errorf("%s offset %d not 8-byte aligned: %w", what, off, ErrInvalid)
	}
	return checkRange(what, idx, off, 8, sizes)
}

// CheckProgress checks where a job stands against its commands: the next
// command to run is one of them (or the end), and iterations done lie
// within that command's (Compute's; any other command has none done).
func CheckProgress(cmds []Command, p Progress) error {
	if p.Cmd < 0 || p.Cmd > len(cmds) {
		return fmt.Errorf("gpu: progress at command %d of a %d-command job: %w", p.Cmd, len(cmds), ErrInvalid)
	}
	if p.Cmd == len(cmds) {
		if p.Iter != 0 {
			return fmt.Errorf("gpu: progress past the last command with %d iterations done: %w", p.Iter, ErrInvalid)
		}
		return nil
	}
	c := cmds[p.Cmd]
	if c.Op != OpCompute && p.Iter != 0 {
		return fmt.Errorf("gpu: progress of %d iterations in command %d (%v), which has none: %w", p.Iter, p.Cmd, c.Op, ErrInvalid)
	}
	if p.Iter > c.Iterations {
		return fmt.Errorf("gpu: progress of %d iterations in command %d (compute of %d): %w", p.Iter, p.Cmd, c.Iterations, ErrInvalid)
	}
	return nil
}
