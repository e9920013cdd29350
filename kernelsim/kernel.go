package kernelsim

import (
	"fmt"
	"log"
	"sort"
	"sync"
	"time"

	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/sched"
)

// DeviceConfig describes one simulated GPU.
type DeviceConfig struct {
	Driver string // "amdgpu" (classic scheduler) or "xe" (firmware scheduler)
	Minor  uint32 // render node minor: the socket is dri/renderD<Minor>
	// GPUID identifies the device in checkpoints, like a KFD topology
	// gpu_id; unique per kernel. 0 derives it from the driver's PCI
	// vendor and the minor: 0x1002_0080 for amdgpu at renderD128.
	GPUID    uint32
	VRAMSize uint64
	GTTSize  uint64
	// Bandwidth of the simulated GPU in bytes per second; 0 = instantaneous.
	Bandwidth uint64
	// IterTime is the run time of one iteration of a compute loop.
	IterTime time.Duration
	// JobTimeout is the TDR timeout of regular jobs; 0 disables it.
	JobTimeout time.Duration
	// RingCredits bounds the jobs in flight on a classic ring.
	RingCredits int
}

// Config configures a Kernel.
type Config struct {
	Devices []DeviceConfig
	// Clock drives GPU run time and timeouts; nil means the real clock.
	Clock ktime.Clock
	// Limits bound what each user may hold; the zero value limits nobody.
	Limits Limits
	// Log receives the kernel's and the server's messages (refusals),
	// rate-limited; nil means the standard logger.
	Log *log.Logger
}

// DefaultDevice is the device a daemon without configuration simulates.
func DefaultDevice() DeviceConfig {
	return DeviceConfig{
		Driver:      "amdgpu",
		Minor:       128,
		VRAMSize:    1 << 30,
		GTTSize:     2 << 30,
		Bandwidth:   1 << 30,
		IterTime:    100 * time.Microsecond,
		JobTimeout:  5 * time.Second,
		RingCredits: 4,
	}
}

// Kernel is one simulated kernel: its devices and every object on them.
type Kernel struct {
	clock ktime.Clock
	log   *rateLog
	acct  *accounting

	mu       sync.Mutex
	devices  []*Device
	files    map[uint64]*File
	bos      map[uint64]*BO
	dmabufs  map[uint64]*DmaBuf // by client-side inode
	sessions map[string]*Session
	jobs     map[*sched.Job]*jobInfo
	memfds   map[memKey]*BO // BO memory that clients map, by file
	maps     *mapWatch      // started with the first mapped BO
	nextFile uint64
	nextBO   uint64
	nextBuf  uint64
}

// New creates a kernel with the configured devices.
func New(cfg Config) (*Kernel, error) {
	if len(cfg.Devices) == 0 {
		cfg.Devices = []DeviceConfig{DefaultDevice()}
	}
	clock := cfg.Clock
	if clock == nil {
		clock = ktime.Real()
	}
	rl := newRateLog(cfg.Log)
	k := &Kernel{
		clock:    clock,
		log:      rl,
		acct:     newAccounting(cfg.Limits, rl),
		files:    make(map[uint64]*File),
		bos:      make(map[uint64]*BO),
		dmabufs:  make(map[uint64]*DmaBuf),
		sessions: make(map[string]*Session),
		jobs:     make(map[*sched.Job]*jobInfo),
		memfds:   make(map[memKey]*BO),
	}
	if err := k.addDevices(cfg.Devices); err != nil {
		for _, d := range k.devices {
			d.fini()
		}
		return nil, err
	}
	sort.Slice(k.devices, func(i, j int) bool { return k.devices[i].cfg.Minor < k.devices[j].cfg.Minor })
	return k, nil
}

// addDevices creates the configured devices; minors and gpu ids must be
// unique, as they are on a real system.
func (k *Kernel) addDevices(cfgs []DeviceConfig) error {
	minors := map[uint32]bool{}
	gpuIDs := map[uint32]*Device{}
	for _, dc := range cfgs {
		if minors[dc.Minor] {
			return fmt.Errorf("device minor %d configured twice", dc.Minor)
		}
		minors[dc.Minor] = true
		d, err := newDevice(k, dc)
		if err != nil {
			return fmt.Errorf("device renderD%d: %w", dc.Minor, err)
		}
		k.devices = append(k.devices, d)
		if o := gpuIDs[d.cfg.GPUID]; o != nil {
			return fmt.Errorf("devices renderD%d and renderD%d both have gpu id %#x: gpu ids must be unique (a default id is the driver's PCI vendor and the minor's low 16 bits)", o.cfg.Minor, dc.Minor, d.cfg.GPUID)
		}
		gpuIDs[d.cfg.GPUID] = d
	}
	return nil
}

// Devices returns the kernel's devices, ordered by minor.
func (k *Kernel) Devices() []*Device { return append([]*Device(nil), k.devices...) }

// Device returns the device with the given minor, or nil.
func (k *Kernel) Device(minor uint32) *Device {
	for _, d := range k.devices {
		if d.cfg.Minor == minor {
			return d
		}
	}
	return nil
}

// Counts is a census of live objects, for leak checks.
type Counts struct {
	Files, BOs, DmaBufs, Sessions int
}

// Counts returns how many objects of each kind are alive.
func (k *Kernel) Counts() Counts {
	k.mu.Lock()
	defer k.mu.Unlock()
	return Counts{Files: len(k.files), BOs: len(k.bos), DmaBufs: len(k.dmabufs), Sessions: len(k.sessions)}
}

// Shutdown closes every file, which cancels outstanding work, and stops the
// devices' schedulers.
func (k *Kernel) Shutdown() {
	k.mu.Lock()
	files := make([]*File, 0, len(k.files))
	for _, f := range k.files {
		files = append(files, f)
	}
	k.mu.Unlock()
	for _, f := range files {
		f.Close()
	}
	for _, d := range k.devices {
		d.fini()
	}
	k.stopMapWatch()
}
