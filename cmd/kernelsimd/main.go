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
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"drmcr/internal/units"
	"drmcr/kernelsim"
	_ "drmcr/kernelsim/amdgpu" // the drivers register themselves
	_ "drmcr/kernelsim/xe"
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

// memLimitFlag is a size (512M) or a percentage (50%).
type memLimitFlag kernelsim.MemLimit

func (m *memLimitFlag) String() string { return kernelsim.MemLimit(*m).String() }

func (m *memLimitFlag) Set(v string) error {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 100 {
			return fmt.Errorf("%q: a percentage from 1%% to 100%%", v)
		}
		*m = memLimitFlag{Percent: n}
		return nil
	}
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	*m = memLimitFlag{Bytes: n}
	return nil
}

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
	maxConns := fs.Int(strings.TrimPrefix(kernelsim.FlagUIDMaxConns, "-"), 1024, "render-node connections one uid may have open (0: no limit; root and kernelsimd's user are exempt)")
	maxDmaBufs := fs.Int(strings.TrimPrefix(kernelsim.FlagUIDMaxDmaBufs, "-"), 4096, "dma-bufs one uid's exports may keep alive (0: no limit)")
	maxWaits := fs.Int(strings.TrimPrefix(kernelsim.FlagUIDMaxWaits, "-"), 4096, "requests one uid may have waiting at once (fence and syncobj waits, submits to paused contexts; 0: no limit)")
	maxBOMem := memLimitFlag{Percent: 50}
	fs.Var(&maxBOMem, strings.TrimPrefix(kernelsim.FlagUIDMaxBOMemory, "-"), "BO memory one uid may hold in each device's VRAM and in each device's GTT, as a size (512M) or a share of the region (50%); 0: no limit")
	reservedFDs := fs.Int(strings.TrimPrefix(kernelsim.FlagReservedFDs, "-"), 1024, "file descriptors of the daemon that limited users' connections, dma-bufs and mapped BOs may not take, kept for root, kernelsimd's user and the daemon itself (0: no reserve)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) of the time between a SIGUSR1 and the next SIGUSR2 (or the end) to this file")
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
	limits := kernelsim.Limits{
		Conns:    *maxConns,
		DmaBufs:  *maxDmaBufs,
		Waits:    *maxWaits,
		BOMemory: kernelsim.MemLimit(maxBOMem),
		Exempt:   []uint32{0, uint32(os.Getuid())},
	}
	if *maxConns < 0 || *maxDmaBufs < 0 || *maxWaits < 0 || *reservedFDs < 0 {
		return usageError{fmt.Errorf("limits must not be negative"), false}
	}
	if *reservedFDs > 0 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return fmt.Errorf("RLIMIT_NOFILE: %w", err)
		}
		if rl.Cur <= uint64(*reservedFDs) {
			return fmt.Errorf("%s %d leaves no file descriptors of RLIMIT_NOFILE %d for other users", kernelsim.FlagReservedFDs, *reservedFDs, rl.Cur)
		}
		limits.FDs = int(min(rl.Cur, 1<<30)) - *reservedFDs
	}
	if *cpuProfile != "" {
		stop := profileOnSignal(*cpuProfile)
		defer stop()
	}
	k, err := kernelsim.New(kernelsim.Config{Devices: devices, Limits: limits, Log: log.Default()})
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
		log.Printf("limits per uid other than root and %d: %d connections, %d dma-bufs, BO memory %v per region; %d file descriptors for all of them", os.Getuid(), limits.Conns, limits.DmaBufs, limits.BOMemory, limits.FDs)
		log.Printf("ready: control socket %s", kernelsim.ControlPath(*dir))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
	k.Shutdown()
	return nil
}

// profileOnSignal profiles the CPU between SIGUSR1 and SIGUSR2 into path,
// so that a benchmark profiles what it measures and not its setup. The
// returned function ends a profile still running.
func profileOnSignal(path string) func() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	var (
		mu  sync.Mutex
		out *os.File
	)
	stop := func() {
		if out != nil {
			pprof.StopCPUProfile()
			out.Close()
			out = nil
		}
	}
	go func() {
		for s := range sig {
			mu.Lock()
			stop()
			if s == syscall.SIGUSR1 {
				f, err := os.Create(path)
				if err == nil && pprof.StartCPUProfile(f) == nil {
					out = f
				} else if f != nil {
					f.Close()
				}
			}
			mu.Unlock()
		}
	}()
	return func() {
		signal.Stop(sig)
		mu.Lock()
		stop()
		mu.Unlock()
	}
}
