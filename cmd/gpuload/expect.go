package main

import (
	"context"
	"fmt"
	"sort"

	"drmcr/kernelsim/gpu"
)

// cpuExec runs jobs with package gpu's own engine on local buffers: the
// very code the simulated GPU executes, with no clock cost (bandwidth and
// iteration time 0), no scheduler and no daemon.
type cpuExec struct {
	eng  *gpu.Engine
	bufs map[bufID]*memBuf
}

func newCPUExec() *cpuExec {
	return &cpuExec{eng: gpu.NewEngine(gpu.EngineConfig{}), bufs: make(map[bufID]*memBuf)}
}

func (e *cpuExec) alloc(id bufID, size uint64) { e.bufs[id] = &memBuf{data: make([]byte, size)} }

func (e *cpuExec) write(id bufID, off uint64, data []byte) error {
	return e.bufs[id].WriteAt(data, off)
}

func (e *cpuExec) bytes(id bufID) []byte { return append([]byte(nil), e.bufs[id].data...) }

func (e *cpuExec) run(j *job) error {
	bufs := make([]gpu.Buffer, len(j.bufs))
	for i, b := range j.bufs {
		m, ok := e.bufs[b.id]
		if !ok {
			return fmt.Errorf("job %s: buffer %d not allocated", j.name, b.id)
		}
		bufs[i] = m
	}
	var p gpu.Progress
	if err := e.eng.Execute(context.Background(), j.cmds, bufs, &p, nil); err != nil {
		return fmt.Errorf("job %s: %w", j.name, err)
	}
	return nil
}

// memBuf is a gpu.Buffer in local memory (single-threaded use).
type memBuf struct{ data []byte }

func (m *memBuf) Size() uint64 { return uint64(len(m.data)) }

func (m *memBuf) ReadAt(p []byte, off uint64) error {
	if off > uint64(len(m.data)) || uint64(len(p)) > uint64(len(m.data))-off {
		return fmt.Errorf("read [%d,+%d) out of %d bytes", off, len(p), len(m.data))
	}
	copy(p, m.data[off:])
	return nil
}

func (m *memBuf) WriteAt(p []byte, off uint64) error {
	if off > uint64(len(m.data)) || uint64(len(p)) > uint64(len(m.data))-off {
		return fmt.Errorf("write [%d,+%d) out of %d bytes", off, len(p), len(m.data))
	}
	copy(m.data[off:], p)
	return nil
}

// scenarioNames lists the scenarios in a stable order.
func scenarioNames() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return scenarios[names[i]].order < scenarios[names[j]].order })
	return names
}
