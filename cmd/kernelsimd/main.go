// Command kernelsimd serves the simulated DRM kernel to real processes:
// one SOCK_SEQPACKET render node per simulated GPU under
// <runtime dir>/dri/renderD<minor>, and a privileged control socket.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"drmcr/internal/units"
	"drmcr/kernelsim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kernelsimd:", err)
		os.Exit(1)
	}
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
	for _, kv := range strings.Split(spec, ",") {
		if kv == "" {
			continue
		}
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			return dc, fmt.Errorf("device %q: %q is not key=value", spec, kv)
		}
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
			return dc, fmt.Errorf("device %q: unknown key %q", spec, key)
		}
		if err != nil {
			return dc, fmt.Errorf("device %q: %s: %w", spec, key, err)
		}
	}
	return dc, nil
}

// fileConfig is the -config file: {"devices": ["driver=amdgpu,minor=128", ...]}.
type fileConfig struct {
	Devices []string `json:"devices"`
}

func run(args []string) error {
	fs := flag.NewFlagSet("kernelsimd", flag.ContinueOnError)
	dir := fs.String("runtime-dir", kernelsim.RuntimeDirFromEnv(), "directory for the render node and control sockets (default from KERNELSIM_RUNTIME_DIR)")
	config := fs.String("config", "", "JSON file: {\"devices\": [\"driver=amdgpu,minor=128,...\"]}")
	var devices deviceFlags
	fs.Var(&devices, "device", "a simulated GPU, as driver=amdgpu,minor=128,vram=1G,gtt=2G,gpuid=N,bandwidth=1G,iter=100us,timeout=5s,credits=4 (repeatable; default: one amdgpu at renderD128)")
	quiet := fs.Bool("q", false, "do not print the ready line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *config != "" {
		data, err := os.ReadFile(*config)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		var fc fileConfig
		if err := json.Unmarshal(data, &fc); err != nil {
			return fmt.Errorf("config %s: %w", *config, err)
		}
		for _, spec := range fc.Devices {
			if err := devices.Set(spec); err != nil {
				return fmt.Errorf("config %s: %w", *config, err)
			}
		}
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
