// Command kernelsimd serves the simulated DRM kernel to real processes:
// one SOCK_SEQPACKET render node per simulated GPU under
// <runtime dir>/dri/renderD<minor>, and a privileged control socket.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"drmcr/internal/units"
	"drmcr/kernelsim"
)

func main() {
	err := run(os.Args[1:])
	var ue usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &ue):
		if !ue.printed { // the flag package prints its own
			fmt.Fprintln(os.Stderr, "kernelsimd:", err)
		}
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "kernelsimd:", err)
		os.Exit(1)
	}
}

// usageError is a command-line mistake (exit status 2).
type usageError struct {
	error
	printed bool
}

// deviceFlags collects repeated -device flags.
type deviceFlags []kernelsim.DeviceConfig

func (d *deviceFlags) String() string { return fmt.Sprint(len(*d), " devices") }

func (d *deviceFlags) Set(v string) error {
	dc, err := parseDevice(v)
	if err != nil {
		return err
	}
	*d = append(*d, dc)
	return nil
}

// parseDevice reads "driver=amdgpu,minor=129,vram=512M,gtt=1G,gpuid=0x1234,
// bandwidth=1G,iter=100us,timeout=5s,credits=4" on top of the defaults.
func parseDevice(spec string) (kernelsim.DeviceConfig, error) {
	dc := kernelsim.DefaultDevice()
	seen := map[string]bool{}
	for _, kv := range strings.Split(spec, ",") {
		if kv == "" {
			continue
		}
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			return dc, fmt.Errorf("device %q: %q is not key=value", spec, kv)
		}
		if seen[key] {
			return dc, fmt.Errorf("device %q: %s given twice", spec, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "driver":
			dc.Driver = val
		case "minor":
			var n uint64
			n, err = strconv.ParseUint(val, 0, 32)
			dc.Minor = uint32(n)
		case "gpuid":
			var n uint64
			n, err = strconv.ParseUint(val, 0, 32)
			dc.GPUID = uint32(n)
		case "vram":
			dc.VRAMSize, err = units.ParseSize(val)
		case "gtt":
			dc.GTTSize, err = units.ParseSize(val)
		case "bandwidth":
			dc.Bandwidth, err = units.ParseSize(val)
		case "iter":
			dc.IterTime, err = time.ParseDuration(val)
		case "timeout":
			dc.JobTimeout, err = time.ParseDuration(val)
		case "credits":
			dc.RingCredits, err = strconv.Atoi(val)
		default:
			return dc, fmt.Errorf("device %q: unknown key %q (keys: %s)", spec, key, deviceKeys)
		}
		if err != nil {
			return dc, fmt.Errorf("device %q: %s: %w", spec, key, err)
		}
	}
	return dc, nil
}

// deviceKeys are the keys of a -device spec.
const deviceKeys = "driver, minor, gpuid, vram, gtt, bandwidth, iter, timeout, credits"

// fileConfig is the -config file: {"devices": ["driver=amdgpu,minor=128", ...]}.
type fileConfig struct {
	Devices []string `json:"devices"`
}

// readConfig reads a -config file. Anything but one object with a
// non-empty "devices" list is refused, so a typo never silently starts
// the default device.
func readConfig(path string) ([]kernelsim.DeviceConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("config %s: want a JSON object, {\"devices\": [...]}, not a JSON %s", path, te.Value)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var unknown []string
	for k := range keys {
		if k != "devices" {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("config %s: unknown key %s (the only key is \"devices\")", path, strings.Join(unknown, ", "))
	}
	var fc fileConfig
	if err := json.Unmarshal(data, &fc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(fc.Devices) == 0 {
		return nil, fmt.Errorf("config %s: no devices (want {\"devices\": [\"driver=amdgpu,minor=128\", ...]})", path)
	}
	var devs deviceFlags
	for _, spec := range fc.Devices {
		if err := devs.Set(spec); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	return devs, nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("kernelsimd", flag.ContinueOnError)
	dir := fs.String("runtime-dir", kernelsim.RuntimeDirFromEnv(), "`directory` for the render node and control sockets ($KERNELSIM_RUNTIME_DIR when set)")
	config := fs.String("config", "", "JSON `file`: {\"devices\": [\"driver=amdgpu,minor=128,...\", ...]}, each entry a -device spec; unknown keys are refused")
	var devices deviceFlags
	fs.Var(&devices, "device", "a simulated GPU, as the `spec` driver=amdgpu,minor=128,vram=1G,gtt=2G,gpuid=N,bandwidth=1G,iter=100us,timeout=5s,credits=4 (repeatable; keys left out take these defaults; gpuid defaults to the driver's PCI vendor and the minor, 0x10020080 for amdgpu at minor 128, and must be unique; drivers: amdgpu, xe; default: one amdgpu at renderD128)")
	quiet := fs.Bool("q", false, "do not print the ready line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err, true}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args()), false}
	}
	if *config != "" {
		devs, err := readConfig(*config)
		if err != nil {
			return err
		}
		devices = append(devices, devs...)
	}
	k, err := kernelsim.New(kernelsim.Config{Devices: devices})
	if err != nil {
		return err
	}
	srv, err := kernelsim.Serve(k, *dir)
	if err != nil {
		return err
	}
	if !*quiet {
		for _, d := range k.Devices() {
			c := d.Config()
			log.Printf("renderD%d: %s gpu %#x, VRAM %d MiB, GTT %d MiB at %s", c.Minor, c.Driver, c.GPUID, c.VRAMSize>>20, c.GTTSize>>20, kernelsim.RenderNodePath(*dir, c.Minor))
		}
		log.Printf("ready: control socket %s", kernelsim.ControlPath(*dir))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
	k.Shutdown()
	return nil
}
