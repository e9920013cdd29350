package kernelsim_test

import (
	"strings"
	"testing"

	"drmcr/kernelsim"
)

func devCfg(driver string, minor, gpuID uint32) kernelsim.DeviceConfig {
	dc := kernelsim.DefaultDevice()
	dc.Driver, dc.Minor, dc.GPUID = driver, minor, gpuID
	return dc
}

// gpuIDs creates a kernel and returns its devices' gpu ids by minor.
func gpuIDs(t *testing.T, devs ...kernelsim.DeviceConfig) map[uint32]uint32 {
	t.Helper()
	k, err := kernelsim.New(kernelsim.Config{Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Shutdown()
	out := map[uint32]uint32{}
	for _, d := range k.Devices() {
		out[d.Minor()] = d.Config().GPUID
	}
	for _, d := range k.Debug().Devices {
		if d.GPUID != out[d.Minor] {
			t.Errorf("debug view: renderD%d gpu id %#x, config %#x", d.Minor, d.GPUID, out[d.Minor])
		}
	}
	return out
}

// TestDefaultGPUIDs: devices without a configured gpu id get unique ids
// derived from the driver's PCI vendor and the minor, the same in every
// kernel; a configured id wins.
func TestDefaultGPUIDs(t *testing.T) {
	want := map[uint32]uint32{128: 0x1002_0080, 129: 0x1002_0081, 130: 0x8086_0082}
	for range 2 { // stable: a second kernel gives the same ids
		got := gpuIDs(t, devCfg("amdgpu", 128, 0), devCfg("amdgpu", 129, 0), devCfg("xe", 130, 0))
		for minor, id := range want {
			if got[minor] != id {
				t.Errorf("renderD%d: gpu id %#x, want %#x", minor, got[minor], id)
			}
		}
	}
	if got := gpuIDs(t); got[128] != 0x1002_0080 {
		t.Errorf("the default device: gpu id %#x, want 0x10020080", got[128])
	}
	got := gpuIDs(t, devCfg("amdgpu", 128, 0x1234), devCfg("amdgpu", 129, 0))
	if got[128] != 0x1234 || got[129] != 0x1002_0081 {
		t.Errorf("configured id: got %#x, %#x; want 0x1234, 0x10020081", got[128], got[129])
	}
}

// TestDuplicateGPUIDsRefused: two devices with the same id (configured,
// or derived from minors 64K apart) are refused, naming both.
func TestDuplicateGPUIDsRefused(t *testing.T) {
	for _, tc := range []struct {
		devs []kernelsim.DeviceConfig
		msg  string
	}{
		{[]kernelsim.DeviceConfig{devCfg("amdgpu", 128, 0x1234), devCfg("xe", 129, 0x1234)},
			"devices renderD128 and renderD129 both have gpu id 0x1234"},
		{[]kernelsim.DeviceConfig{devCfg("amdgpu", 128, 0), devCfg("amdgpu", 129, 0x1002_0080)},
			"devices renderD128 and renderD129 both have gpu id 0x10020080"},
		{[]kernelsim.DeviceConfig{devCfg("amdgpu", 128, 0), devCfg("amdgpu", 128+1<<16, 0)},
			"both have gpu id 0x10020080"},
	} {
		k, err := kernelsim.New(kernelsim.Config{Devices: tc.devs})
		if err == nil {
			k.Shutdown()
			t.Errorf("%+v: accepted", tc.devs)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "must be unique") {
			t.Errorf("error %q, want %q", err, tc.msg)
		}
	}
}
