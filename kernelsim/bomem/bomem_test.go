package bomem

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestAllocIsZeroedAndReusedZeroed(t *testing.T) {
	for _, size := range []uint64{4096, 12 << 10, 512 << 10, 3 << 20} {
		b, err := Alloc(size)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(b)) != size || !bytes.Equal(b, make([]byte, size)) {
			t.Fatalf("Alloc(%d): %d bytes, not zeroed", size, len(b))
		}
		for i := range b {
			b[i] = 0xa5
		}
		if err := Free(b); err != nil {
			t.Fatal(err)
		}
		again, err := Alloc(size)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, make([]byte, size)) {
			t.Fatalf("Alloc(%d) after a Free: memory not zeroed", size)
		}
		if err := Free(again); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFreeRefusesForeignMemory(t *testing.T) {
	if err := Free(make([]byte, 4096)); err == nil || !strings.Contains(err.Error(), "Alloc did not return") {
		t.Fatalf("Free of Go memory: %v", err)
	}
}

func rssBytes(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * uint64(os.Getpagesize())
}

// TestFreeGivesMemoryBack: freed BO memory leaves the process's resident
// set at once, small BOs (slab slots) and large ones alike.
func TestFreeGivesMemoryBack(t *testing.T) {
	const total = 96 << 20
	for _, size := range []uint64{64 << 10, 8 << 20} {
		before := rssBytes(t)
		var bufs [][]byte
		for range total / size {
			b, err := Alloc(size)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			bufs = append(bufs, b)
		}
		touched := rssBytes(t)
		if touched < before+total*9/10 {
			t.Fatalf("size %d: resident set grew by %d bytes for %d written", size, touched-before, total)
		}
		for _, b := range bufs {
			if err := Free(b); err != nil {
				t.Fatal(err)
			}
		}
		if after := rssBytes(t); after > touched-total*9/10 {
			t.Fatalf("size %d: resident set %d after freeing %d bytes, %d before", size, after, total, touched)
		}
	}
}
