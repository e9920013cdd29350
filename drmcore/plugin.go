package drmcore

import (
	"fmt"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/uapi"
)

// Version is the plugin's version, recorded in the inventory.
const Version = "0.1.0"

// Config configures a Plugin.
type Config struct {
	Log Logger
	// ImageDir is CRIU's images directory.
	ImageDir *images.Dir
	// RuntimeDir is kernelsimd's runtime directory.
	RuntimeDir string
	// PauseTimeout bounds how long PAUSE_DEVICES waits for a process's
	// contexts to drain.
	PauseTimeout time.Duration
	// ResumeTimeout bounds how long RESUME_DEVICES_LATE waits for the
	// task's BO contents.
	ResumeTimeout time.Duration
	Drivers       []DriverPlugin
	DmaBuf        DmaBufPlugin
	// DeviceMap maps devices of a checkpoint onto the kernel's explicitly
	// (DRMCR_DEVICE_MAP); the devices it leaves out are mapped by
	// default (MapDevices).
	DeviceMap DeviceMap
	// Checksum is the algorithm a dump checksums BO contents with
	// (DRMCR_CHECKSUM; 0: uapi.DefaultChecksum). A restore uses the one
	// the checkpoint's index names.
	Checksum uapi.Checksum
	// PagesFiles is how many pages files a dump writes BO contents into,
	// side by side (DRMCR_PAGES_FILES; 0: one per CPU, at most
	// MaxPagesFiles).
	PagesFiles int
	// KillTask kills a restored task whose GPU state cannot be resumed
	// (see ResumeDevicesLate); nil means SIGKILL. Tests that stand in for
	// the restored task record the call instead.
	KillTask func(pid int) error
}

// Settings are the names of the plugin's settings, which ConfigFromEnv
// reads.
var Settings = []string{"KERNELSIM_RUNTIME_DIR", "DRMCR_PAUSE_TIMEOUT", "DRMCR_RESUME_TIMEOUT", DeviceMapSetting, "DRMCR_CHECKSUM", "DRMCR_PAGES_FILES"}

// ConfigFromEnv fills RuntimeDir, the timeouts and the device map from
// the environment variables getenv returns: KERNELSIM_RUNTIME_DIR,
// DRMCR_PAUSE_TIMEOUT and DRMCR_RESUME_TIMEOUT (Go durations, e.g. "5s"),
// DRMCR_DEVICE_MAP (ParseDeviceMap), DRMCR_CHECKSUM (uapi.ParseChecksum's
// names), DRMCR_PAGES_FILES (1 to MaxPagesFiles).
//
// getenv reads criu's environment, which the plugin's C part forwards to
// the helper process (criu's own process title may overwrite the initial
// environment block, so the helper's os.Getenv would not do).
func ConfigFromEnv(cfg Config, getenv func(string) string) (Config, error) {
	cfg.RuntimeDir = getenv("KERNELSIM_RUNTIME_DIR")
	if cfg.RuntimeDir == "" {
		cfg.RuntimeDir = kernelsim.DefaultRuntimeDir
	}
	cfg.PauseTimeout = 5 * time.Second
	cfg.ResumeTimeout = time.Minute
	for _, v := range []struct {
		name string
		dst  *time.Duration
	}{{"DRMCR_PAUSE_TIMEOUT", &cfg.PauseTimeout}, {"DRMCR_RESUME_TIMEOUT", &cfg.ResumeTimeout}} {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("%s=%q: want a positive duration such as 5s", v.name, s)
		}
		*v.dst = d
	}
	m, err := ParseDeviceMap(getenv(DeviceMapSetting))
	if err != nil {
		return cfg, err
	}
	cfg.DeviceMap = m
	if s := getenv("DRMCR_CHECKSUM"); s != "" {
		alg, err := uapi.ParseChecksum(s)
		if err != nil {
			return cfg, fmt.Errorf("DRMCR_CHECKSUM: %w", err)
		}
		cfg.Checksum = alg
	}
	if s := getenv("DRMCR_PAGES_FILES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPagesFiles {
			return cfg, fmt.Errorf("DRMCR_PAGES_FILES=%q: want a count from 1 to %d", s, MaxPagesFiles)
		}
		cfg.PagesFiles = n
	}
	return cfg, nil
}

// Plugin is the top-level DRM plugin. One instance lives for one criu
// dump or restore.
type Plugin struct {
	cfg     Config
	log     Logger
	drivers map[string]DriverPlugin
	stage   Stage
	started time.Time   // when the stage began, for its summary
	ctl     *ctl.Client // nil when no kernelsimd runs: nothing is ours

	dump    *dumpState
	restore *restoreState
}

// New creates the plugin.
func New(cfg Config) *Plugin {
	if cfg.Checksum == 0 {
		cfg.Checksum = uapi.DefaultChecksum
	}
	if cfg.PagesFiles <= 0 {
		cfg.PagesFiles = min(runtime.NumCPU(), MaxPagesFiles)
	}
	if cfg.KillTask == nil {
		cfg.KillTask = func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
	}
	p := &Plugin{cfg: cfg, log: cfg.Log, drivers: map[string]DriverPlugin{}}
	for _, d := range cfg.Drivers {
		p.drivers[d.Driver()] = d
	}
	return p
}

// Init starts a stage: it connects to kernelsimd, and for a restore reads
// the images and opens the restore session.
func (p *Plugin) Init(stage Stage) error {
	p.stage, p.started = stage, time.Now()
	switch stage {
	case StageDump, StagePreDump:
		p.dump = newDumpState()
		p.connect()
		return nil
	case StageRestore:
		return p.initRestore()
	}
	return fmt.Errorf("unknown criu stage %d", stage)
}

// connect dials kernelsimd. Without a daemon there can be no kernelsim
// files, so the plugin stays out of the way.
func (p *Plugin) connect() {
	c, err := ctl.Dial(p.cfg.RuntimeDir)
	if err != nil {
		p.log.Infof("no kernelsimd at %s (%v): no GPU state to handle", p.cfg.RuntimeDir, err)
		return
	}
	p.ctl = c
}

// Fini ends the stage. After a dump, whatever is still paused resumes,
// whether the dump failed, succeeded or left the tasks running; the
// inventory says whether the dump is complete. After a restore, the
// session closes; on failure it destroys everything it created.
func (p *Plugin) Fini(stage Stage, ret int) {
	defer func() {
		if p.ctl != nil {
			p.ctl.Close()
			p.ctl = nil
		}
	}()
	switch stage {
	case StageDump, StagePreDump:
		p.finiDump(ret)
	case StageRestore:
		p.finiRestore(ret)
	}
}
