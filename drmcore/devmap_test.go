package drmcore_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// src is a device of a checkpoint with what the checkpoint puts there.
func src(minor uint32, driver string, gpuID uint32, vram, gtt uint64) drmcore.DeviceNeed {
	return drmcore.DeviceNeed{Device: &images.Device{Minor: minor, Driver: driver, GpuId: gpuID}, VRAM: vram, GTT: gtt}
}

// dst is a device of the kernel a restore runs against.
func dst(minor uint32, driver string, gpuID uint32, vram, gtt uint64) *uapi.DeviceInfo {
	return &uapi.DeviceInfo{Minor: minor, Driver: driver, GpuId: gpuID, VramSize: vram, GttSize: gtt}
}

// mapped renders a mapping as "128->131 ..." with each device's reason.
func mapped(m *drmcore.DeviceMapping) string {
	var s []string
	for _, a := range m.Assignments {
		s = append(s, strings.Join([]string{itoa(int(a.Device.Minor)), "->", itoa(int(a.To.Minor)), " (", a.Why, ")"}, ""))
	}
	return strings.Join(s, ", ")
}

func TestMapDevices(t *testing.T) {
	const same, first, re, byMap = drmcore.BySameMinor, drmcore.ByFirstFree, drmcore.ByRearranging, drmcore.ByDeviceMap
	for _, tc := range []struct {
		name     string
		needs    []drmcore.DeviceNeed
		targets  []*uapi.DeviceInfo
		explicit string
		want     string
	}{
		{"the same devices", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0), src(129, "amdgpu", 0x1112, 0, mib)},
			[]*uapi.DeviceInfo{dst(128, "amdgpu", 0x1111, gib, gib), dst(129, "amdgpu", 0x1112, gib, gib)},
			"", "128->128 (" + same + "), 129->129 (" + same + ")"},
		{"another minor", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0)},
			[]*uapi.DeviceInfo{dst(131, "amdgpu", 0x2222, gib, gib)},
			"", "128->131 (" + first + ")"},
		// Identity needs the driver, and enough memory.
		{"the same minor of another driver", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0)},
			[]*uapi.DeviceInfo{dst(128, "xe", 0x2222, gib, gib), dst(130, "amdgpu", 0x2223, gib, gib)},
			"", "128->130 (" + first + ")"},
		{"the same minor too small", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, gib, 0)},
			[]*uapi.DeviceInfo{dst(128, "amdgpu", 0x1111, 512*mib, gib), dst(129, "amdgpu", 0x2223, 512*mib, gib), dst(130, "amdgpu", 0x2224, 2*gib, gib)},
			"", "128->130 (" + first + ")"},
		{"GTT counts", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, 0, gib)},
			[]*uapi.DeviceInfo{dst(128, "amdgpu", 0x1111, 8*gib, 512*mib), dst(129, "amdgpu", 0x2223, mib, gib)},
			"", "128->129 (" + first + ")"},
		// Identity first, for every device, then the first free one.
		{"identity before first free", []drmcore.DeviceNeed{src(128, "amdgpu", 1, mib, 0), src(129, "amdgpu", 2, mib, 0)},
			[]*uapi.DeviceInfo{dst(128, "xe", 3, gib, gib), dst(129, "amdgpu", 4, gib, gib), dst(130, "amdgpu", 5, gib, gib)},
			"", "128->130 (" + first + "), 129->129 (" + same + ")"},
		// First free in minor order would leave 129 without a device.
		{"rearranged", []drmcore.DeviceNeed{src(128, "amdgpu", 1, 100*mib, 0), src(129, "amdgpu", 2, 2*gib, 0)},
			[]*uapi.DeviceInfo{dst(130, "amdgpu", 3, 4*gib, gib), dst(131, "amdgpu", 4, gib, gib)},
			"", "128->131 (" + re + "), 129->130 (" + re + ")"},
		// So would identity for 128.
		{"identity rearranged", []drmcore.DeviceNeed{src(128, "amdgpu", 1, gib, 0), src(129, "amdgpu", 2, 2*gib, 0)},
			[]*uapi.DeviceInfo{dst(128, "amdgpu", 3, 4*gib, gib), dst(129, "amdgpu", 4, gib, gib)},
			"", "128->129 (" + re + "), 129->128 (" + re + ")"},
		{"explicit by minor and gpu id", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0), src(129, "amdgpu", 0x1112, mib, 0), src(130, "amdgpu", 0x1113, mib, 0)},
			[]*uapi.DeviceInfo{dst(128, "amdgpu", 0x2221, gib, gib), dst(129, "amdgpu", 0x2222, gib, gib), dst(130, "amdgpu", 0x2223, gib, gib)},
			"renderD128=renderD130, 0x1112=0x2221", "128->130 (" + byMap + "), 129->128 (" + byMap + "), 130->129 (" + first + ")"},
		// A host's map may name devices a checkpoint does not use.
		{"explicit entry unused", []drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0)},
			[]*uapi.DeviceInfo{dst(128, "amdgpu", 0x2221, gib, gib)},
			"renderD129=renderD130", "128->128 (" + same + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			explicit, err := drmcore.ParseDeviceMap(tc.explicit)
			must(t, err)
			m, err := drmcore.MapDevices(tc.needs, tc.targets, explicit)
			if err != nil {
				t.Fatal(err)
			}
			if got := mapped(m); got != tc.want {
				t.Errorf("mapping\n  %s\nwant\n  %s", got, tc.want)
			}
			// The order the kernel lists its devices in does not matter.
			rev := slices.Clone(tc.targets)
			slices.Reverse(rev)
			m2, err := drmcore.MapDevices(tc.needs, rev, explicit)
			if err != nil || mapped(m2) != mapped(m) {
				t.Errorf("devices listed the other way round: %v, %v", mapped(m2), err)
			}
			// Every device of the checkpoint goes to a device of its
			// driver with room for it, each to another.
			used := map[uint32]bool{}
			for _, a := range m.Assignments {
				if used[a.To.Minor] || a.To.Driver != a.Device.Driver || a.To.VramSize < a.VRAM || a.To.GttSize < a.GTT {
					t.Errorf("bad assignment %+v -> %+v", a.DeviceNeed, a.To)
				}
				used[a.To.Minor] = true
			}
		})
	}
}

func TestMapDevicesLog(t *testing.T) {
	explicit, _ := drmcore.ParseDeviceMap("renderD200=renderD131")
	m, err := drmcore.MapDevices([]drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0)},
		[]*uapi.DeviceInfo{dst(131, "amdgpu", 0x2222, gib, gib)}, explicit)
	must(t, err)
	want := "renderD128 (amdgpu, gpu id 0x1111) -> renderD131 (gpu id 0x2222): first free device of its driver with enough memory; " +
		"DRMCR_DEVICE_MAP entry renderD200=renderD131 not used: the checkpoint has no device renderD200"
	if got := m.String(); got != want {
		t.Errorf("log line\n  %s\nwant\n  %s", got, want)
	}
	if tg := m.Targets(); len(tg) != 1 || tg[128].Minor != 131 {
		t.Errorf("targets %v", tg)
	}
	if !m.Moved() {
		t.Error("renderD128 -> renderD131 did not move")
	}
	// The same minor with another gpu id is another device too.
	for _, tc := range []struct {
		gpuID uint32
		moved bool
	}{{0x1111, false}, {0x2222, true}} {
		m, err := drmcore.MapDevices([]drmcore.DeviceNeed{src(128, "amdgpu", 0x1111, mib, 0)}, []*uapi.DeviceInfo{dst(128, "amdgpu", tc.gpuID, gib, gib)}, nil)
		if err != nil || m.Moved() != tc.moved {
			t.Errorf("onto gpu id %#x: moved %v, %v", tc.gpuID, m.Moved(), err)
		}
	}
}

// TestMapDevicesRefuses: a device that cannot be mapped is named, with
// why, and so is every other one; nothing is mapped.
func TestMapDevicesRefuses(t *testing.T) {
	a128 := src(128, "amdgpu", 0x1111, gib, 8*mib)
	for _, tc := range []struct {
		name     string
		needs    []drmcore.DeviceNeed
		targets  []*uapi.DeviceInfo
		explicit string
		want     []string // one per problem
	}{
		{"no such driver", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "xe", 1, 4*gib, gib)}, "",
			[]string{"renderD128 (amdgpu, gpu id 0x1111, 1.0 GiB of VRAM and 8.0 MiB of GTT used): there is no amdgpu device here (renderD128 xe)"}},
		{"no device at all", []drmcore.DeviceNeed{a128}, nil, "",
			[]string{"there is no amdgpu device here (no device at all)"}},
		{"not enough VRAM", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 512*mib, gib), dst(129, "amdgpu", 2, 256*mib, gib)}, "",
			[]string{"no amdgpu device here has enough memory: renderD128 has 512.0 MiB of VRAM and 1.0 GiB of GTT, renderD129 has 256.0 MiB of VRAM and 1.0 GiB of GTT"}},
		{"not enough GTT", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, 4*mib)}, "",
			[]string{"no amdgpu device here has enough memory: renderD128 has 4.0 GiB of VRAM and 4.0 MiB of GTT"}},
		{"taken", []drmcore.DeviceNeed{a128, src(129, "amdgpu", 0x1112, gib, 0)}, []*uapi.DeviceInfo{dst(130, "amdgpu", 1, 4*gib, gib)}, "",
			[]string{"renderD129 (amdgpu, gpu id 0x1112, 1.0 GiB of VRAM and 0 bytes of GTT used): every amdgpu device here with enough memory is taken: renderD130 by renderD128"}},
		{"both", []drmcore.DeviceNeed{a128, src(129, "xe", 0x1112, 0, 0)}, []*uapi.DeviceInfo{dst(130, "amdgpu", 1, mib, gib)}, "",
			[]string{"renderD128 (amdgpu", "renderD129 (xe"}},
		{"explicit: missing", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, gib)}, "renderD128=renderD140",
			[]string{"DRMCR_DEVICE_MAP maps it to renderD140, which is none of the devices here (renderD128 amdgpu)"}},
		{"explicit: missing gpu id", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, gib)}, "0x1111=0x2222",
			[]string{"DRMCR_DEVICE_MAP maps it to 0x2222, which is none of the devices here"}},
		{"explicit: wrong driver", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, gib), dst(129, "xe", 2, 4*gib, gib)}, "renderD128=renderD129",
			[]string{"DRMCR_DEVICE_MAP maps it to renderD129, an xe device, not amdgpu"}},
		{"explicit: too small", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, gib), dst(129, "amdgpu", 2, mib, gib)}, "renderD128=renderD129",
			[]string{"DRMCR_DEVICE_MAP maps it to renderD129, which has 1.0 MiB of VRAM and 1.0 GiB of GTT"}},
		{"explicit: twice onto one", []drmcore.DeviceNeed{a128, src(129, "amdgpu", 0x1112, 0, 0)}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, gib), dst(129, "amdgpu", 2, 4*gib, gib)},
			"renderD128=renderD129,renderD129=renderD129",
			[]string{"renderD129 (amdgpu, gpu id 0x1112, 0 bytes of VRAM and 0 bytes of GTT used): DRMCR_DEVICE_MAP maps it to renderD129, as it maps renderD128"}},
		{"explicit: one device by minor and gpu id", []drmcore.DeviceNeed{a128}, []*uapi.DeviceInfo{dst(128, "amdgpu", 1, 4*gib, gib), dst(129, "amdgpu", 2, 4*gib, gib)},
			"renderD128=renderD129,0x1111=renderD128",
			[]string{"DRMCR_DEVICE_MAP maps it twice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			explicit, err := drmcore.ParseDeviceMap(tc.explicit)
			must(t, err)
			m, err := drmcore.MapDevices(tc.needs, tc.targets, explicit)
			var merr *drmcore.DeviceMapError
			if !errors.As(err, &merr) || m != nil {
				t.Fatalf("mapped: %v, %v", m, err)
			}
			if len(merr.Problems) != len(tc.want) {
				t.Fatalf("%d problem(s), want %d: %v", len(merr.Problems), len(tc.want), err)
			}
			for i, w := range tc.want {
				if got := merr.Problems[i].String(); !strings.Contains(got, w) {
					t.Errorf("problem %d\n  %s\nwant it to say\n  %s", i, got, w)
				}
			}
		})
	}
}

func TestParseDeviceMap(t *testing.T) {
	m, err := drmcore.ParseDeviceMap(" renderD128=renderD131, 0x10020081 = 0X2222 ,,")
	must(t, err)
	want := drmcore.DeviceMap{
		{From: drmcore.DeviceRef{Minor: 128}, To: drmcore.DeviceRef{Minor: 131}},
		{From: drmcore.DeviceRef{ByGpuID: true, GpuID: 0x10020081}, To: drmcore.DeviceRef{ByGpuID: true, GpuID: 0x2222}},
	}
	if !slices.Equal(m, want) {
		t.Fatalf("parsed %+v", m)
	}
	if m, err := drmcore.ParseDeviceMap(""); err != nil || m != nil {
		t.Fatalf("empty: %v %v", m, err)
	}
	for _, bad := range []string{"renderD128", "renderD128=", "=renderD128", "renderD=renderD1", "renderD+1=renderD2",
		"card0=renderD128", "128=131", "0x=renderD128", "0x1g=renderD128", "renderD4294967296=renderD1",
		"renderD128=renderD129,renderD128=renderD130"} {
		if _, err := drmcore.ParseDeviceMap(bad); err == nil || !strings.Contains(err.Error(), "DRMCR_DEVICE_MAP") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
