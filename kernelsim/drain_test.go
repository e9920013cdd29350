package kernelsim_test

import (
	"bytes"
	"testing"
	"time"

	"drmcr/kernelsim/uapi"
)

// TestPauseDoesNotWaitForANeighbour: on the amdgpu device's shared ring, a
// busy neighbour's jobs (hours of GPU time each, ahead on the ring) do not
// hold up the pause of another process's file: they are preempted and
// requeued, the paused file's own job runs and the pause returns without
// the clock moving past that job; the neighbour's work then completes
// exactly once, as if never interrupted.
func TestPauseDoesNotWaitForANeighbour(t *testing.T) {
	env, clk := manualEnv(t, slow(amdgpuDev()))
	c := ctlClient(t, env)
	busy, d := env.Open(t, 128), env.Open(t, 128)
	const big = 4 << 20 // 4 s of clock per fill
	nb := must(busy.BOCreate(big, vram, 0, 0))
	bctx := must(busy.CtxCreate(0))
	var bouts []uint32
	for i := range 6 { // more than the ring's 4 credits
		s := must(busy.SyncobjCreate(false))
		bouts = append(bouts, s)
		submit(t, busy, &uapi.SubmitRequest{CtxId: bctx, Bos: []*uapi.SubmitBo{bo(nb, true)},
			Commands: []*uapi.Command{fill(0, 0, big, 0x100+uint32(i)), fill(0, 4096, 4096, uint32(i))}, OutSyncobjs: []uint32{s}})
	}
	if !clk.WaitPending(1, 20*time.Second) {
		t.Fatal("the neighbour's first job did not start")
	}
	// Our job: 4 KiB, 4 ms of clock, queued behind the neighbour's.
	h := must(d.BOCreate(4096, vram, 0, 0))
	ctx := must(d.CtxCreate(0))
	s := must(d.SyncobjCreate(false))
	submit(t, d, &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
		Commands: []*uapi.Command{fill(0, 0, 4096, 0x77)}, OutSyncobjs: []uint32{s}})
	id := fileID(t, c, d)
	paused := make(chan error, 1)
	go func() { paused <- c.Pause([]uint64{id}, time.Hour) }()
	// Advance the clock 1 ms at a time until the pause returns; it must
	// not take more than our job's own time (plus scheduling slack of a
	// few steps).
	var advanced time.Duration
	for done := false; !done; {
		select {
		case err := <-paused:
			ok(t, err)
			done = true
		case <-time.After(20 * time.Millisecond):
			if advanced >= time.Second {
				t.Fatalf("the pause waited %v of GPU time: it waits for the neighbour", advanced)
			}
			clk.Advance(time.Millisecond)
			advanced += time.Millisecond
		}
	}
	if st := query(t, d, s); !st.signaled || st.errno != 0 {
		t.Fatalf("our job after the pause: %+v", st)
	}
	if got := readBO(t, d, h, 4096); !bytes.Equal(got, pattern(4096, 0x77)) {
		t.Fatal("our job's result is wrong")
	}
	if st := query(t, busy, bouts[0]); st.signaled {
		t.Fatal("the neighbour's first job completed within the pause's clock time: the test does not test preemption")
	}
	// The neighbour carries on and finishes every job exactly once.
	ok(t, c.Resume([]uint64{id}))
	deadline := time.Now().Add(30 * time.Second)
	for i, so := range bouts {
		// Advance the clock while a job runs on it; a job that just
		// finished may signal a moment after its timer fired.
		for !query(t, busy, so).signaled {
			if time.Now().After(deadline) {
				t.Fatalf("neighbour job %d does not finish: %+v", i, env.Kernel.Debug().Jobs)
			}
			if clk.WaitPending(1, 10*time.Millisecond) {
				clk.Advance(time.Second)
			}
		}
		if st := query(t, busy, so); st.errno != 0 {
			t.Fatalf("neighbour job %d: %+v", i, st)
		}
	}
	want := pattern(big, 0x105)
	copy(want[4096:], pattern(4096, 5))
	if got := readBO(t, busy, nb, big); !bytes.Equal(got, want) {
		t.Fatal("the neighbour's BO differs from an uninterrupted run")
	}
}
