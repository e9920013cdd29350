package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drmcr/kernelsim"
)

// FuzzDeviceConfig: any -device spec and any -config file are read into
// devices or refused with a message naming the problem, never panic; and
// the kernel either refuses the devices read or starts and stops with
// them.
func FuzzDeviceConfig(f *testing.F) {
	f.Add("driver=amdgpu,minor=128,vram=1G,gtt=2G,gpuid=0x10020080,bandwidth=1G,iter=100us,timeout=5s,credits=4", []byte(`{"devices": ["driver=xe,minor=129"]}`))
	f.Add("minor=129,,credits=-1", []byte(`{"devices": []}`))
	f.Add("vram=0,gtt=18446744073709551615", []byte(`[1]`))
	f.Add("driver=nv", []byte(`{"devices": ["minor=1", "minor=1"]}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, spec string, config []byte) {
		var devs []kernelsim.DeviceConfig
		if dc, err := parseDevice(spec); err == nil {
			devs = append(devs, dc)
		} else if !strings.Contains(err.Error(), "device") {
			t.Fatalf("error does not say it is about the device: %v", err)
		}
		path := filepath.Join(dir, "config.json")
		if err := os.WriteFile(path, config, 0o600); err != nil {
			t.Fatal(err)
		}
		if fromFile, err := readConfig(path); err == nil {
			if len(fromFile) == 0 {
				t.Fatal("a config of no devices was accepted")
			}
			devs = append(devs, fromFile...)
		} else if !strings.Contains(err.Error(), "config") {
			t.Fatalf("error does not name the config: %v", err)
		}
		if len(devs) == 0 {
			return
		}
		for i := range devs {
			// Keep what the kernel allocates up front small.
			devs[i].VRAMSize = min(devs[i].VRAMSize, 1<<20)
			devs[i].GTTSize = min(devs[i].GTTSize, 1<<20)
		}
		k, err := kernelsim.New(kernelsim.Config{Devices: devs})
		if err == nil {
			k.Shutdown()
		}
	})
}
