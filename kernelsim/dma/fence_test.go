package dma

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"drmcr/kernelsim/ktime"
)

func TestFenceSignalOnce(t *testing.T) {
	checkNoLeaks(t)
	clk := ktime.NewManual()
	clk.Advance(5 * time.Millisecond)
	f := NewFenceOn(clk, NewContext(1), 7, "test")
	defer f.Put()
	if f.Signaled() || f.Err() != nil || f.SignaledAt() != 0 {
		t.Fatal("new fence must be unsignalled with no error")
	}
	if !f.Signal(ErrTimedOut) {
		t.Fatal("first Signal returned false")
	}
	if f.Signal(nil) {
		t.Fatal("second Signal returned true")
	}
	if !errors.Is(f.Err(), ErrTimedOut) {
		t.Fatalf("Err = %v, want ErrTimedOut (first signal wins)", f.Err())
	}
	if f.SignaledAt() != 5*time.Millisecond {
		t.Fatalf("SignaledAt = %v, want 5ms on the manual clock", f.SignaledAt())
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := f.Wait(context.Background()); err != nil {
		t.Fatalf("Wait on signalled fence: %v", err)
	}
}

func TestFenceWaitContext(t *testing.T) {
	checkNoLeaks(t)
	f := NewFence(NewContext(1), 1, "test")
	defer f.Put()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	go f.Signal(ErrCanceled)
	if err := f.Wait(context.Background()); err != nil {
		t.Fatalf("Wait: %v (fence errors are reported by Err, not Wait)", err)
	}
	if !errors.Is(f.Err(), ErrCanceled) {
		t.Fatalf("Err = %v", f.Err())
	}
}

func TestFenceCallbacks(t *testing.T) {
	checkNoLeaks(t)
	f := NewFence(NewContext(1), 1, "test")
	defer f.Put()
	var order []int
	for i := range 3 {
		if !f.AddCallback(func(g *Fence) {
			if g != f {
				t.Error("callback got another fence")
			}
			// Runs outside the fence lock: querying must not deadlock.
			_ = g.Err()
			_ = g.Info()
			order = append(order, i)
		}) {
			t.Fatal("AddCallback on unsignalled fence returned false")
		}
	}
	removed, ok := f.AddRemovableCallback(func(*Fence) { t.Error("removed callback ran") })
	if !ok || !f.RemoveCallback(removed) || f.RemoveCallback(removed) {
		t.Fatal("RemoveCallback must succeed exactly once before signal")
	}
	f.Signal(nil)
	if len(order) != 3 || order[0] != 0 || order[1] != 1 || order[2] != 2 {
		t.Fatalf("callbacks ran %v, want [0 1 2]", order)
	}
	if f.AddCallback(func(*Fence) { t.Error("callback on signalled fence ran") }) {
		t.Fatal("AddCallback on signalled fence returned true")
	}
}

func TestFenceConcurrentSignal(t *testing.T) {
	checkNoLeaks(t)
	f := NewFence(NewContext(1), 1, "test")
	defer f.Put()
	var wg sync.WaitGroup
	wins := make(chan int, 16)
	calls := make(chan struct{}, 16)
	f.AddCallback(func(*Fence) { calls <- struct{}{} })
	for i := range 16 {
		wg.Go(func() {
			if f.Signal(nil) {
				wins <- i
			}
		})
	}
	wg.Wait()
	close(wins)
	close(calls)
	if n := len(wins); n != 1 {
		t.Fatalf("%d Signal calls won, want 1", n)
	}
	if n := len(calls); n != 1 {
		t.Fatalf("callback ran %d times, want 1", n)
	}
}

func TestFenceRefcountRegistry(t *testing.T) {
	base := LiveFences()
	refErrs := RefErrors()
	ctx := NewContext(1)
	f := NewFence(ctx, 3, "reg")
	if LiveFences() != base+1 {
		t.Fatalf("live = %d, want %d", LiveFences(), base+1)
	}
	g := f.Get()
	if g != f || f.Refcount() != 2 {
		t.Fatalf("Get: refcount %d", f.Refcount())
	}
	f.Signal(ErrCanceled)
	var info *FenceInfo
	for _, fi := range Fences() {
		if fi.ID == f.ID() {
			info = &fi
		}
	}
	if info == nil || info.Context != ctx || info.Seqno != 3 || info.Timeline != "reg" ||
		!info.Signaled || info.Refcount != 2 || info.Errno != -int32(syscall.ECANCELED) || info.Error == "" {
		t.Fatalf("Fences() entry = %+v", info)
	}
	f.Put()
	g.Put()
	if LiveFences() != base {
		t.Fatalf("live = %d after last Put, want %d", LiveFences(), base)
	}
	// Misuse is reported, not fatal, and the fence stays queryable.
	f.Put()
	f.Get()
	if RefErrors() != refErrs+2 {
		t.Fatalf("ref errors = %d, want %d", RefErrors(), refErrs+2)
	}
	if f.Refcount() != 0 || LiveFences() != base || !errors.Is(f.Err(), ErrCanceled) {
		t.Fatal("released fence changed state after misuse")
	}
	var nilFence *Fence
	nilFence.Put()
	if nilFence.Get() != nil {
		t.Fatal("nil Get")
	}
}

func TestNewContextDistinct(t *testing.T) {
	a := NewContext(2)
	b := NewContext(1)
	c := NewContext(0)
	if a == 0 || b != a+2 || c != b+1 {
		t.Fatalf("contexts %d %d %d: want consecutive ranges, never 0", a, b, c)
	}
}

func TestErrno(t *testing.T) {
	cases := []struct {
		err  error
		want int32
	}{
		{nil, 0},
		{ErrCanceled, -int32(syscall.ECANCELED)},
		{ErrTimedOut, -int32(syscall.ETIME)},
		{ErrNoEnt, -int32(syscall.ENOENT)},
		{errors.Join(errors.New("ctx"), ErrTimedOut), -int32(syscall.ETIME)},
		{syscall.EBUSY, -int32(syscall.EBUSY)},
		{context.DeadlineExceeded, -int32(syscall.ETIME)},
		{errors.New("other"), -int32(syscall.EIO)},
	}
	for _, c := range cases {
		if got := Errno(c.err); got != c.want {
			t.Errorf("Errno(%v) = %d, want %d", c.err, got, c.want)
		}
		if c.want != 0 && !errors.Is(ErrFromErrno(c.want), syscall.Errno(-c.want)) {
			t.Errorf("ErrFromErrno(%d) = %v does not match errno", c.want, ErrFromErrno(c.want))
		}
	}
	if ErrFromErrno(-int32(syscall.ECANCELED)) != ErrCanceled || ErrFromErrno(0) != nil {
		t.Error("ErrFromErrno must return the sentinels")
	}
	if !errors.Is(ErrTimedOut, syscall.ETIME) {
		t.Error("ErrTimedOut must match syscall.ETIME")
	}
}
