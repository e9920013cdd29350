package main

import (
	"fmt"

	"drmcr/kernelsim/gpu"
)

// A scenario's GPU work is described once, as plain data (buffers and jobs
// whose commands follow package gpu's command ABI), and executed twice: on
// the simulated GPU through libdrm (the real run, possibly spread over
// several processes), and on the CPU in program order (-expect). Both
// paths build their jobs with the same functions below, so they cannot
// drift apart; what differs is only who executes them.
//
// The multi-process runs are equal to the sequential order because every
// job declares which buffers it reads and writes and the kernel orders
// conflicting accesses through the buffers' reservation objects (implicit
// sync), while the processes' handshakes fix the order in which the jobs
// are submitted.

// bufID names a logical buffer of a scenario (the same in every process).
type bufID int

// bufRef is a buffer a job uses. write is derived from the commands.
type bufRef struct {
	id    bufID
	write bool
}

// job is one GPU submission: its buffers (commands index into bufs) and
// its command list.
type job struct {
	name        string
	bufs        []bufRef
	cmds        []gpu.Command
	longRunning bool
}

// newJob starts a job using the given buffers, in that order.
func newJob(name string, ids ...bufID) *job {
	j := &job{name: name}
	for _, id := range ids {
		j.bufs = append(j.bufs, bufRef{id: id})
	}
	return j
}

// idx is the job-local index of a buffer.
func (j *job) idx(id bufID) int {
	for i, b := range j.bufs {
		if b.id == id {
			return i
		}
	}
	panic(fmt.Sprintf("job %s: buffer %d not in job", j.name, id))
}

func (j *job) add(c gpu.Command) *job {
	j.cmds = append(j.cmds, c)
	// Every op except Hang writes its Dst; declaring it keeps implicit
	// sync (and therefore the multi-process order) correct by construction.
	if c.Dst >= 0 {
		j.bufs[c.Dst].write = true
	}
	return j
}

func (j *job) fill(dst bufID, off, n uint64, pattern uint32) *job {
	return j.add(gpu.Command{Op: gpu.OpFill, Dst: j.idx(dst), Src: -1, DstOff: off, Len: n, Value: uint64(pattern)})
}

func (j *job) randfill(dst bufID, off, n, seed uint64) *job {
	return j.add(gpu.Command{Op: gpu.OpRandFill, Dst: j.idx(dst), Src: -1, DstOff: off, Len: n, Value: seed})
}

func (j *job) copy(dst bufID, dstOff uint64, src bufID, srcOff, n uint64) *job {
	return j.add(gpu.Command{Op: gpu.OpCopy, Dst: j.idx(dst), Src: j.idx(src), DstOff: dstOff, SrcOff: srcOff, Len: n})
}

func (j *job) addCounter(dst bufID, off, delta uint64) *job {
	return j.add(gpu.Command{Op: gpu.OpAddCounter, Dst: j.idx(dst), Src: -1, DstOff: off, Value: delta})
}

func (j *job) checksum(dst bufID, dstOff uint64, src bufID, srcOff, n uint64) *job {
	return j.add(gpu.Command{Op: gpu.OpChecksum, Dst: j.idx(dst), Src: j.idx(src), DstOff: dstOff, SrcOff: srcOff, Len: n})
}

func (j *job) compute(dst bufID, dstOff uint64, src bufID, srcOff, n, iters uint64) *job {
	return j.add(gpu.Command{Op: gpu.OpCompute, Dst: j.idx(dst), Src: j.idx(src), DstOff: dstOff, SrcOff: srcOff, Len: n, Iterations: iters})
}

// executor runs a scenario's plan in program order. The -expect path uses
// cpuExec (package gpu's own engine on local buffers); tests plug in an
// independent implementation of the ABI.
type executor interface {
	alloc(id bufID, size uint64)
	write(id bufID, off uint64, data []byte) error
	run(j *job) error
	bytes(id bufID) []byte
}

// runPlan runs a scenario's steps on ex in program order: for each step i
// (0-based) the jobs jobs(i) gives, in order. It stops at the first error,
// returned as "step i+1: ...".
func runPlan(ex executor, steps int, jobs func(i int) []*job) error {
	for i := range steps {
		for _, j := range jobs(i) {
			if err := ex.run(j); err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
		}
	}
	return nil
}

// mix64 is splitmix64's finaliser: the deterministic seed derivation of
// every scenario.
func mix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// stepSeed derives the seed of step i (0-based) for one use (salt).
func stepSeed(seed uint64, i int, salt uint64) uint64 {
	return mix64(seed ^ mix64(uint64(i)+1) ^ mix64(salt<<32))
}

// initPattern is CPU-generated data written with pwrite.
func initPattern(seed uint64, n uint64) []byte {
	b := make([]byte, n)
	s := mix64(seed ^ 0x1717)
	for i := range b {
		if i%8 == 0 {
			s = mix64(s)
		}
		b[i] = byte(s >> (8 * (i % 8)))
	}
	return b
}
