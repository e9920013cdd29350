package kernelsim

import (
	"fmt"
	"syscall"

	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// Device is one simulated GPU and its render node.
type Device struct {
	k      *Kernel
	cfg    DeviceConfig
	drv    driver
	engine *gpu.Engine
	ring   *sched.Scheduler // the shared ring of a classic-scheduled device

	// accounting, under k.mu
	vramUsed, gttUsed uint64
}

func newDevice(k *Kernel, cfg DeviceConfig) (*Device, error) {
	drv, ok := lookupDriver(cfg.Driver)
	if !ok {
		return nil, fmt.Errorf("unknown driver %q (have %v)", cfg.Driver, Drivers())
	}
	if cfg.RingCredits <= 0 {
		cfg.RingCredits = 4
	}
	if cfg.GPUID == 0 {
		cfg.GPUID = uint32(drv.vendor)<<16 | cfg.Minor&0xffff
	}
	d := &Device{k: k, cfg: cfg, drv: drv}
	d.engine = gpu.NewEngine(gpu.EngineConfig{Clock: k.clock, Bandwidth: cfg.Bandwidth, IterTime: cfg.IterTime})
	if drv.mode == sched.Classic {
		d.ring = d.newScheduler(fmt.Sprintf("renderD%d-gfx", cfg.Minor))
	}
	return d, nil
}

// newScheduler creates a scheduler with its own hardware queue: the
// device's one ring (classic), or one firmware queue per context, which
// the engine executes in parallel with the other contexts' queues.
func (d *Device) newScheduler(name string) *sched.Scheduler {
	be := &backend{Backend: gpu.NewBackend(d.engine, d.drv.name+":"+name), k: d.k}
	return sched.New(sched.Config{
		Name:    name,
		Credits: d.cfg.RingCredits,
		Timeout: d.cfg.JobTimeout,
		Clock:   d.k.clock,
		Mode:    d.drv.mode,
	}, be)
}

func (d *Device) fini() {
	if d.ring != nil {
		d.ring.Fini()
	}
}

// Config returns the device's configuration.
func (d *Device) Config() DeviceConfig { return d.cfg }

// Driver returns the driver name.
func (d *Device) Driver() string { return d.drv.name }

// Minor returns the render node minor.
func (d *Device) Minor() uint32 { return d.cfg.Minor }

// charge accounts size bytes of the domain; ENOMEM when it does not fit.
// Called with k.mu held.
func (d *Device) charge(domain uapi.Domain, size uint64) error {
	switch domain {
	case uapi.Domain_DOMAIN_VRAM:
		if size > d.cfg.VRAMSize-d.vramUsed {
			return errnof(syscall.ENOMEM, "VRAM exhausted: %d of %d bytes used, %d requested", d.vramUsed, d.cfg.VRAMSize, size)
		}
		d.vramUsed += size
	case uapi.Domain_DOMAIN_GTT:
		if size > d.cfg.GTTSize-d.gttUsed {
			return errnof(syscall.ENOMEM, "GTT exhausted: %d of %d bytes used, %d requested", d.gttUsed, d.cfg.GTTSize, size)
		}
		d.gttUsed += size
	default:
		return errnof(syscall.EINVAL, "bad domain %d", domain)
	}
	return nil
}

// domainSize is the capacity of a memory domain.
func (d *Device) domainSize(domain uapi.Domain) uint64 {
	if domain == uapi.Domain_DOMAIN_VRAM {
		return d.cfg.VRAMSize
	}
	return d.cfg.GTTSize
}

func (d *Device) uncharge(domain uapi.Domain, size uint64) {
	switch domain {
	case uapi.Domain_DOMAIN_VRAM:
		d.vramUsed -= size
	case uapi.Domain_DOMAIN_GTT:
		d.gttUsed -= size
	}
}

// info describes the device for the control socket and the restore checks.
func (d *Device) info() *uapi.DeviceInfo {
	return &uapi.DeviceInfo{Minor: d.cfg.Minor, Driver: d.drv.name, GpuId: d.cfg.GPUID, VramSize: d.cfg.VRAMSize, GttSize: d.cfg.GTTSize}
}

// DeviceInfos describes the kernel's devices, in minor order.
func (k *Kernel) DeviceInfos() []*uapi.DeviceInfo {
	out := make([]*uapi.DeviceInfo, 0, len(k.devices))
	for _, d := range k.devices {
		out = append(out, d.info())
	}
	return out
}
