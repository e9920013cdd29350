package dma

import (
	"errors"
	"testing"
)

func TestSwSyncOrdering(t *testing.T) {
	checkNoLeaks(t)
	tl := NewSwSyncTimeline("t")
	defer tl.Release()
	var order []uint64
	var fences []*Fence
	for _, p := range []uint64{5, 1, 3, 2} {
		f := tl.CreateFence(p)
		f.AddCallback(func(g *Fence) { order = append(order, g.Seqno()) })
		fences = append(fences, f)
	}
	defer func() {
		for _, f := range fences {
			f.Put()
		}
	}()
	if dup := tl.CreateFence(3); dup != fences[2] {
		t.Fatal("same pending point must return the same fence")
	} else {
		dup.Put()
	}
	tl.Inc(2)
	if tl.Value() != 2 || len(order) != 2 || order[0] != 1 || order[1] != 2 {
		t.Fatalf("after Inc(2): value %d order %v", tl.Value(), order)
	}
	tl.Inc(3)
	if len(order) != 4 || order[2] != 3 || order[3] != 5 {
		t.Fatalf("after Inc(3): order %v", order)
	}
	past := tl.CreateFence(4)
	if !past.Signaled() || past.Err() != nil {
		t.Fatal("a point already reached must be signalled")
	}
	past.Put()
}

func TestSwSyncReleaseSignalsENOENT(t *testing.T) {
	checkNoLeaks(t)
	tl := NewSwSyncTimeline("t")
	f := tl.CreateFence(10)
	dropped := tl.CreateFence(11)
	dropped.Put() // last reference: the point leaves the timeline
	if tl.Pending() != 1 {
		t.Fatalf("pending %d, want 1", tl.Pending())
	}
	tl.Release()
	if !f.Signaled() || !errors.Is(f.Err(), ErrNoEnt) {
		t.Fatalf("release: signalled %v err %v, want ENOENT", f.Signaled(), f.Err())
	}
	after := tl.CreateFence(12)
	if !errors.Is(after.Err(), ErrNoEnt) {
		t.Fatal("fence on a released timeline must be born failed")
	}
	after.Put()
	f.Put()
	tl.Inc(100) // harmless after release
}
