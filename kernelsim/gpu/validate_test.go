package gpu

import (
	"context"
	"errors"
	"math"
	"testing"
)

func TestValidateRejects(t *testing.T) {
	sizes := []uint64{64, 128}
	bad := map[string]Command{
		"unknown op":           {Op: 99},
		"zero op":              {Op: 0},
		"dst index":            {Op: OpFill, Dst: 2, Len: 1},
		"negative dst":         {Op: OpFill, Dst: -1, Len: 1},
		"fill past end":        {Op: OpFill, Dst: 0, DstOff: 60, Len: 5},
		"fill offset overflow": {Op: OpFill, Dst: 0, DstOff: math.MaxUint64, Len: 2},
		"fill len overflow":    {Op: OpFill, Dst: 0, DstOff: 1, Len: math.MaxUint64},
		"fill wide pattern":    {Op: OpFill, Dst: 0, Len: 4, Value: 1 << 32},
		"copy src range":       {Op: OpCopy, Src: 0, SrcOff: 1, Dst: 1, Len: 64},
		"copy src index":       {Op: OpCopy, Src: 5, Dst: 1, Len: 1},
		"counter misaligned":   {Op: OpAddCounter, Dst: 0, DstOff: 4},
		"counter past end":     {Op: OpAddCounter, Dst: 0, DstOff: 64},
		"checksum misaligned":  {Op: OpChecksum, Src: 0, Len: 8, Dst: 1, DstOff: 12},
		"compute empty src":    {Op: OpCompute, Src: 0, Len: 0, Dst: 1, Iterations: 1},
		"compute too long":     {Op: OpCompute, Src: 0, Len: 8, Dst: 1, Iterations: MaxIterations + 1},
		"compute dst range":    {Op: OpCompute, Src: 0, Len: 8, Dst: 1, DstOff: 128, Iterations: 1},
	}
	for name, c := range bad {
		if err := Validate([]Command{c}, len(sizes), sizes); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	if err := Validate(nil, 2, sizes[:1]); err == nil {
		t.Error("size/count mismatch accepted")
	}
	if err := Validate(make([]Command, MaxCommands+1), 0, nil); err == nil {
		t.Error("oversized command list accepted")
	}
	good := []Command{
		{Op: OpFill, Dst: 0, DstOff: 64, Len: 0},
		{Op: OpAddCounter, Dst: 1, DstOff: 120},
		{Op: OpHang, Dst: -1, Src: -1},
	}
	if err := Validate(good, 2, sizes); err != nil {
		t.Errorf("valid list rejected: %v", err)
	}
}

func FuzzExecute(f *testing.F) {
	f.Add(uint32(1), 0, 0, uint64(0), uint64(0), uint64(8), uint64(1), uint64(3))
	f.Add(uint32(6), 1, 0, uint64(8), uint64(3), uint64(5), uint64(7), uint64(100))
	f.Add(uint32(2), 0, 1, uint64(math.MaxUint64), uint64(1), uint64(2), uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, op uint32, dst, src int, doff, soff, n, v, iters uint64) {
		bufs := []Buffer{newMem(64), newMem(32)}
		c := Command{Op: Op(op), Dst: dst, Src: src, DstOff: doff, SrcOff: soff, Len: n, Value: v, Iterations: iters % 5000}
		if c.Op == OpHang {
			return // runs forever by design
		}
		var p Progress
		err := NewEngine(EngineConfig{}).Execute(context.Background(), []Command{c}, bufs, &p, nil)
		verr := Validate([]Command{c}, 2, []uint64{64, 32})
		if (err == nil) != (verr == nil) {
			t.Fatalf("Execute %v vs Validate %v disagree", err, verr)
		}
	})
}
