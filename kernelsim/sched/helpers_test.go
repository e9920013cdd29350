package sched_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/sched"
)

// fakeBackend is a hand-driven hardware: RunJob records the job and hands
// out a fence that the test signals with complete.
type fakeBackend struct {
	mu       sync.Mutex
	hw       map[*sched.Job]*dma.Fence
	order    []*sched.Job
	frees    map[*sched.Job]int
	timedOut []*sched.Job
	started  chan *sched.Job
}

func newFake() *fakeBackend {
	return &fakeBackend{
		hw:      make(map[*sched.Job]*dma.Fence),
		frees:   make(map[*sched.Job]int),
		started: make(chan *sched.Job, 1024),
	}
}

func (b *fakeBackend) RunJob(j *sched.Job) (*dma.Fence, error) {
	f := dma.NewFence(dma.NewContext(1), j.Seqno(), "fake")
	b.mu.Lock()
	b.hw[j] = f.Get()
	b.order = append(b.order, j)
	b.mu.Unlock()
	b.started <- j
	return f, nil
}

func (b *fakeBackend) complete(j *sched.Job, err error) {
	b.mu.Lock()
	f := b.hw[j]
	delete(b.hw, j)
	b.mu.Unlock()
	if f != nil {
		f.Signal(err)
		f.Put()
	}
}

func (b *fakeBackend) TimedOutJob(j *sched.Job) {
	b.mu.Lock()
	b.timedOut = append(b.timedOut, j)
	b.mu.Unlock()
	b.complete(j, dma.ErrCanceled)
}

func (b *fakeBackend) Preempt(j *sched.Job) bool {
	if !j.LongRunning {
		return false
	}
	b.complete(j, sched.ErrPreempted)
	return true
}

func (b *fakeBackend) FreeJob(j *sched.Job) {
	b.mu.Lock()
	b.frees[j]++
	b.mu.Unlock()
}

func (b *fakeBackend) freeCount(j *sched.Job) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.frees[j]
}

// next waits for the next RunJob.
func (b *fakeBackend) next(t *testing.T) *sched.Job {
	t.Helper()
	select {
	case j := <-b.started:
		return j
	case <-time.After(10 * time.Second):
		t.Fatal("no job reached the hardware")
		return nil
	}
}

// noneStarted asserts that no job has reached the hardware so far.
func (b *fakeBackend) noneStarted(t *testing.T) {
	t.Helper()
	select {
	case j := <-b.started:
		t.Fatalf("%v reached the hardware too early", j)
	default:
	}
}

// push creates a job, keeps a reference on its finished fence and pushes.
func push(t *testing.T, e *sched.Entity, deps []*dma.Fence, payload any, lr bool) (*sched.Job, *dma.Fence) {
	t.Helper()
	j, err := e.NewJob(deps, payload, lr)
	if err != nil {
		t.Fatal(err)
	}
	fin := j.Finished().Get()
	t.Cleanup(fin.Put)
	if err := e.Push(context.Background(), j); err != nil {
		t.Fatalf("push: %v", err)
	}
	return j, fin
}

func waitFence(t *testing.T, f *dma.Fence) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.Wait(ctx); err != nil {
		t.Fatalf("%v never signalled", f)
	}
}

// leakCheck records job, fence and goroutine baselines and checks them at
// the end of the test (after the test's own cleanups ran).
func leakCheck(t *testing.T) {
	t.Helper()
	jobs, fences, refErrs, frees := sched.LiveJobs(), dma.LiveFences(), dma.RefErrors(), sched.FreeErrors()
	gor := runtime.NumGoroutine()
	t.Cleanup(func() {
		if got := sched.LiveJobs(); got != jobs {
			t.Errorf("live jobs %d, want baseline %d", got, jobs)
		}
		if got := sched.FreeErrors(); got != frees {
			t.Errorf("jobs freed twice: %d", got-frees)
		}
		if got := dma.RefErrors(); got != refErrs {
			t.Errorf("fence refcount errors: %d", got-refErrs)
		}
		if got := dma.LiveFences(); got != fences {
			t.Errorf("live fences %d, want baseline %d", got, fences)
			for _, fi := range dma.Fences() {
				t.Logf("  %+v", fi)
			}
		}
		// Goroutines exit asynchronously after Fini returns its waits;
		// give them (real) time, this is not a timing assertion.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > gor && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := runtime.NumGoroutine(); got > gor {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines %d, want baseline %d\n%s", got, gor, buf[:runtime.Stack(buf, true)])
		}
	})
}
