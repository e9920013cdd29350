package gpu

import (
	"fmt"
	"sync"
)

// memBuffer is a test Buffer.
type memBuffer struct {
	mu   sync.Mutex
	data []byte
}

func newMem(n int) *memBuffer { return &memBuffer{data: make([]byte, n)} }

func (m *memBuffer) Size() uint64 { return uint64(len(m.data)) }

func (m *memBuffer) ReadAt(p []byte, off uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off > uint64(len(m.data)) || uint64(len(p)) > uint64(len(m.data))-off {
		return fmt.Errorf("read [%d,+%d) out of %d", off, len(p), len(m.data))
	}
	copy(p, m.data[off:])
	return nil
}

func (m *memBuffer) WriteAt(p []byte, off uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off > uint64(len(m.data)) || uint64(len(p)) > uint64(len(m.data))-off {
		return fmt.Errorf("write [%d,+%d) out of %d", off, len(p), len(m.data))
	}
	copy(m.data[off:], p)
	return nil
}

func (m *memBuffer) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}
