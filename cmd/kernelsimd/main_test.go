package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drmcr/kernelsim"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigRefusesMistakes: a config with a typo, no devices or the
// wrong shape is refused with a message naming the problem, before
// anything is served.
func TestConfigRefusesMistakes(t *testing.T) {
	for _, tc := range []struct{ text, msg string }{
		{`{"device": ["driver=amdgpu,minor=129"]}`, `unknown key "device" (the only key is "devices")`},
		{`{"devices": ["minor=129"], "verbose": true, "Devices": []}`, `unknown key "Devices", "verbose"`},
		{`{"devices": []}`, "no devices"},
		{`{}`, "no devices"},
		{`null`, "no devices"},
		{`["driver=amdgpu"]`, "want a JSON object"},
		{`{"devices": "driver=amdgpu"}`, "devices"},
		{`{"devices": ["driver=amdgpu,mnior=129"]}`, `unknown key "mnior"`},
		{`{"devices": ["minor=129,minor=130"]}`, "minor given twice"},
		{`{"devices": [`, "unexpected end of JSON input"},
	} {
		path := writeConfig(t, tc.text)
		if _, err := readConfig(path); err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) {
			t.Errorf("config %s: error %v, want one naming the file and %q", tc.text, err, tc.msg)
		}
		// The daemon stops before it serves anything.
		dir := t.TempDir()
		if err := run([]string{"-q", "-runtime-dir", dir, "-config", path}); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("kernelsimd -config %s: %v, want %q", tc.text, err, tc.msg)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("kernelsimd -config %s created %v", tc.text, ents)
		}
	}
}

// TestConfigDevices: every entry is a -device spec on top of the defaults.
func TestConfigDevices(t *testing.T) {
	path := writeConfig(t, `{"devices": ["driver=amdgpu,minor=128", "driver=xe,minor=129,vram=512M,gpuid=0x42"]}`)
	devs, err := readConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	def := kernelsim.DefaultDevice()
	want := []kernelsim.DeviceConfig{def, def}
	want[1].Driver, want[1].Minor, want[1].VRAMSize, want[1].GPUID = "xe", 129, 512<<20, 0x42
	if len(devs) != 2 || devs[0] != want[0] || devs[1] != want[1] {
		t.Errorf("devices %+v, want %+v", devs, want)
	}
}

// TestDeviceSpecErrors: a -device spec names what is wrong with it.
func TestDeviceSpecErrors(t *testing.T) {
	for _, tc := range []struct{ spec, msg string }{
		{"driver=amdgpu,minor", `"minor" is not key=value`},
		{"gpu=1", `unknown key "gpu" (keys: driver, minor, gpuid`},
		{"vram=1G,vram=2G", "vram given twice"},
		{"minor=x", "minor: strconv.ParseUint"},
		{"vram=99999999999T", "does not fit in 64 bits"},
	} {
		if _, err := parseDevice(tc.spec); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("-device %s: %v, want %q", tc.spec, err, tc.msg)
		}
	}
}

// TestDuplicateGPUIDs: two devices given the same gpu id are refused.
func TestDuplicateGPUIDs(t *testing.T) {
	dir := t.TempDir()
	err := run([]string{"-q", "-runtime-dir", dir, "-device", "minor=128,gpuid=7", "-device", "driver=xe,minor=129,gpuid=7"})
	if err == nil || !strings.Contains(err.Error(), "devices renderD128 and renderD129 both have gpu id 0x7") {
		t.Errorf("duplicate gpu ids: %v", err)
	}
}
