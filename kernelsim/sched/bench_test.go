package sched_test

import (
	"context"
	"testing"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/sched"
)

// BenchmarkSubmit compares jobs/s through the scheduler (NewJob, Push,
// dispatch, retire, free) with running the same work on the engine
// directly.
func BenchmarkSubmit(b *testing.B) {
	buf := newBuf(64)
	cmds := []gpu.Command{{Op: gpu.OpAddCounter, Dst: 0, Src: -1}}
	eng := gpu.NewEngine(gpu.EngineConfig{})

	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			var p gpu.Progress
			if err := eng.Execute(context.Background(), cmds, []gpu.Buffer{buf}, &p, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
	b.Run("scheduler", func(b *testing.B) {
		s := sched.New(sched.Config{Name: "bench", Credits: 16}, gpu.NewBackend(eng, "bench"))
		defer s.Fini()
		e := s.NewEntity("bench")
		var last *dma.Fence
		for b.Loop() {
			j, err := e.NewJob(nil, &gpu.JobPayload{Cmds: cmds, Bufs: []gpu.Buffer{buf}}, false)
			if err != nil {
				b.Fatal(err)
			}
			last.Put()
			last = j.Finished().Get()
			if err := e.Push(context.Background(), j); err != nil {
				b.Fatal(err)
			}
		}
		if last != nil {
			last.Wait(context.Background())
			last.Put()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
}
