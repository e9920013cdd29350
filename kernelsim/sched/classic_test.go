package sched_test

import (
	"context"
	"errors"
	"testing"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/sched"
)

func TestClassicRoundRobinAndCredits(t *testing.T) {
	leakCheck(t)
	b := newFake()
	s := sched.New(sched.Config{Name: "gfx", Credits: 2}, b)
	defer s.Fini()
	hog, ea, eb := s.NewEntity("hog"), s.NewEntity("a"), s.NewEntity("b")
	// A job as large as the ring holds it while a's and b's jobs are
	// queued, so both entities are ready before the scheduler may pick
	// either. A fence signalled to ready them would race with a pick already
	// scanning (it can pass a before the signal and find b ready after it),
	// a race drm_sched does not order either.
	blocker, err := hog.NewJob(nil, "hog", false)
	if err != nil {
		t.Fatal(err)
	}
	blocker.Credits = 2
	if err := hog.Push(context.Background(), blocker); err != nil {
		t.Fatal(err)
	}
	if got := b.next(t); got != blocker {
		t.Fatalf("dispatched %v, want the blocker %v", got, blocker)
	}
	var jobs []*sched.Job
	var fins []*dma.Fence
	for range 3 {
		j, f := push(t, ea, nil, "a", false)
		jobs, fins = append(jobs, j), append(fins, f)
	}
	for range 3 {
		j, f := push(t, eb, nil, "b", false)
		jobs, fins = append(jobs, j), append(fins, f)
	}
	b.noneStarted(t) // credit limit: the blocker fills the ring
	b.complete(blocker, nil)
	// Round robin between ready entities, FIFO within one: a1 b1 a2 b2 a3 b3.
	want := []int{0, 3, 1, 4, 2, 5}
	got := []*sched.Job{b.next(t), b.next(t)}
	b.noneStarted(t) // credit limit: two on the ring
	for len(got) < 6 {
		done := got[len(got)-2]
		var err error
		if done == jobs[1] {
			err = dma.ErrIO // a hardware error propagates to finished
		}
		b.complete(done, err)
		got = append(got, b.next(t))
	}
	b.complete(got[4], nil)
	b.complete(got[5], nil)
	for i, w := range want {
		if got[i] != jobs[w] {
			t.Fatalf("dispatch %d: got %v, want %v", i, got[i], jobs[w])
		}
	}
	for i, f := range fins {
		waitFence(t, f)
		if i == 1 {
			if !errors.Is(f.Err(), dma.ErrIO) {
				t.Errorf("job %d finished with %v, want the hw error", i, f.Err())
			}
		} else if f.Err() != nil {
			t.Errorf("job %d finished with %v", i, f.Err())
		}
		if n := b.freeCount(jobs[i]); n != 1 {
			t.Errorf("job %d freed %d times", i, n)
		}
	}
	if fins[0].Context() != fins[1].Context() || fins[0].Seqno()+1 != fins[1].Seqno() || fins[0].Context() == fins[3].Context() {
		t.Error("finished fences must be consecutive on a per-entity context")
	}
}

func TestDependencies(t *testing.T) {
	leakCheck(t)
	b := newFake()
	s := sched.New(sched.Config{Name: "gfx", Credits: 4}, b)
	defer s.Fini()
	e := s.NewEntity("e")
	tl := dma.NewSwSyncTimeline("dep")
	defer tl.Release()

	// Two fences of one context: only the later one is kept.
	j1, f1 := push(t, e, []*dma.Fence{tl.CreateFence(1), tl.CreateFence(2), nil}, nil, false)
	if len(j1.Deps) != 1 || j1.Deps[0].Seqno() != 2 {
		t.Fatalf("deps not deduplicated: %d", len(j1.Deps))
	}
	// A job of the same entity waits only for ordering, not for j1.
	j2, f2 := push(t, e, []*dma.Fence{f1.Get()}, nil, false)
	tl.Inc(1)
	b.noneStarted(t) // point 2 not reached
	tl.Inc(1)
	if got := b.next(t); got != j1 {
		t.Fatalf("first dispatched %v, want %v", got, j1)
	}
	if got := b.next(t); got != j2 {
		t.Fatalf("second dispatched %v, want %v (own-entity dependency is skipped)", got, j2)
	}
	b.complete(j1, nil)
	b.complete(j2, nil)
	waitFence(t, f2)

	// An errored dependency does not fail the job (drm_sched semantics).
	other := dma.NewSwSyncTimeline("doomed")
	j3, f3 := push(t, e, []*dma.Fence{other.CreateFence(5)}, nil, false)
	b.noneStarted(t)
	other.Release() // signals ENOENT
	if got := b.next(t); got != j3 {
		t.Fatalf("dispatched %v, want %v", got, j3)
	}
	b.complete(j3, nil)
	waitFence(t, f3)
	if f3.Err() != nil {
		t.Fatalf("finished = %v: dependency errors are not propagated", f3.Err())
	}
}

func TestPushErrors(t *testing.T) {
	leakCheck(t)
	b := newFake()
	s := sched.New(sched.Config{Name: "gfx"}, b)
	e1, e2 := s.NewEntity("1"), s.NewEntity("2")
	j, _ := e1.NewJob(nil, nil, false)
	if err := e2.Push(context.Background(), j); !errors.Is(err, dma.ErrInvalid) {
		t.Fatalf("push to another entity: %v", err)
	}
	j.Credits = 5
	fin := j.Finished().Get()
	if err := e1.Push(context.Background(), j); !errors.Is(err, dma.ErrInvalid) {
		t.Fatalf("too many credits: %v", err)
	}
	if !errors.Is(fin.Err(), dma.ErrCanceled) || b.freeCount(j) != 1 {
		t.Fatalf("refused push must consume the job: %v, frees %d", fin.Err(), b.freeCount(j))
	}
	fin.Put()
	if err := e1.Push(context.Background(), j); !errors.Is(err, dma.ErrInvalid) {
		t.Fatalf("double push: %v", err)
	}
	e2.Destroy()
	if _, err := e2.NewJob(nil, nil, false); !errors.Is(err, sched.ErrDestroyed) {
		t.Fatalf("NewJob on destroyed entity: %v", err)
	}
	s.Fini()
	late := s.NewEntity("late")
	if _, err := late.NewJob(nil, nil, false); !errors.Is(err, sched.ErrDestroyed) {
		t.Fatalf("entity of a finalised scheduler: %v", err)
	}
	if b.freeCount(j) != 1 {
		t.Fatal("job freed more than once")
	}
}
