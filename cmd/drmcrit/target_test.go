package main

import (
	"strings"
	"testing"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
)

// TestVerifyTarget: verify -target checks a checkpoint against a
// kernelsimd's devices as a restore there would: where each device goes,
// or, with exit status 1, the device that cannot go anywhere and why;
// nothing is created.
func TestVerifyTarget(t *testing.T) {
	f := richFixture(t)
	dev := func(driver string, minor, gpuID uint32) kernelsim.DeviceConfig {
		d := kernelsim.DefaultDevice()
		d.Driver, d.Minor, d.GPUID = driver, minor, gpuID
		return d
	}
	other := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev("xe", 128, 1), dev("amdgpu", 131, 0x2222)}})
	xeOnly := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev("xe", 128, 1)}})
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"other devices", []string{"-target", other.Dir}, 0,
			"on " + other.Dir + ": GPU devices: renderD128 (amdgpu, gpu id 0x10020080) -> renderD131 (gpu id 0x2222): first free device of its driver with enough memory\n"},
		{"explicit map", []string{"-target", other.Dir, "-device-map", "0x10020080=renderD131"}, 0,
			"-> renderD131 (gpu id 0x2222): by DRMCR_DEVICE_MAP\n"},
		{"map to a missing device", []string{"-target", other.Dir, "-device-map", "renderD128=renderD140"}, 1,
			": on " + other.Dir + ": GPU device renderD128 (amdgpu, gpu id 0x10020080, 16.0 KiB of VRAM and 4.0 KiB of GTT used) of the checkpoint: DRMCR_DEVICE_MAP maps it to renderD140, which is none of the devices here (renderD128 xe, renderD131 amdgpu)\n1 problem(s)"},
		{"no such driver", []string{"-target", xeOnly.Dir}, 1, "there is no amdgpu device here (renderD128 xe)"},
		{"bad map", []string{"-target", other.Dir, "-device-map", "renderD128"}, 2, ""},
		{"no daemon", []string{"-target", t.TempDir()}, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, nil, append(append([]string{"verify"}, tc.args...), f.dir)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d; output lacks %q:\n%s%s", code, tc.code, tc.want, out, errs)
			}
			if tc.code == 0 && !strings.Contains(out, "GPU state OK") {
				t.Errorf("no verdict:\n%s", out)
			}
		})
	}
	for _, env := range []*ksimtest.Env{other, xeOnly} {
		if n := env.Kernel.Counts(); n != (kernelsim.Counts{}) {
			t.Errorf("verify -target created %+v", n)
		}
	}
}
