package kernelsim

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// amdgpuDriver is the amdgpu driver's kernel side: a classic scheduler
// (one ring per device, shared by every context), the VA ioctl, and its
// driver blob (uapi.DriverPrivate). Contexts, submission and syncobjs are
// the core's.
type amdgpuDriver struct{}

func (amdgpuDriver) Info() DriverInfo {
	return DriverInfo{Name: "amdgpu", Sched: sched.Classic, GEMFlags: 0xff, VAMax: 1 << 47, PageShift: 12, Vendor: 0x1002}
}

var amdgpuIoctls = map[uapi.Op]Ioctl{
	uapi.OpVmMap: {
		Request: func() proto.Message { return &uapi.VmMapRequest{} },
		Reply:   func() proto.Message { return &uapi.Empty{} },
		Run: func(_ context.Context, f *File, m proto.Message) (proto.Message, error) {
			r := m.(*uapi.VmMapRequest)
			return empty, f.VMMap(r.Handle, r.BoOffset, r.Va, r.Size, r.Flags)
		},
	},
	uapi.OpVmUnmap: {
		Request: func() proto.Message { return &uapi.VmUnmapRequest{} },
		Reply:   func() proto.Message { return &uapi.Empty{} },
		Run: func(_ context.Context, f *File, m proto.Message) (proto.Message, error) {
			return empty, f.VMUnmap(m.(*uapi.VmUnmapRequest).Va)
		},
	},
}

func (amdgpuDriver) Ioctls() map[uapi.Op]Ioctl { return amdgpuIoctls }

func (amdgpuDriver) Open(f *File) FilePriv { return amdgpuFile{f} }

func (amdgpuDriver) CheckBlob(blob []byte, minor uint32) error {
	_, err := decodeDriverPrivateFor(blob, "amdgpu", minor)
	return err
}

// amdgpuFile is amdgpu's state of a drm file: nothing beyond the core's.
type amdgpuFile struct{ f *File }

func (amdgpuFile) Postclose() {}

// Checkpoint builds the blob: contexts with their preempted work,
// syncobjs and sw_sync timelines.
func (a amdgpuFile) Checkpoint(cp *DriverCheckpoint) ([]byte, error) {
	priv := &uapi.DriverPrivate{Version: DriverPrivateVersion, Driver: "amdgpu"}
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

// Restore recreates contexts, preempted jobs, timelines and syncobjs.
func (a amdgpuFile) Restore(rs *DriverRestore, blob []byte) error {
	priv, err := decodeDriverPrivateFor(blob, "amdgpu", a.f.dev.cfg.Minor)
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
