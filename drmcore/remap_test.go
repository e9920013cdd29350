package drmcore_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/drmcore"
	"drmcr/drmcore/drmcoretest"
	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// lineLog is a drmcore.Logger that keeps what it is given, by level.
type lineLog struct {
	drmcoretest.Log
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(level, f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+fmt.Sprintf(f, a...))
}
func (l *lineLog) Summaryf(f string, a ...any) { l.Log.Summaryf(f, a...); l.add("S: ", f, a...) }
func (l *lineLog) Errorf(f string, a ...any)   { l.Log.Errorf(f, a...); l.add("E: ", f, a...) }
func (l *lineLog) Infof(f string, a ...any)    { l.Log.Infof(f, a...); l.add("I: ", f, a...) }

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// withLog and withMap are restore options.
func withLog(l *lineLog) func(*drmcore.Config) { return func(c *drmcore.Config) { c.Log = l } }

func withMap(t *testing.T, s string) func(*drmcore.Config) {
	m, err := drmcore.ParseDeviceMap(s)
	must(t, err)
	return func(c *drmcore.Config) { c.DeviceMap = m }
}

func dev(driver string, minor, gpuID uint32, vram uint64) kernelsim.DeviceConfig {
	d := kernelsim.DefaultDevice()
	d.Driver, d.Minor, d.GPUID, d.VRAMSize, d.GTTSize = driver, minor, gpuID, vram, 64<<20
	return d
}

// hostA is the machine the tests dump on: two amdgpu devices.
var hostA = []kernelsim.DeviceConfig{dev("amdgpu", 128, 0x1111, 64<<20), dev("amdgpu", 129, 0x1112, 64<<20)}

// twoDevices is a checkpoint of two drm files, a on renderD128 and b on
// renderD129 of host A, sharing a's BO through a dma-buf (b imported it:
// a BO of one device in a file of the other), each with a BO and a VA
// mapping of its own, and what their BOs held.
type twoDevices struct {
	dir            string
	inoA, inoB     uint64
	hA, hShared    uint32 // a's handles
	hB, hImported  uint32 // b's
	ctxA, ctxB     uint32
	wantA, wantB   []byte
	wantShared     []byte
	sizeA, sizeShr uint64
}

func dumpTwoDevices(t *testing.T) *twoDevices {
	t.Helper()
	env := ksimtest.Start(t, kernelsim.Config{Devices: hostA})
	a, b := env.Open(t, 128), env.Open(t, 129)
	c := &twoDevices{sizeA: 2 * page, sizeShr: 4 * page}
	c.hA = ck(t).u32(a.BOCreate(c.sizeA, uapi.Domain_DOMAIN_VRAM, 0, 0))
	c.hShared = ck(t).u32(a.BOCreate(c.sizeShr, uapi.Domain_DOMAIN_VRAM, 0, 0))
	c.ctxA = ck(t).u32(a.CtxCreate(0))
	fill(t, a, c.ctxA, c.hA, c.sizeA, 1)
	fill(t, a, c.ctxA, c.hShared, c.sizeShr, 2)
	must(t, a.VMMap(c.hA, 0, 0x100000, c.sizeA, 0))
	fd, err := a.ExportDmaBuf(c.hShared)
	must(t, err)
	c.hImported = ck(t).u32(b.ImportDmaBuf(fd))
	unix.Close(fd)
	c.hB = ck(t).u32(b.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	c.ctxB = ck(t).u32(b.CtxCreate(0))
	fill(t, b, c.ctxB, c.hB, page, 3)
	must(t, b.VMMap(c.hImported, 0, 0x200000, c.sizeShr, 0))
	c.wantA, c.wantShared, c.wantB = read(t, a, c.hA, int(c.sizeA)), read(t, a, c.hShared, int(c.sizeShr)), read(t, b, c.hB, page)
	c.inoA, c.inoB = inode(t, a.FD()), inode(t, b.FD())
	dir, err := dump(t, env)
	must(t, err)
	c.dir = dir
	a.Close()
	b.Close()
	return c
}

// restored checks the files restored from c: on the devices given, with
// their BOs' contents, handles, mappings and working contexts, the
// imported BO the same BO as a's.
func (c *twoDevices) restored(t *testing.T, fds map[uint64]int, devA, devB *uapi.DeviceInfo) {
	t.Helper()
	a, b := libdrm.FromFD(fds[c.inoA]), libdrm.FromFD(fds[c.inoB])
	for _, x := range []struct {
		name string
		d    *libdrm.Device
		want *uapi.DeviceInfo
	}{{"a", a, devA}, {"b", b, devB}} {
		v, err := x.d.Version()
		must(t, err)
		if v.Minor != x.want.Minor || v.GpuId != x.want.GpuId || v.VramSize != x.want.VramSize {
			t.Errorf("file %s is on renderD%d gpu id %#x (%d bytes of VRAM), want renderD%d gpu id %#x", x.name, v.Minor, v.GpuId, v.VramSize, x.want.Minor, x.want.GpuId)
		}
	}
	if !bytes.Equal(read(t, a, c.hA, int(c.sizeA)), c.wantA) || !bytes.Equal(read(t, a, c.hShared, int(c.sizeShr)), c.wantShared) ||
		!bytes.Equal(read(t, b, c.hB, page), c.wantB) || !bytes.Equal(read(t, b, c.hImported, int(c.sizeShr)), c.wantShared) {
		t.Fatal("contents differ after the restore")
	}
	if err := a.VMMap(c.hA, 0, 0x100000, page, 0); err == nil {
		t.Error("a's mapping did not come back")
	}
	if err := b.VMMap(c.hB, 0, 0x200000, page, 0); err == nil {
		t.Error("b's mapping of the imported BO did not come back")
	}
	// b's write through its import is a's BO's: one BO again.
	fill(t, b, c.ctxB, c.hImported, c.sizeShr, 9)
	if !bytes.Equal(read(t, a, c.hShared, int(c.sizeShr)), read(t, b, c.hImported, int(c.sizeShr))) {
		t.Error("the shared BO is two BOs after the restore")
	}
	fill(t, a, c.ctxA, c.hA, c.sizeA, 10)
}

// TestRestoreOnOtherDevices: a checkpoint of two files on two devices
// sharing a BO restores onto a kernel whose devices have other minors,
// gpu ids and sizes (and whose renderD128 is of another driver): each
// file, with its BOs, mappings and contexts, on the device the mapping
// gives, by default and as DRMCR_DEVICE_MAP states, and the mapping in
// the log at criu's default verbosity.
func TestRestoreOnOtherDevices(t *testing.T) {
	c := dumpTwoDevices(t)
	hostB := []kernelsim.DeviceConfig{dev("xe", 128, 0x3333, 1<<30), dev("amdgpu", 130, 0x2222, 32<<20), dev("amdgpu", 131, 0x2223, 128<<20)}
	info := func(d kernelsim.DeviceConfig) *uapi.DeviceInfo {
		return &uapi.DeviceInfo{Minor: d.Minor, GpuId: d.GPUID, VramSize: d.VRAMSize}
	}

	t.Run("default", func(t *testing.T) {
		env := ksimtest.Start(t, kernelsim.Config{Devices: hostB})
		log := &lineLog{Log: drmcoretest.Log{T: t}}
		fds, err := drmcoretest.Restore(t, env.Dir, c.dir, concurrently, false, withLog(log))
		must(t, err)
		c.restored(t, fds, info(hostB[1]), info(hostB[2]))
		want := "S: GPU devices: renderD128 (amdgpu, gpu id 0x1111) -> renderD130 (gpu id 0x2222): first free device of its driver with enough memory; " +
			"renderD129 (amdgpu, gpu id 0x1112) -> renderD131 (gpu id 0x2223): first free device of its driver with enough memory"
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log lacks\n  %s\nit has\n%s", want, log)
		}
	})

	t.Run("explicit", func(t *testing.T) {
		env := ksimtest.Start(t, kernelsim.Config{Devices: hostB})
		log := &lineLog{Log: drmcoretest.Log{T: t}}
		fds, err := drmcoretest.Restore(t, env.Dir, c.dir, nthOrder(1), false, withLog(log), withMap(t, "renderD128=renderD131, 0x1112=0x2222"))
		must(t, err)
		c.restored(t, fds, info(hostB[2]), info(hostB[1]))
		if !strings.Contains(log.String(), "renderD128 (amdgpu, gpu id 0x1111) -> renderD131 (gpu id 0x2223): by DRMCR_DEVICE_MAP") {
			t.Errorf("the log:\n%s", log)
		}
	})

	// The same devices: every device to itself, as before there was a
	// mapping, which criu's default verbosity does not show.
	t.Run("same host", func(t *testing.T) {
		env := ksimtest.Start(t, kernelsim.Config{Devices: hostA})
		log := &lineLog{Log: drmcoretest.Log{T: t}}
		fds, err := drmcoretest.Restore(t, env.Dir, c.dir, concurrently, false, withLog(log))
		must(t, err)
		c.restored(t, fds, info(hostA[0]), info(hostA[1]))
		if !strings.Contains(log.String(), "I: GPU devices: renderD128 (amdgpu, gpu id 0x1111) -> renderD128 (gpu id 0x1111): same minor; renderD129") ||
			strings.Contains(log.String(), "S: GPU devices") {
			t.Errorf("the log:\n%s", log)
		}
	})
}

// TestRestoreOnOtherDevicesRefused: a device of the checkpoint that the
// kernel cannot take (no device of its driver, none with enough memory,
// an explicit map naming a device it lacks or one of another driver)
// refuses the restore at init, naming the device, with nothing created.
func TestRestoreOnOtherDevicesRefused(t *testing.T) {
	c := dumpTwoDevices(t)
	for _, tc := range []struct {
		name     string
		devices  []kernelsim.DeviceConfig
		explicit string
		want     []string
	}{
		{"no such driver", []kernelsim.DeviceConfig{dev("xe", 128, 1, 1<<30), dev("xe", 129, 2, 1<<30)}, "",
			[]string{"E: GPU device renderD128 (amdgpu, gpu id 0x1111, 24.0 KiB of VRAM and 0 bytes of GTT used) of the checkpoint: there is no amdgpu device here (renderD128 xe, renderD129 xe)",
				"E: GPU device renderD129 (amdgpu, gpu id 0x1112, 0 bytes of VRAM and 4.0 KiB of GTT used) of the checkpoint: there is no amdgpu device here"}},
		{"not enough memory", []kernelsim.DeviceConfig{dev("amdgpu", 128, 1, 16<<10), dev("amdgpu", 129, 2, 16<<10)}, "",
			[]string{"E: GPU device renderD128 (amdgpu, gpu id 0x1111, 24.0 KiB of VRAM and 0 bytes of GTT used) of the checkpoint: no amdgpu device here has enough memory: renderD128 has 16.0 KiB of VRAM"}},
		{"one device for two", []kernelsim.DeviceConfig{dev("amdgpu", 140, 1, 1<<30)}, "",
			[]string{"renderD129 (amdgpu, gpu id 0x1112, 0 bytes of VRAM and 4.0 KiB of GTT used) of the checkpoint: every amdgpu device here with enough memory is taken: renderD140 by renderD128"}},
		{"explicit map to a missing device", hostA, "renderD129=renderD135",
			[]string{"E: GPU device renderD129 (amdgpu, gpu id 0x1112, 0 bytes of VRAM and 4.0 KiB of GTT used) of the checkpoint: DRMCR_DEVICE_MAP maps it to renderD135, which is none of the devices here (renderD128 amdgpu, renderD129 amdgpu)"}},
		{"explicit map to another driver", append([]kernelsim.DeviceConfig{dev("xe", 127, 7, 1<<30)}, hostA...), "renderD128=renderD127",
			[]string{"DRMCR_DEVICE_MAP maps it to renderD127, an xe device, not amdgpu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := ksimtest.Start(t, kernelsim.Config{Devices: tc.devices})
			log := &lineLog{Log: drmcoretest.Log{T: t}}
			opts := []func(*drmcore.Config){withLog(log)}
			if tc.explicit != "" {
				opts = append(opts, withMap(t, tc.explicit))
			}
			p := drmcoretest.Plugin(t, env.Dir, c.dir, time.Second, opts...)
			err := p.Init(drmcore.StageRestore)
			if err == nil {
				t.Fatal("restored onto devices that cannot take the checkpoint")
			}
			if entries := p.RestoreEntries(); len(entries) != 0 {
				t.Errorf("a refused restore prepared %d claim(s)", len(entries))
			}
			p.Fini(drmcore.StageRestore, -1)
			for _, w := range tc.want {
				if !strings.Contains(log.String(), w) {
					t.Errorf("the log lacks\n  %s\nit has\n%s", w, log)
				}
			}
			if !strings.Contains(err.Error(), "refusing to restore the GPU state") || !strings.Contains(err.Error(), "renderD12") {
				t.Errorf("init's error: %v", err)
			}
			if n := env.Kernel.Counts(); n != (kernelsim.Counts{}) {
				t.Errorf("a refused restore created %+v", n)
			}
		})
	}
}
