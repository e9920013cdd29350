// Package amdgpu is the kernel side of the simulated amdgpu driver: a
// classic scheduler (one ring per device, shared by every context), the
// VA ioctl (VM_MAP, VM_UNMAP) and its driver blob (uapi.DriverPrivate:
// contexts with their preempted work, syncobjs, sw_sync timelines).
// Contexts, SUBMIT and syncobjs are the core's (package kernelsim).
//
// Importing the package registers the driver with kernelsim (as a driver
// module registers with the drm core).
package amdgpu

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// Name is the driver's name.
const Name = "amdgpu"

func init() { kernelsim.RegisterDriver(Driver{}) }

// Driver is the amdgpu driver.
type Driver struct{}

// Info implements kernelsim.Driver.
func (Driver) Info() kernelsim.DriverInfo {
	return kernelsim.DriverInfo{Name: Name, Sched: sched.Classic, GEMFlags: 0xff, VAMax: 1 << 47, PageShift: 12, Vendor: 0x1002}
}

var ioctls = map[uapi.Op]kernelsim.Ioctl{
	uapi.OpVmMap: {
		Request: func() proto.Message { return &uapi.VmMapRequest{} },
		Reply:   func() proto.Message { return &uapi.Empty{} },
		Run: func(_ context.Context, f *kernelsim.File, m proto.Message) (proto.Message, error) {
			r := m.(*uapi.VmMapRequest)
			return &uapi.Empty{}, f.VMMap(r.Handle, r.BoOffset, r.Va, r.Size, r.Flags)
		},
	},
	uapi.OpVmUnmap: {
		Request: func() proto.Message { return &uapi.VmUnmapRequest{} },
		Reply:   func() proto.Message { return &uapi.Empty{} },
		Run: func(_ context.Context, f *kernelsim.File, m proto.Message) (proto.Message, error) {
			return &uapi.Empty{}, f.VMUnmap(m.(*uapi.VmUnmapRequest).Va)
		},
	},
}

// Ioctls implements kernelsim.Driver.
func (Driver) Ioctls() map[uapi.Op]kernelsim.Ioctl { return ioctls }

// Open implements kernelsim.Driver.
func (Driver) Open(f *kernelsim.File) kernelsim.FilePriv { return file{f} }

// CheckBlob implements kernelsim.Driver.
func (Driver) CheckBlob(blob []byte, minor uint32) error {
	_, err := decode(blob, minor)
	return err
}

// errBlob marks a blob this kernel cannot restore.
var errBlob = errors.New("driver state")

// decode parses a blob for a device at renderD<minor> and checks its
// version and driver.
func decode(blob []byte, minor uint32) (*uapi.DriverPrivate, error) {
	priv := &uapi.DriverPrivate{}
	if err := proto.Unmarshal(blob, priv); err != nil {
		return nil, fmt.Errorf("%w: %v", errBlob, err)
	}
	if priv.Version != kernelsim.DriverPrivateVersion {
		return nil, fmt.Errorf("%w: version %d, this kernel reads %d", errBlob, priv.Version, kernelsim.DriverPrivateVersion)
	}
	if priv.Driver != Name {
		return nil, fmt.Errorf("%w: for driver %q, device renderD%d is %q", errBlob, priv.Driver, minor, Name)
	}
	return priv, nil
}

// file is amdgpu's state of a drm file: nothing beyond the core's.
type file struct{ f *kernelsim.File }

// Postclose implements kernelsim.FilePriv.
func (file) Postclose() {}

// Checkpoint implements kernelsim.FilePriv: contexts with their
// preempted work, syncobjs and sw_sync timelines.
func (a file) Checkpoint(cp *kernelsim.DriverCheckpoint) ([]byte, error) {
	priv := &uapi.DriverPrivate{Version: kernelsim.DriverPrivateVersion, Driver: Name}
	for _, c := range cp.Contexts() {
		cs, err := cp.Context(c)
		if err != nil {
			return nil, err
		}
		priv.Contexts = append(priv.Contexts, cs)
	}
	var err error
	if priv.Syncobjs, priv.SwSyncs, err = cp.Syncobjs(); err != nil {
		return nil, err
	}
	blob, err := proto.Marshal(priv)
	if err != nil {
		return nil, fmt.Errorf("driver state: %w", err)
	}
	return blob, nil
}

// Restore implements kernelsim.FilePriv.
func (a file) Restore(rs *kernelsim.DriverRestore, blob []byte) error {
	priv, err := decode(blob, a.f.Device().Minor())
	if err != nil {
		return err
	}
	for _, cs := range priv.Contexts {
		if _, err := rs.Context(cs, nil, false); err != nil {
			return err
		}
	}
	return rs.Syncobjs(priv.Syncobjs, priv.SwSyncs)
}
