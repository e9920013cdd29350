package ktime

import (
	"context"
	"testing"
	"time"
)

func fired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestManualFiresInOrder(t *testing.T) {
	m := NewManual()
	a, _ := m.After(3 * time.Millisecond)
	b, _ := m.After(1 * time.Millisecond)
	c, stopC := m.After(2 * time.Millisecond)
	if m.Pending() != 3 {
		t.Fatalf("pending = %d, want 3", m.Pending())
	}
	if !stopC() {
		t.Fatal("stop before firing returned false")
	}
	if stopC() {
		t.Fatal("second stop returned true")
	}
	m.Advance(time.Millisecond)
	if !fired(b) || fired(a) || fired(c) {
		t.Fatalf("after 1ms: a=%v b=%v c=%v", fired(a), fired(b), fired(c))
	}
	m.Advance(5 * time.Millisecond)
	if !fired(a) || fired(c) {
		t.Fatalf("after 6ms: a=%v c=%v", fired(a), fired(c))
	}
	if got := m.Now(); got != 6*time.Millisecond {
		t.Fatalf("now = %v, want 6ms", got)
	}
	if m.Pending() != 0 {
		t.Fatalf("pending = %d, want 0", m.Pending())
	}
}

func TestManualZeroDurationFiresNow(t *testing.T) {
	m := NewManual()
	ch, stop := m.After(0)
	if !fired(ch) || stop() {
		t.Fatal("zero-duration timer must be already fired")
	}
}

func TestManualWaitPending(t *testing.T) {
	m := NewManual()
	done := make(chan error, 1)
	go func() { done <- Sleep(context.Background(), m, time.Second) }()
	if !m.WaitPending(1, 10*time.Second) {
		t.Fatal("sleeper never parked on the clock")
	}
	m.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	if m.WaitPending(1, time.Millisecond) {
		t.Fatal("no timer should be pending")
	}
}

func TestSleepCanceled(t *testing.T) {
	m := NewManual()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, m, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep = %v, want context.Canceled", err)
	}
	if m.Pending() != 0 {
		t.Fatal("canceled sleep left a timer behind")
	}
}

func TestRealClockMonotonic(t *testing.T) {
	c := Real()
	a := c.Now()
	ch, _ := c.After(time.Millisecond)
	<-ch
	if b := c.Now(); b < a+time.Millisecond {
		t.Fatalf("real clock went from %v to %v across a 1ms timer", a, b)
	}
	_, stop := c.After(time.Hour)
	if !stop() {
		t.Fatal("stopping an unfired real timer returned false")
	}
}
