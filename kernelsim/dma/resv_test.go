package dma

import (
	"context"
	"errors"
	"testing"
	"time"
)

func ids(fs []*Fence) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.ID())
		f.Put()
	}
	return out
}

func TestResvReplaceSameContext(t *testing.T) {
	checkNoLeaks(t)
	r := NewResv()
	defer r.Release()
	ctx := NewContext(1)
	f1 := NewFence(ctx, 1, "a")
	f2 := NewFence(ctx, 2, "a")
	defer f1.Put()
	defer f2.Put()
	r.Add(f1, UsageWrite)
	if f1.Refcount() != 2 {
		t.Fatalf("Add did not take a reference: %d", f1.Refcount())
	}
	r.Add(f2, UsageWrite)
	if r.Len() != 1 || f1.Refcount() != 1 {
		t.Fatalf("later fence of same context must replace: len %d, f1 refs %d", r.Len(), f1.Refcount())
	}
	// A read from the same context must not hide the write (old usage is
	// stricter), so it gets its own slot.
	f3 := NewFence(ctx, 3, "a")
	defer f3.Put()
	r.Add(f3, UsageRead)
	if r.Len() != 2 {
		t.Fatalf("len %d, want 2 (write kept, read added)", r.Len())
	}
	if got := ids(r.Fences(UsageWrite)); len(got) != 1 || got[0] != f2.ID() {
		t.Fatalf("write fences %v, want [%d]", got, f2.ID())
	}
	// An older fence never replaces a newer one.
	f0 := NewFence(ctx, 0, "a")
	defer f0.Put()
	r.Add(f0, UsageRead)
	if r.Len() != 3 {
		t.Fatalf("len %d, want 3", r.Len())
	}
}

func TestResvUsageFilteringAndWait(t *testing.T) {
	checkNoLeaks(t)
	r := NewResv()
	defer r.Release()
	k := NewFence(NewContext(1), 1, "kernel")
	w := NewFence(NewContext(1), 1, "write")
	rd := NewFence(NewContext(1), 1, "read")
	b := NewFence(NewContext(1), 1, "bookkeep")
	for _, f := range []*Fence{k, w, rd, b} {
		defer f.Put()
	}
	r.Add(k, UsageKernel)
	r.Add(w, UsageWrite)
	r.Add(rd, UsageRead)
	r.Add(b, UsageBookkeep)
	if err := r.Add(k, Usage(9)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad usage: %v", err)
	}
	if err := r.Add(nil, UsageRead); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil fence: %v", err)
	}
	counts := map[Usage]int{UsageKernel: 1, UsageWrite: 2, UsageRead: 3, UsageBookkeep: 4}
	for u, n := range counts {
		if got := len(ids(r.Fences(u))); got != n {
			t.Errorf("Fences(%v) = %d fences, want %d", u, got, n)
		}
	}
	if UsageRW(true) != UsageRead || UsageRW(false) != UsageWrite {
		t.Fatal("UsageRW: writer waits for readers, reader waits for writers")
	}
	k.Signal(nil)
	w.Signal(nil)
	if !r.TestSignaled(UsageRW(false)) || r.TestSignaled(UsageRW(true)) {
		t.Fatal("reader must be ready, writer must wait for the reader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	err := r.Wait(ctx, UsageRead)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want deadline", err)
	}
	go rd.Signal(nil)
	if err := r.Wait(context.Background(), UsageRead); err != nil {
		t.Fatal(err)
	}
	r.Prune()
	if r.Len() != 1 || len(r.Snapshot()) != 1 || r.Snapshot()[0].Fence.ID != b.ID() {
		t.Fatalf("after prune: %+v", r.Snapshot())
	}
}

func TestResvSignaledSlotReuseAndRelease(t *testing.T) {
	checkNoLeaks(t)
	r := NewResv()
	a := NewFence(NewContext(1), 1, "a")
	a.Signal(nil)
	r.Add(a, UsageRead)
	a.Put()
	c := NewFence(NewContext(1), 1, "c")
	r.Add(c, UsageWrite)
	if r.Len() != 1 {
		t.Fatalf("signalled slot must be reused, len %d", r.Len())
	}
	r.Release()
	r.Release()
	if err := r.Add(c, UsageRead); err == nil {
		t.Fatal("Add after Release must fail")
	}
	if c.Refcount() != 1 {
		t.Fatalf("Release must drop the resv's reference, refs %d", c.Refcount())
	}
	c.Put()
}
