package sched_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/sched"
)

type memBuf struct {
	mu   sync.Mutex
	data []byte
}

func newBuf(n int) *memBuf     { return &memBuf{data: make([]byte, n)} }
func (m *memBuf) Size() uint64 { return uint64(len(m.data)) }
func (m *memBuf) u64(off int) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return binary.LittleEndian.Uint64(m.data[off:])
}
func (m *memBuf) ReadAt(p []byte, off uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off > m.Size() || uint64(len(p)) > m.Size()-off {
		return fmt.Errorf("out of range")
	}
	copy(p, m.data[off:])
	return nil
}
func (m *memBuf) WriteAt(p []byte, off uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off > m.Size() || uint64(len(p)) > m.Size()-off {
		return fmt.Errorf("out of range")
	}
	copy(m.data[off:], p)
	return nil
}

func fill(buf gpu.Buffer, n uint64, v uint64) *gpu.JobPayload {
	return &gpu.JobPayload{Cmds: []gpu.Command{{Op: gpu.OpFill, Dst: 0, Src: -1, Len: n, Value: v}}, Bufs: []gpu.Buffer{buf}}
}

// Firmware mode: one scheduler and queue per entity, so a short job of B
// overtakes a long job of A; a classic ring keeps them in order.
func TestFirmwareOutOfOrderVsClassicInOrder(t *testing.T) {
	leakCheck(t)
	for _, mode := range []sched.Mode{sched.Firmware, sched.Classic} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := ktime.NewManual()
			eng := gpu.NewEngine(gpu.EngineConfig{Clock: clk, Bandwidth: 1000}) // 1 byte per ms
			var ea, eb *sched.Entity
			if mode == sched.Firmware {
				sa := sched.New(sched.Config{Name: "fw-a", Credits: 2, Clock: clk, Mode: mode}, gpu.NewBackend(eng, "fw-a"))
				sb := sched.New(sched.Config{Name: "fw-b", Credits: 2, Clock: clk, Mode: mode}, gpu.NewBackend(eng, "fw-b"))
				ea, eb = sa.NewEntity("a"), sb.NewEntity("b")
				if second := sa.NewEntity("x"); second.Push(context.Background(), nil) == nil {
					t.Fatal("nil push accepted")
				} else if _, err := second.NewJob(nil, nil, false); !errors.Is(err, sched.ErrDestroyed) {
					t.Fatalf("second entity on a firmware scheduler: %v", err)
				}
				defer ea.Destroy()
				defer eb.Destroy()
			} else {
				s := sched.New(sched.Config{Name: "ring", Credits: 2, Clock: clk}, gpu.NewBackend(eng, "ring"))
				defer s.Fini()
				ea, eb = s.NewEntity("a"), s.NewEntity("b")
			}
			bufA, bufB := newBuf(300), newBuf(100)
			_, fa := push(t, ea, nil, fill(bufA, 300, 1), false) // 300ms
			_, fb := push(t, eb, nil, fill(bufB, 100, 2), false) // 100ms
			clk.WaitPending(1, 10*time.Second)
			if mode == sched.Firmware {
				clk.WaitPending(2, 10*time.Second) // both queues busy
			}
			clk.Advance(100 * time.Millisecond)
			if mode == sched.Firmware {
				waitFence(t, fb)
				if fa.Signaled() {
					t.Fatal("long job of A finished before its time")
				}
				clk.Advance(200 * time.Millisecond)
				waitFence(t, fa)
				if !(fb.SignaledAt() == 100*time.Millisecond && fa.SignaledAt() == 300*time.Millisecond) {
					t.Fatalf("firmware: b at %v, a at %v; want 100ms, 300ms", fb.SignaledAt(), fa.SignaledAt())
				}
			} else {
				if fa.Signaled() || fb.Signaled() {
					t.Fatal("classic ring finished something after 100ms")
				}
				clk.Advance(200 * time.Millisecond)
				waitFence(t, fa)
				clk.WaitPending(1, 10*time.Second)
				if fb.Signaled() {
					t.Fatal("b finished before a on an in-order ring")
				}
				clk.Advance(100 * time.Millisecond)
				waitFence(t, fb)
				if !(fa.SignaledAt() == 300*time.Millisecond && fb.SignaledAt() == 400*time.Millisecond) {
					t.Fatalf("classic: a at %v, b at %v; want 300ms, 400ms", fa.SignaledAt(), fb.SignaledAt())
				}
			}
			if bufA.u64(288) != 0x0000000100000001 || bufB.u64(88) != 0x0000000200000002 {
				t.Fatal("jobs did not write their buffers")
			}
		})
	}
}

func TestTimeoutGuiltyRecovery(t *testing.T) {
	leakCheck(t)
	clk := ktime.NewManual()
	eng := gpu.NewEngine(gpu.EngineConfig{Clock: clk})
	s := sched.New(sched.Config{Name: "ring", Credits: 4, Clock: clk, Timeout: 100 * time.Millisecond}, gpu.NewBackend(eng, "ring"))
	defer s.Fini()
	bad, good := s.NewEntity("bad"), s.NewEntity("good")
	buf, badBuf := newBuf(16), newBuf(16)
	hang := &gpu.JobPayload{Cmds: []gpu.Command{{Op: gpu.OpHang}}}
	_, fh := push(t, bad, nil, hang, false)
	// On the ring behind the hang: killed with it when the entity turns guilty.
	_, fq := push(t, bad, []*dma.Fence{fh.Get()}, fill(badBuf, 8, 3), false)
	_, fg := push(t, good, nil, fill(buf, 8, 7), false)
	if !clk.WaitPending(1, 10*time.Second) { // the TDR timer
		t.Fatal("no timeout armed")
	}
	clk.Advance(99 * time.Millisecond)
	if fh.Signaled() || fg.Signaled() {
		t.Fatal("nothing may finish while the hang holds the ring")
	}
	clk.Advance(time.Millisecond)
	waitFence(t, fh)
	if !errors.Is(fh.Err(), dma.ErrTimedOut) || dma.Errno(fh.Err()) != dma.Errno(dma.ErrTimedOut) {
		t.Fatalf("hung job finished with %v, want ErrTimedOut", fh.Err())
	}
	if !bad.Guilty() || good.Guilty() {
		t.Fatal("only the hung entity is guilty")
	}
	waitFence(t, fg) // the ring recovered
	if fg.Err() != nil || buf.u64(0) != 0x0000000700000007 {
		t.Fatalf("good job: %v, buf %#x", fg.Err(), buf.u64(0))
	}
	waitFence(t, fq)
	if !errors.Is(fq.Err(), dma.ErrCanceled) || badBuf.u64(0) != 0 {
		t.Fatalf("job of the guilty entity: %v (buf %#x), want ErrCanceled and no effect", fq.Err(), badBuf.u64(0))
	}
	// A job pushed after the hang but before the timeout, still queued
	// when the entity turned guilty, never reaches the hardware.
	j, _ := bad.NewJob(nil, nil, false)
	if err := bad.Push(context.Background(), j); !errors.Is(err, sched.ErrGuilty) {
		t.Fatalf("push on guilty entity: %v", err)
	}
}

func computeJob(src, dst *memBuf, iters uint64) *gpu.JobPayload {
	return &gpu.JobPayload{
		Cmds: []gpu.Command{{Op: gpu.OpCompute, Src: 0, Len: src.Size(), Dst: 1, DstOff: 0, Iterations: iters}},
		Bufs: []gpu.Buffer{src, dst},
	}
}

func TestPauseDrainsPreemptsAndResumes(t *testing.T) {
	leakCheck(t)
	clk := ktime.NewManual()
	eng := gpu.NewEngine(gpu.EngineConfig{Clock: clk, Bandwidth: 1000, IterTime: time.Millisecond})
	s := sched.New(sched.Config{Name: "fw", Credits: 2, Clock: clk, Mode: sched.Firmware}, gpu.NewBackend(eng, "fw"))
	e := s.NewEntity("ctx")
	defer e.Destroy()

	src := newBuf(40)
	for i := range src.data {
		src.data[i] = byte(i * 7)
	}
	// Reference: the same compute, uninterrupted, on an instant engine.
	refDst := newBuf(8)
	ref := computeJob(src, refDst, 1000)
	if err := gpu.NewEngine(gpu.EngineConfig{}).Execute(context.Background(), ref.Cmds, ref.Bufs, &ref.Progress, nil); err != nil {
		t.Fatal(err)
	}

	dst := newBuf(8)
	payload := computeJob(src, dst, 1000)
	lr, flr := push(t, e, nil, payload, true)
	clk.WaitPending(1, 10*time.Second)
	clk.Advance(250 * time.Millisecond)

	rep, err := e.Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Preempted) != 1 || rep.Preempted[0].ID != lr.ID() || len(rep.Queued) != 1 {
		t.Fatalf("pause report %+v", rep)
	}
	if flr.Signaled() {
		t.Fatal("a preempted job's finished fence must stay unsignalled")
	}
	if q := e.Queued(); len(q) != 1 || q[0] != lr {
		t.Fatalf("queued %v", q)
	}
	if got := payload.Progress; got.Cmd != 0 || got.Iter != 250 {
		t.Fatalf("progress %+v, want iteration 250", got)
	}

	// Push blocks while paused.
	regular, err := e.NewJob(nil, fill(newBuf(100), 100, 5), false)
	if err != nil {
		t.Fatal(err)
	}
	fr := regular.Finished().Get()
	defer fr.Put()
	pushed := make(chan error, 1)
	go func() { pushed <- e.Push(context.Background(), regular) }()
	select {
	case err := <-pushed:
		t.Fatalf("push returned %v while paused", err)
	default:
	}
	if clk.Pending() != 0 {
		t.Fatal("paused entity still running")
	}

	e.Resume()
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	clk.WaitPending(1, 10*time.Second)
	clk.Advance(750 * time.Millisecond) // the 750 remaining iterations
	waitFence(t, flr)
	if flr.Err() != nil || dst.u64(0) != refDst.u64(0) {
		t.Fatalf("resumed compute: err %v result %#x, want %#x", flr.Err(), dst.u64(0), refDst.u64(0))
	}

	// Pause drains a regular job in flight rather than preempting it.
	clk.WaitPending(1, 10*time.Second)
	paused := make(chan error, 1)
	go func() {
		_, err := e.Pause(context.Background())
		paused <- err
	}()
	clk.Advance(50 * time.Millisecond)
	select {
	case err := <-paused:
		t.Fatalf("pause returned (%v) with a regular job half done", err)
	default:
	}
	clk.Advance(50 * time.Millisecond)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	if !fr.Signaled() || fr.Err() != nil {
		t.Fatalf("regular job must be complete when Pause returns: %v", fr.Err())
	}
	e.Resume()
}

func TestPauseTimeoutSaysWhatItWaitsOn(t *testing.T) {
	leakCheck(t)
	clk := ktime.NewManual()
	eng := gpu.NewEngine(gpu.EngineConfig{Clock: clk})
	s := sched.New(sched.Config{Name: "ring", Credits: 1, Clock: clk}, gpu.NewBackend(eng, "ring"))
	defer s.Fini()
	e := s.NewEntity("client")
	tl := dma.NewSwSyncTimeline("userspace")
	defer tl.Release()
	dep := tl.CreateFence(1)
	depID := dep.ID()
	j, fj := push(t, e, []*dma.Fence{dep}, fill(newBuf(8), 8, 1), false)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := e.Pause(ctx)
	var pe *sched.PauseError
	if !errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pause = %v, want a *PauseError wrapping the deadline", err)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("job %d", j.ID()), "dependency", fmt.Sprintf("fence %d", depID), "sw_sync:userspace"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if !e.Paused() {
		t.Fatal("entity must stay paused after a pause timeout")
	}
	// A hung job on the hardware is named as such.
	e.Resume()
	tl.Inc(1)
	waitFence(t, fj)
	other := s.NewEntity("hog")
	hog, _ := push(t, other, nil, &gpu.JobPayload{Cmds: []gpu.Command{{Op: gpu.OpHang}}}, true)
	waitFence(t, hog.Scheduled()) // on the hardware
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_, err = other.Pause(ctx2)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("job %d", hog.ID())) ||
		!strings.Contains(err.Error(), "running on the hardware") || !strings.Contains(err.Error(), "not preemptible") {
		t.Fatalf("Pause = %v, want it to name the non-preemptible job on the hardware", err)
	}
	other.Destroy()
}
