package gpu

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"drmcr/kernelsim/ktime"
)

// Reference implementations, written from the ABI text, not the engine.

func refFill(b []byte, v uint32) {
	for k := range b {
		b[k] = byte(v >> (8 * (k % 4)))
	}
}

func refRand(n int, seed uint64) []byte {
	s := seed
	if s == 0 {
		s = 0x9E3779B97F4A7C15
	}
	out := make([]byte, 0, n+8)
	for len(out) < n {
		s ^= s >> 12
		s ^= s << 25
		s ^= s >> 27
		out = binary.LittleEndian.AppendUint64(out, s*0x2545F4914F6CDD1D)
	}
	return out[:n]
}

func refFNV(b []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, c := range b {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return h
}

func refCompute(src []byte, iters uint64) uint64 {
	acc := uint64(0xcbf29ce484222325)
	for i := uint64(0); i < iters; i++ {
		var w uint64
		for j := uint64(0); j < 8; j++ {
			w |= uint64(src[(8*i+j)%uint64(len(src))]) << (8 * j)
		}
		acc ^= w + i*0x9E3779B97F4A7C15
		acc *= 0x100000001b3
		acc = acc<<29 | acc>>35
	}
	return acc
}

func u64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

func TestOpsMatchReference(t *testing.T) {
	e := NewEngine(EngineConfig{})
	a, b := newMem(4096), newMem(4096)
	cmds := []Command{
		{Op: OpFill, Dst: 0, DstOff: 3, Len: 1001, Value: 0xdeadbeef, Src: -1},
		{Op: OpRandFill, Dst: 1, DstOff: 0, Len: 2051, Value: 42, Src: -1},
		{Op: OpCopy, Src: 1, SrcOff: 100, Dst: 0, DstOff: 2000, Len: 500},
		{Op: OpCopy, Src: 0, SrcOff: 2000, Dst: 0, DstOff: 2100, Len: 300}, // overlapping
		{Op: OpAddCounter, Dst: 1, DstOff: 3000, Value: 5, Src: -1},
		{Op: OpAddCounter, Dst: 1, DstOff: 3000, Value: ^uint64(0), Src: -1}, // wraps: +5-1
		{Op: OpChecksum, Src: 0, SrcOff: 0, Len: 4096, Dst: 1, DstOff: 3008},
		{Op: OpCompute, Src: 1, SrcOff: 7, Len: 13, Dst: 1, DstOff: 3016, Iterations: 1000},
	}
	var p Progress
	if err := e.Execute(context.Background(), cmds, []Buffer{a, b}, &p, nil); err != nil {
		t.Fatal(err)
	}
	if p.Cmd != len(cmds) {
		t.Fatalf("progress %+v", p)
	}

	wantA, wantB := make([]byte, 4096), make([]byte, 4096)
	refFill(wantA[3:1004], 0xdeadbeef)
	copy(wantB, refRand(2051, 42))
	copy(wantA[2000:2500], wantB[100:600])
	tmp := append([]byte(nil), wantA[2000:2300]...)
	copy(wantA[2100:], tmp)
	binary.LittleEndian.PutUint64(wantB[3000:], 4)
	binary.LittleEndian.PutUint64(wantB[3008:], refFNV(wantA))
	binary.LittleEndian.PutUint64(wantB[3016:], refCompute(wantB[7:20], 1000))

	if got := a.bytes(); !bytes.Equal(got, wantA) {
		t.Errorf("buffer a differs from reference")
	}
	if got := b.bytes(); !bytes.Equal(got, wantB) {
		for i := range got {
			if got[i] != wantB[i] {
				t.Errorf("buffer b differs at %d: got %#x want %#x", i, got[i], wantB[i])
				break
			}
		}
	}
}

func TestRandFillSeedZeroAndDeterminism(t *testing.T) {
	e := NewEngine(EngineConfig{})
	a, b := newMem(100), newMem(100)
	for _, buf := range []*memBuffer{a, b} {
		var p Progress
		if err := e.Execute(context.Background(), []Command{{Op: OpRandFill, Dst: 0, Len: 100}}, []Buffer{buf}, &p, nil); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(a.bytes(), b.bytes()) || !bytes.Equal(a.bytes(), refRand(100, 0)) {
		t.Fatal("RandFill must be deterministic and match the reference for seed 0")
	}
}

func TestTimingOnManualClock(t *testing.T) {
	clk := ktime.NewManual()
	e := NewEngine(EngineConfig{Clock: clk, Bandwidth: 1000}) // 1 byte/ms
	buf := newMem(300)
	cmds := []Command{
		{Op: OpFill, Dst: 0, Len: 100, Value: 1},
		{Op: OpFill, Dst: 0, DstOff: 100, Len: 200, Value: 2},
	}
	var p Progress
	done := make(chan error, 1)
	go func() { done <- e.Execute(context.Background(), cmds, []Buffer{buf}, &p, nil) }()
	if !clk.WaitPending(1, 10*time.Second) {
		t.Fatal("engine never waited on the clock")
	}
	clk.Advance(99 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("finished before its time")
	default:
	}
	// One big step completes both commands: the second is charged from
	// the end of the first (100ms), so it ends at exactly 300ms.
	clk.Advance(201 * time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := buf.bytes()
	if got[0] != 1 || got[99] != 0 || got[100] != 2 {
		t.Fatalf("unexpected contents %v...", got[:4])
	}
}

func TestComputePreemptResumeMatchesUninterrupted(t *testing.T) {
	src := refRand(64, 7)
	mk := func() []Buffer {
		s, d := newMem(64), newMem(16)
		s.WriteAt(src, 0)
		return []Buffer{s, d}
	}
	cmds := []Command{
		{Op: OpFill, Dst: 1, Len: 8, Value: 9},
		{Op: OpCompute, Src: 0, Len: 61, SrcOff: 3, Dst: 1, DstOff: 8, Iterations: 1000},
	}
	// Uninterrupted reference run, instantaneous.
	whole := mk()
	var pw Progress
	if err := NewEngine(EngineConfig{}).Execute(context.Background(), cmds, whole, &pw, nil); err != nil {
		t.Fatal(err)
	}
	if u64(whole[1].(*memBuffer).bytes(), 8) != refCompute(src[3:64], 1000) {
		t.Fatal("compute differs from reference")
	}

	clk := ktime.NewManual()
	e := NewEngine(EngineConfig{Clock: clk, IterTime: time.Millisecond})
	bufs := mk()
	var p Progress
	preempt := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- e.Execute(context.Background(), cmds, bufs, &p, preempt) }()
	clk.WaitPending(1, 10*time.Second)
	clk.Advance(300*time.Millisecond + time.Microsecond)
	close(preempt)
	if err := <-done; !errors.Is(err, ErrPreempted) {
		t.Fatalf("Execute = %v, want ErrPreempted", err)
	}
	if p.Cmd != 1 || p.Iter != 300 {
		t.Fatalf("progress %+v, want cmd 1 iter 300", p)
	}
	// Progress survives serialisation (checkpoint to another process).
	blob, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var restored Progress
	if err := json.Unmarshal(blob, &restored); err != nil {
		t.Fatal(err)
	}
	// Resume on a fresh engine and clock, preempting twice more.
	clk2 := ktime.NewManual()
	e2 := NewEngine(EngineConfig{Clock: clk2, IterTime: time.Millisecond})
	for _, step := range []time.Duration{123 * time.Millisecond, 0} {
		preempt := make(chan struct{})
		go func() { done <- e2.Execute(context.Background(), cmds, bufs, &restored, preempt) }()
		clk2.WaitPending(1, 10*time.Second)
		if step == 0 {
			clk2.Advance(time.Hour)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			break
		}
		clk2.Advance(step)
		close(preempt)
		if err := <-done; !errors.Is(err, ErrPreempted) {
			t.Fatalf("second preemption: %v", err)
		}
		if restored.Iter != 423 {
			t.Fatalf("progress %+v, want iter 423", restored)
		}
	}
	if !bytes.Equal(bufs[1].(*memBuffer).bytes(), whole[1].(*memBuffer).bytes()) {
		t.Fatal("preempted+resumed compute differs from the uninterrupted run")
	}
}

func TestPreemptInstantaneousBetweenCommands(t *testing.T) {
	e := NewEngine(EngineConfig{})
	buf := newMem(16)
	preempt := make(chan struct{})
	close(preempt)
	var p Progress
	err := e.Execute(context.Background(), []Command{{Op: OpAddCounter, Dst: 0, Value: 1}}, []Buffer{buf}, &p, preempt)
	if !errors.Is(err, ErrPreempted) || p.Cmd != 0 || u64(buf.bytes(), 0) != 0 {
		t.Fatalf("err %v progress %+v: a preempted command must not have started", err, p)
	}
	if err := e.Execute(context.Background(), []Command{{Op: OpAddCounter, Dst: 0, Value: 1}}, []Buffer{buf}, &p, nil); err != nil || u64(buf.bytes(), 0) != 1 {
		t.Fatalf("resume: %v", err)
	}
}

func TestHangStopsOnlyWhenKilled(t *testing.T) {
	clk := ktime.NewManual()
	e := NewEngine(EngineConfig{Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	var p Progress
	done := make(chan error, 1)
	go func() { done <- e.Execute(ctx, []Command{{Op: OpHang}}, nil, &p, nil) }()
	clk.Advance(time.Hour)
	select {
	case err := <-done:
		t.Fatalf("hang completed: %v", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute = %v, want context.Canceled", err)
	}
}

func TestKillDuringTimedCommand(t *testing.T) {
	clk := ktime.NewManual()
	e := NewEngine(EngineConfig{Clock: clk, Bandwidth: 1})
	buf := newMem(8)
	ctx, cancel := context.WithCancel(context.Background())
	var p Progress
	done := make(chan error, 1)
	go func() {
		done <- e.Execute(ctx, []Command{{Op: OpFill, Dst: 0, Len: 8, Value: 0xffffffff}}, []Buffer{buf}, &p, nil)
	}()
	clk.WaitPending(1, 10*time.Second)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute = %v", err)
	}
	if u64(buf.bytes(), 0) != 0 || p.Cmd != 0 {
		t.Fatal("killed command must have had no effect")
	}
	if clk.Pending() != 0 {
		t.Fatal("killed execution left a timer")
	}
}
