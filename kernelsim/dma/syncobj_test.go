package dma

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSyncobjWaitForSubmit(t *testing.T) {
	checkNoLeaks(t)
	s := NewSyncobj()
	defer s.Release()
	if s.Fence() != nil {
		t.Fatal("new syncobj has a fence")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	if _, err := s.WaitForSubmit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSubmit on empty syncobj = %v", err)
	}
	cancel()
	got := make(chan *Fence)
	go func() {
		f, err := s.WaitForSubmit(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- f
	}()
	f := NewFence(NewContext(1), 1, "job")
	s.Replace(f)
	w := <-got
	if w != f {
		t.Fatal("WaitForSubmit returned another fence")
	}
	w.Put()
	f.Signal(ErrCanceled)
	if err := s.Wait(context.Background()); !errors.Is(err, ErrCanceled) {
		t.Fatalf("Wait = %v, want the fence error", err)
	}
	s.Reset()
	if s.Fence() != nil || f.Refcount() != 1 {
		t.Fatalf("Reset must drop the fence (refs %d)", f.Refcount())
	}
	f.Put()
	s.Signal()
	st := s.Fence()
	if st == nil || !st.Signaled() || st.Err() != nil {
		t.Fatal("Signal must attach a signalled stub")
	}
	st.Put()
}

func TestSyncobjReleaseWakesWaiters(t *testing.T) {
	checkNoLeaks(t)
	s := NewSyncobj()
	errc := make(chan error)
	go func() {
		_, err := s.WaitForSubmit(context.Background())
		errc <- err
	}()
	s.Release()
	if err := <-errc; !errors.Is(err, ErrSyncobjReleased) {
		t.Fatalf("waiter got %v", err)
	}
	f := NewFence(NewContext(1), 1, "late")
	s.Replace(f)
	if f.Refcount() != 1 {
		t.Fatal("Replace after Release must not keep a reference")
	}
	f.Put()
	s.Release()
}
