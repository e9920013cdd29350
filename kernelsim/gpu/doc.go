// Package gpu is the simulated GPU: an Engine that really executes command
// lists on buffer contents, with execution time charged on a ktime.Clock,
// and a sched.Backend adapter (NewBackend) that runs scheduler jobs on it.
//
// # Command ABI
//
// Tests compute expected buffer contents from these rules; they are stable.
// All integers are little-endian. Dst and Src index the job's buffers; a
// field an op does not use is ignored (use -1 / 0).
//
//   - OpFill: byte k of [DstOff, DstOff+Len) is byte k%4 of the LE u32
//     Value (Value must fit in 32 bits). Len need not be a multiple of 4.
//   - OpCopy: copy Len bytes from Src@SrcOff to Dst@DstOff; the source is
//     read completely before the destination is written, so overlapping
//     ranges in one buffer behave like memmove.
//   - OpRandFill: fill [DstOff, DstOff+Len) with the xorshift64* stream
//     seeded with Value (seed 0 is replaced by 0x9E3779B97F4A7C15): for each
//     8-byte word, s ^= s>>12; s ^= s<<25; s ^= s>>27; word = s *
//     0x2545F4914F6CDD1D, written LE; a trailing partial word is truncated.
//   - OpAddCounter: the u64 at Dst@DstOff (8-aligned) += Value (wrapping).
//     Len is ignored.
//   - OpChecksum: 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime
//     0x100000001b3) of Src[SrcOff:SrcOff+Len], stored as a u64 at
//     Dst@DstOff (8-aligned).
//   - OpCompute: acc starts at 0xcbf29ce484222325; for i in [0, Iterations):
//     acc = Mix(acc, i, w_i), where w_i is the LE u64 made of bytes
//     Src[SrcOff + (8i+j) mod Len] for j = 0..7 (the Src range read
//     cyclically; Len >= 1); finally acc is stored as a u64 at Dst@DstOff
//     (8-aligned). Iterations <= MaxIterations. See Mix.
//   - OpHang: never completes; only a kill (context cancel) stops it. It is
//     not preemptible.
//
// # Timing
//
// A command moving n bytes costs n/Bandwidth seconds of clock time (Fill,
// RandFill, Checksum, Copy: Len; AddCounter: 8), a Compute command costs
// Iterations*IterTime. A command's effect is applied atomically once its
// time has passed, so a preempted or killed job never leaves a half-done
// command: preemption points are between commands and between Compute
// iterations. With a ktime.Manual clock nothing completes until the test
// advances the clock; work queued back to back is charged from the end of
// the previous work (not from when the goroutine woke), so one big Advance
// completes exactly what many small ones would.
package gpu
