package gpu

import "fmt"

// Op is a GPU command opcode.
type Op uint32

const (
	OpFill       Op = 1
	OpCopy       Op = 2
	OpRandFill   Op = 3
	OpAddCounter Op = 4
	OpChecksum   Op = 5
	OpCompute    Op = 6
	OpHang       Op = 7
)

func (o Op) String() string {
	switch o {
	case OpFill:
		return "fill"
	case OpCopy:
		return "copy"
	case OpRandFill:
		return "randfill"
	case OpAddCounter:
		return "addcounter"
	case OpChecksum:
		return "checksum"
	case OpCompute:
		return "compute"
	case OpHang:
		return "hang"
	}
	return fmt.Sprintf("op(%d)", uint32(o))
}

// Command is one GPU command; see the package documentation for the ABI.
type Command struct {
	Op             Op
	Dst, Src       int // indexes into the job's buffers (-1 when unused)
	DstOff, SrcOff uint64
	Len            uint64
	Value          uint64 // fill pattern (u32), RandFill seed, AddCounter delta
	Iterations     uint64 // OpCompute
}

// Buffer is a buffer object's backing store, owned by the GEM layer.
// Implementations bounds-check and lock.
type Buffer interface {
	Size() uint64
	ReadAt(p []byte, off uint64) error
	WriteAt(p []byte, off uint64) error
}

// Progress is where a job stands: the next command to run, and for a
// Compute command in progress, the iterations done and the accumulator.
// It is plain data so a preempted job can be checkpointed and resumed in
// another process.
type Progress struct {
	Cmd  int
	Iter uint64
	Acc  uint64
}
