package kernelsim_test

import (
	"bytes"
	"math"
	"syscall"
	"testing"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

func TestGemCreateValidation(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	amd := env.Open(t, 128)
	xe := env.Open(t, 129)
	for _, c := range []struct {
		name             string
		d                *libdrm.Device
		size             uint64
		domain           uapi.Domain
		flags, alignment uint64
	}{
		{"size 0", amd, 0, vram, 0, 0},
		{"size not a page multiple", amd, 4097, vram, 0, 0},
		{"size below a page", amd, 100, gtt, 0, 0},
		{"size too large", amd, 1 << 40, vram, 0, 0},
		{"size wrapping", amd, math.MaxUint64 &^ 4095, vram, 0, 0},
		{"domain none", amd, 4096, uapi.Domain_DOMAIN_NONE, 0, 0},
		{"unknown domain", amd, 4096, 9, 0, 0},
		{"amdgpu unknown flag", amd, 4096, vram, 0x100, 0},
		{"xe unknown flag", xe, 4096, vram, 0x10, 0},
		{"alignment not a power of two", amd, 4096, vram, 0, 3 << 12},
		{"alignment too large", amd, 4096, vram, 0, 1 << 31},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.d.BOCreate(c.size, c.domain, c.flags, c.alignment)
			wantErrno(t, err, syscall.EINVAL)
		})
	}
	// Nothing was allocated by the failures.
	st := env.Kernel.Debug()
	if len(st.BOs) != 0 || st.Devices[0].VRAMUsed != 0 || st.Devices[0].GTTUsed != 0 {
		t.Fatalf("failed creates left BOs or accounting: %+v", st)
	}

	for _, c := range []struct {
		d                     *libdrm.Device
		size                  uint64
		domain                uapi.Domain
		flags, align, wantAln uint64
	}{
		{amd, 4096, vram, 0, 0, 4096},
		{amd, 8192, gtt, 0xff, 512, 4096},
		{amd, 1 << 20, vram, 0x3, 1 << 16, 1 << 16},
		{xe, 4096, gtt, 0x0f, 1 << 30, 1 << 30},
	} {
		h := must(c.d.BOCreate(c.size, c.domain, c.flags, c.align))
		info := must(c.d.BOInfo(h))
		if info.Size != c.size || info.Domain != c.domain || info.Flags != c.flags || info.Alignment != c.wantAln || info.BoId == 0 {
			t.Errorf("create(%d, %v, %#x, %d): info %v", c.size, c.domain, c.flags, c.align, info)
		}
	}
}

func TestGemHandlesLowestFreePerFile(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	a := env.Open(t, 128)
	b := env.Open(t, 128)
	x := env.Open(t, 129)
	for want := uint32(1); want <= 4; want++ {
		if h := must(a.BOCreate(4096, vram, 0, 0)); h != want {
			t.Fatalf("handle %d, want %d", h, want)
		}
	}
	// Other files have their own tables, starting at 1.
	if h := must(b.BOCreate(4096, vram, 0, 0)); h != 1 {
		t.Fatalf("second file's first handle %d", h)
	}
	if h := must(x.BOCreate(4096, vram, 0, 0)); h != 1 {
		t.Fatalf("xe file's first handle %d", h)
	}
	ok(t, a.BOClose(3))
	ok(t, a.BOClose(2))
	for _, want := range []uint32{2, 3, 5} {
		if h := must(a.BOCreate(4096, gtt, 0, 0)); h != want {
			t.Fatalf("after closing 2 and 3: handle %d, want %d", h, want)
		}
	}
	// Closing a handle of file a does not touch file b's handle 1.
	ok(t, a.BOClose(1))
	must(b.BOInfo(1))
	_, err := a.BOInfo(1)
	wantErrno(t, err, syscall.ENOENT)
	wantErrno(t, a.BOClose(1), syscall.EINVAL)
	wantErrno(t, a.BOClose(0), syscall.EINVAL)
	wantErrno(t, a.BOClose(1000), syscall.EINVAL)
	_, err = a.BOInfo(0)
	wantErrno(t, err, syscall.ENOENT)
	// Distinct BOs behind the handles.
	ids := map[uint64]bool{}
	for _, h := range []uint32{2, 3, 4, 5} {
		ids[must(a.BOInfo(h)).BoId] = true
	}
	if len(ids) != 4 {
		t.Fatalf("handles share BOs: %v", ids)
	}
}

func TestGemPreadPwriteBounds(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{amdgpuDev()}})
	d := env.Open(t, 128)
	const size = 3 * 4096
	h := must(d.BOCreate(size, vram, 0, 0))
	ok(t, d.Write(h, size-4, []byte{1, 2, 3, 4}))
	ok(t, d.Write(h, size, nil))
	wantErrno(t, d.Write(h, size-4, []byte{1, 2, 3, 4, 5}), syscall.EINVAL)
	wantErrno(t, d.Write(h, size+1, []byte{1}), syscall.EINVAL)
	wantErrno(t, d.Write(h, math.MaxUint64, []byte{1}), syscall.EINVAL)
	wantErrno(t, d.Write(h, math.MaxUint64-1, []byte{1, 2, 3}), syscall.EINVAL)
	wantErrno(t, d.Write(99, 0, []byte{1}), syscall.ENOENT)

	c := d.Conn()
	pread := func(off, n uint64) ([]byte, error) {
		r := &uapi.GemPreadReply{}
		_, err := c.Call(uapi.OpGemPread, &uapi.GemPreadRequest{Handle: h, Offset: off, Length: n}, r)
		return r.Data, err
	}
	if p, err := pread(size-4, 4); err != nil || !bytes.Equal(p, []byte{1, 2, 3, 4}) {
		t.Fatalf("pread tail: %x %v", p, err)
	}
	if p, err := pread(size, 0); err != nil || len(p) != 0 {
		t.Fatalf("empty pread at the end: %x %v", p, err)
	}
	for _, c := range []struct{ off, n uint64 }{{size - 4, 5}, {size + 1, 0}, {math.MaxUint64, 2}, {0, uapi.MaxData + 1}, {0, math.MaxUint64}} {
		_, err := pread(c.off, c.n)
		wantErrno(t, err, syscall.EINVAL)
	}
	// A large write and read through the chunking library calls.
	big := make([]byte, size)
	for i := range big {
		big[i] = byte(i * 7)
	}
	ok(t, d.Write(h, 0, big))
	if got := readBO(t, d, h, size); !bytes.Equal(got, big) {
		t.Fatal("round trip of the whole BO differs")
	}
}

func TestGemAccountingAndENOMEM(t *testing.T) {
	cfg := twoDevices()
	cfg.Devices[0].VRAMSize = 1 << 20
	cfg.Devices[0].GTTSize = 512 << 10
	env := ksimtest.Start(t, cfg)
	a := env.Open(t, 128)
	b := env.Open(t, 128)
	x := env.Open(t, 129)
	used := func(minor uint32) (vram, gtt uint64) {
		for _, d := range env.Kernel.Debug().Devices {
			if d.Minor == minor {
				return d.VRAMUsed, d.GTTUsed
			}
		}
		t.Fatalf("no device %d", minor)
		return
	}
	h1 := must(a.BOCreate(512<<10, vram, 0, 0))
	must(b.BOCreate(512<<10, vram, 0, 0))
	// VRAM is a device-wide budget shared by every file.
	_, err := a.BOCreate(4096, vram, 0, 0)
	wantErrno(t, err, syscall.ENOMEM)
	_, err = b.BOCreate(4096, vram, 0, 0)
	wantErrno(t, err, syscall.ENOMEM)
	// GTT and other devices have their own.
	g := must(a.BOCreate(512<<10, gtt, 0, 0))
	_, err = a.BOCreate(4096, gtt, 0, 0)
	wantErrno(t, err, syscall.ENOMEM)
	must(x.BOCreate(4<<20, vram, 0, 0))
	if v, gt := used(128); v != 1<<20 || gt != 512<<10 {
		t.Fatalf("renderD128 use: vram %d gtt %d", v, gt)
	}
	if v, _ := used(129); v != 4<<20 {
		t.Fatalf("renderD129 use: vram %d", v)
	}
	// Freeing makes room again.
	ok(t, a.BOClose(h1))
	h := must(a.BOCreate(256<<10, vram, 0, 0))
	if h != h1 {
		t.Fatalf("handle %d reused as %d", h1, h)
	}
	if v, _ := used(128); v != 768<<10 {
		t.Fatalf("after close and create: vram %d", v)
	}
	ok(t, a.BOClose(g))
	// Closing the files frees what they held.
	a.Close()
	b.Close()
	eventually(t, "renderD128 accounting to drop to 0", func() bool {
		v, gt := used(128)
		return v == 0 && gt == 0
	})
}

func TestVMMapUnmap(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	d := env.Open(t, 128)
	other := env.Open(t, 128)
	const size = 16 * 4096
	h := must(d.BOCreate(size, vram, 0, 0))
	h2 := must(d.BOCreate(4*4096, gtt, 0, 0))
	oh := must(other.BOCreate(4096, gtt, 0, 0))
	const va = 1 << 32
	ok(t, d.VMMap(h, 0, va, size, 0))
	for _, c := range []struct {
		name          string
		h             uint32
		off, va, size uint64
		errno         syscall.Errno
	}{
		{"unknown handle", 77, 0, 2 * va, 4096, syscall.ENOENT},
		{"another file's handle number", 3, 0, 2 * va, 4096, syscall.ENOENT},
		{"unaligned va", h2, 0, 2*va + 1, 4096, syscall.EINVAL},
		{"unaligned offset", h2, 100, 2 * va, 4096, syscall.EINVAL},
		{"unaligned size", h2, 0, 2 * va, 4095, syscall.EINVAL},
		{"empty", h2, 0, 2 * va, 0, syscall.EINVAL},
		{"past the BO", h2, 4096, 2 * va, 4 * 4096, syscall.EINVAL},
		{"offset past the BO", h2, 8 * 4096, 2 * va, 4096, syscall.EINVAL},
		{"offset+size wraps", h2, 4096, 2 * va, math.MaxUint64 &^ 4095, syscall.EINVAL},
		{"past the address space", h2, 0, 1 << 47, 4096, syscall.EINVAL},
		{"va+size wraps", h2, 0, math.MaxUint64 &^ 4095, 4 * 4096, syscall.EINVAL},
		{"same start", h2, 0, va, 4096, syscall.EEXIST},
		{"overlaps the end", h2, 0, va + size - 4096, 2 * 4096, syscall.EEXIST},
		{"overlaps the start", h2, 0, va - 4096, 2 * 4096, syscall.EEXIST},
		{"inside", h2, 0, va + 4096, 4096, syscall.EEXIST},
		{"encloses", h2, 0, va - 4096, 4 * 4096, syscall.EEXIST},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantErrno(t, d.VMMap(c.h, c.off, c.va, c.size, 0), c.errno)
		})
	}
	// Adjacent ranges and partial BO ranges are fine, in any order.
	ok(t, d.VMMap(h2, 0, va+size, 4096, 1))
	ok(t, d.VMMap(h2, 3*4096, va-4096, 4096, 2))
	ok(t, d.VMMap(h2, 4096, va+size+4096, 2*4096, 0))
	// The other file's address space is its own.
	ok(t, other.VMMap(oh, 0, va, 4096, 0))

	mappings := func(dev *libdrm.Device) []kernelsim.DebugMapping {
		c := ctlClient(t, env)
		id := fileID(t, c, dev)
		for _, f := range env.Kernel.Debug().Files {
			if f.ID == id {
				return f.Mappings
			}
		}
		t.Fatalf("no file %d", id)
		return nil
	}
	if m := mappings(d); len(m) != 4 || m[0].VA != va-4096 || m[1].VA != va || m[2].VA != va+size || m[3].VA != va+size+4096 {
		t.Fatalf("mappings: %+v", m)
	}

	wantErrno(t, d.VMUnmap(va+4096), syscall.ENOENT) // not the start of a mapping
	wantErrno(t, d.VMUnmap(7<<32), syscall.ENOENT)
	ok(t, d.VMUnmap(va))
	wantErrno(t, d.VMUnmap(va), syscall.ENOENT)
	ok(t, d.VMMap(h, 4096, va, 4096, 0)) // the range is free again

	// Closing a handle drops its mappings and only its own.
	ok(t, d.BOClose(h2))
	if m := mappings(d); len(m) != 1 || m[0].VA != va || m[0].Handle != h || m[0].BOOffset != 4096 {
		t.Fatalf("mappings after closing handle %d: %+v", h2, m)
	}
	ok(t, d.VMMap(h, 0, va+size, 4096, 0)) // h2's range is free
	if m := mappings(other); len(m) != 1 {
		t.Fatalf("other file's mappings: %+v", m)
	}
	// A new handle reusing the number does not inherit mappings.
	h3 := must(d.BOCreate(4096, vram, 0, 0))
	if h3 != h2 {
		t.Fatalf("handle %d not reused (%d)", h2, h3)
	}
	for _, m := range mappings(d) {
		if m.Handle == h3 {
			t.Fatalf("new handle %d inherited mapping %+v", h3, m)
		}
	}
}
