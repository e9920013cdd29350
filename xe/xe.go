// Package xe is the DRM plugin's sub-plugin for xe render nodes. It owns
// the driver-private part of a drm file's checkpoint, which the kernel
// hands out as an opaque, versioned blob of its own (uapi.XeDriverPrivate,
// not amdgpu's): VMs with their bindings, exec queues (long-running or
// not) with their preempted work, syncobjs and sw_sync timelines.
package xe

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"drmcr/drmcore"
	"drmcr/drvstate"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// Driver is the DRM driver name this sub-plugin handles.
const Driver = "xe"

// blobVersions are the driver blob versions this sub-plugin can restore.
var blobVersions = map[uint32]bool{1: true}

// Plugin is the xe sub-plugin.
type Plugin struct{}

// New returns the sub-plugin.
func New() *Plugin { return &Plugin{} }

// Driver implements drmcore.DriverPlugin.
func (*Plugin) Driver() string { return Driver }

// Decode parses a driver blob and checks its driver and version.
func Decode(blob []byte) (*uapi.XeDriverPrivate, error) {
	priv := &uapi.XeDriverPrivate{}
	if err := proto.Unmarshal(blob, priv); err != nil {
		return nil, fmt.Errorf("driver blob: %w", err)
	}
	if priv.Driver != Driver {
		return nil, fmt.Errorf("driver blob is for %q, not %s", priv.Driver, Driver)
	}
	if !blobVersions[priv.Version] {
		return nil, fmt.Errorf("driver blob version %d is not supported", priv.Version)
	}
	for i, q := range priv.ExecQueues {
		if q.Queue == nil {
			return nil, fmt.Errorf("exec queue %d: no queue state", i)
		}
		for _, j := range q.Queue.Jobs {
			if len(j.Bos) != len(j.BoIds) {
				return nil, fmt.Errorf("exec queue %d: job with %d BOs and %d BO ids", q.Queue.CtxId, len(j.Bos), len(j.BoIds))
			}
		}
	}
	return priv, nil
}

// DumpFile implements drmcore.DriverPlugin.
func (*Plugin) DumpFile(ino uint64, pid int32, cp *uapi.FileCheckpoint) (*images.DrmFile, error) {
	return drvstate.DumpFile(Driver, blobVersion, ino, pid, cp)
}

// RestoreFile implements drmcore.DriverPlugin.
func (*Plugin) RestoreFile(img *images.DrmFile) (*uapi.RestoreFile, error) {
	return drvstate.RestoreFile(Driver, blobVersion, img)
}

// blobVersion is the version of a blob Decode accepts.
func blobVersion(blob []byte) (uint32, error) {
	priv, err := Decode(blob)
	if err != nil {
		return 0, err
	}
	return priv.Version, nil
}

// State implements drmcore.DriverPlugin.
func (*Plugin) State(img *images.DrmFile) (*drmcore.DriverState, error) {
	if img.Driver != Driver || img.State == nil {
		return nil, fmt.Errorf("image of driver %q", img.Driver)
	}
	priv, err := Decode(img.State.DriverPrivate)
	if err != nil {
		return nil, err
	}
	ds := &drmcore.DriverState{Syncobjs: priv.Syncobjs, SwSyncs: priv.SwSyncs}
	for _, v := range priv.Vms {
		mode := "regular"
		if v.Flags&uapi.XeVmCreateFlagLRMode != 0 {
			mode = "long-running"
		}
		ds.Objects = append(ds.Objects, fmt.Sprintf("VM %d (%s): %d binding(s)", v.VmId, mode, len(v.Bindings)))
		for _, b := range v.Bindings {
			ds.Objects = append(ds.Objects, fmt.Sprintf("  [%#x, +%#x) -> BO %d at %#x", b.Va, b.Range, b.BoId, b.BoOffset))
		}
	}
	for _, q := range priv.ExecQueues {
		ds.Contexts = append(ds.Contexts, q.Queue)
		if q.VmId == 0 {
			ds.Objects = append(ds.Objects, fmt.Sprintf("context %d: no VM", q.Queue.CtxId))
			continue
		}
		ds.Objects = append(ds.Objects, fmt.Sprintf("exec queue %d on VM %d, long-running %v, preempted %d time(s)", q.Queue.CtxId, q.VmId, q.LongRunning, q.Preemptions))
	}
	return ds, nil
}

// CheckFile implements drmcore.DriverPlugin: it checks every field of the
// xe blob of a drm file image, creating nothing: VMs (ids 1 to 2^31-1,
// once each, known flags), their bindings (sorted, page-aligned,
// non-empty, not overlapping, within the address space and within BOs of
// the checkpoint listed in the file), exec queues (a VM of the blob, the
// VM's mode), and the records every driver blob shares (drvstate).
func (*Plugin) CheckFile(img *images.DrmFile, bo func(id uint64) *uapi.BoState) []images.Problem {
	priv, ok, out := drvstate.CheckImage(img, Driver, Decode)
	if !ok {
		return out
	}
	name := images.FileName(img.Inode)
	add := func(field, format string, args ...any) {
		out = append(out, images.Problemf(name, field, format, args...))
	}
	st := img.State
	const blob = "state.driver_private"
	const page, vaMax = 4096, uint64(1) << 48
	fileBOs := make(map[uint64]bool, len(st.Bos))
	for _, b := range st.Bos {
		fileBOs[b.BoId] = true
	}
	lr := map[uint32]bool{}
	for i, v := range priv.Vms {
		vf := fmt.Sprintf("%s.vms[%d]", blob, i)
		if _, dup := lr[v.VmId]; dup {
			add(vf+".vm_id", "VM %d is listed twice", v.VmId)
		} else if v.VmId == 0 || v.VmId > uapi.MaxID {
			add(vf+".vm_id", "%d is not a VM id (1 to %d)", v.VmId, uapi.MaxID)
		}
		lr[v.VmId] = v.Flags&uapi.XeVmCreateFlagLRMode != 0
		if v.Flags&^uapi.XeVmCreateFlagLRMode != 0 {
			add(vf+".flags", "unknown flags %#x", v.Flags&^uapi.XeVmCreateFlagLRMode)
		}
		sorted := sort.SliceIsSorted(v.Bindings, func(a, b int) bool { return v.Bindings[a].Va < v.Bindings[b].Va })
		var end uint64
		for j, b := range v.Bindings {
			bf := fmt.Sprintf("%s.bindings[%d]", vf, j)
			switch {
			case b.Range == 0 || b.Va%page != 0 || b.Range%page != 0 || b.BoOffset%page != 0:
				add(bf, "va %#x range %#x offset %#x: not page aligned or empty", b.Va, b.Range, b.BoOffset)
			case b.Va > vaMax || b.Range > vaMax-b.Va:
				add(bf, "[%#x, +%#x) is outside the xe address space", b.Va, b.Range)
			case j > 0 && (!sorted || b.Va < end):
				add(bf+".va", "%#x overlaps the binding before it or is out of order", b.Va)
			}
			end = b.Va + b.Range
			bs := bo(b.BoId)
			switch {
			case bs == nil:
				add(bf+".bo_id", "BO %d is not a BO of the checkpoint", b.BoId)
			case !fileBOs[b.BoId]:
				add(bf+".bo_id", "BO %d is not in the file's bos", b.BoId)
			case b.BoOffset > bs.Size || b.Range > bs.Size-b.BoOffset:
				add(bf, "[%#x, +%#x) is outside the %d-byte BO %d", b.BoOffset, b.Range, bs.Size, b.BoId)
			}
		}
	}
	shared := drvstate.Blob{Field: blob, Syncobjs: priv.Syncobjs, SwSyncs: priv.SwSyncs}
	for i, q := range priv.ExecQueues {
		qf := fmt.Sprintf("%s.exec_queues[%d]", blob, i)
		if q.VmId != 0 {
			if mode, ok := lr[q.VmId]; !ok {
				add(qf+".vm_id", "VM %d is not in the blob", q.VmId)
			} else if mode != q.LongRunning {
				add(qf+".long_running", "%v, but VM %d's mode is %v", q.LongRunning, q.VmId, mode)
			}
		} else if q.LongRunning {
			add(qf+".long_running", "a context bound to no VM is never long-running")
		}
		shared.Contexts = append(shared.Contexts, drvstate.Context{Field: qf + ".queue", State: q.Queue})
	}
	probs, _ := drvstate.Check(img, shared, bo)
	return append(out, probs...)
}
