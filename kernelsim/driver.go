package kernelsim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// DriverInfo is what the core knows of a driver before any file is open:
// how its GPU schedules work and the rules of its BOs and address space.
type DriverInfo struct {
	Name      string
	Sched     sched.Mode // Classic: one ring per device; Firmware: one scheduler per context
	GEMFlags  uint64     // every flag bit the driver accepts at GEM create
	VAMax     uint64     // end of the GPU virtual address space
	PageShift uint
	Vendor    uint16 // PCI vendor id, the top half of default gpu ids
}

// Ioctl is one of a driver's own ioctls (drm_driver.ioctls): the
// messages of its request and reply, and its handler, which runs on the
// file with the decoded request. The core decodes the request (refusing
// unknown content and file descriptors), so a handler sees well-formed
// input only.
type Ioctl struct {
	Request func() proto.Message
	Reply   func() proto.Message
	Run     func(ctx context.Context, f *File, req proto.Message) (proto.Message, error)
}

// Driver is a simulated DRM driver: the hooks the core calls, as Linux's
// drm core calls a struct drm_driver. The core never tests which driver
// it runs; a driver's kernel side lives in a package of its own
// (kernelsim/xe) and registers itself with RegisterDriver.
type Driver interface {
	Info() DriverInfo
	// Ioctls are the driver's own requests, beside the core's.
	Ioctls() map[uapi.Op]Ioctl
	// Open makes the driver's state of a new drm file (drm_driver.open).
	// Called with the kernel lock held.
	Open(f *File) FilePriv
	// CheckBlob decodes a driver blob for a restore on renderD<minor>
	// and checks what the kernel would refuse, creating nothing
	// (kernelsim.CheckRestore).
	CheckBlob(blob []byte, minor uint32) error
}

// FilePriv is a driver's state of one drm file (drm_file.driver_priv).
// Every method is called with the kernel lock held.
type FilePriv interface {
	// Postclose releases the state once the file's contexts are torn
	// down, before its handles go (drm_driver.postclose).
	Postclose()
	// Checkpoint makes the driver blob of a paused, frozen file.
	Checkpoint(cp *DriverCheckpoint) ([]byte, error)
	// Restore fills a new file from its driver blob.
	Restore(rs *DriverRestore, blob []byte) error
}

// Preempter is implemented by the driver data of a context (see
// File.NewContext) that a checkpoint stops in its own way instead of
// draining it: xe preempts a long-running exec queue through its preempt
// fence. Preempt returns once the context runs nothing and takes no work;
// Resume undoes it.
type Preempter interface {
	Preempt(ctx context.Context) error
	Resume()
}

// driver is a registered driver with its information at hand.
type driver struct {
	name      string
	mode      sched.Mode
	gemFlags  uint64
	vaMax     uint64
	pageShift uint
	vendor    uint16
	impl      Driver
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]driver{}
)

// RegisterDriver makes a driver available to DeviceConfig.Driver, as a
// driver module registers with the drm core. A driver's package does it
// when it is imported (import _ "drmcr/kernelsim/xe"). Registering a name
// twice panics: it is a build mistake, not an input.
func RegisterDriver(d Driver) {
	info := d.Info()
	driversMu.Lock()
	defer driversMu.Unlock()
	if _, dup := drivers[info.Name]; dup || info.Name == "" {
		panic(fmt.Sprintf("kernelsim: driver %q registered twice or unnamed", info.Name))
	}
	drivers[info.Name] = driver{
		name: info.Name, mode: info.Sched, gemFlags: info.GEMFlags, vaMax: info.VAMax,
		pageShift: info.PageShift, vendor: info.Vendor, impl: d,
	}
}

// Drivers lists the driver names a DeviceConfig may use.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	out := make([]string, 0, len(drivers))
	for n := range drivers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func lookupDriver(name string) (driver, bool) {
	driversMu.RLock()
	defer driversMu.RUnlock()
	d, ok := drivers[name]
	return d, ok
}

// driverIoctl finds a driver's own ioctl; ENOTTY when the device's driver
// has none of that number (another driver's, or none at all).
func driverIoctl(f *File, op uapi.Op) (Ioctl, bool) {
	if f == nil {
		return Ioctl{}, false
	}
	io, ok := f.dev.drv.impl.Ioctls()[op]
	return io, ok
}

// runDriverIoctl decodes a driver request and runs it.
func runDriverIoctl(io Ioctl, r *request, payload []byte, fds []int) (proto.Message, int, *DmaBuf, error) {
	if err := noFDs(fds); err != nil {
		return nil, -1, nil, err
	}
	req := io.Request()
	if err := proto.Unmarshal(payload, req); err != nil {
		return nil, -1, nil, errnof(syscall.EINVAL, "malformed request: %v", err)
	}
	reply, err := io.Run(r, r.c.f, req)
	return reply, -1, nil, err
}

// driverMessages returns the messages of a driver ioctl of any registered
// driver, for the checks of requests and replies caught in flight.
func driverMessages(op uapi.Op) (req, reply func() proto.Message, ok bool) {
	driversMu.RLock()
	defer driversMu.RUnlock()
	for _, d := range drivers {
		if io, found := d.impl.Ioctls()[op]; found {
			return io.Request, io.Reply, true
		}
	}
	return nil, nil, false
}

// Errnof makes an error that a reply carries as -errno, for drivers.
func Errnof(errno syscall.Errno, format string, args ...any) error {
	return errnof(errno, format, args...)
}
