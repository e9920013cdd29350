package xe

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// errBlob marks a blob this kernel cannot restore.
var errBlob = errors.New("xe driver state")

// decodeBlob parses an xe blob for a device at renderD<minor> and checks
// what restoring it needs: its version, VMs with ids from 1 and bindings
// that are page-aligned, non-empty, inside the address space and not
// overlapping, and exec queues naming VMs of the blob.
func decodeBlob(blob []byte, minor uint32) (*uapi.XeDriverPrivate, error) {
	priv := &uapi.XeDriverPrivate{}
	if err := proto.Unmarshal(blob, priv); err != nil {
		return nil, fmt.Errorf("%w: %v", errBlob, err)
	}
	if priv.Version != BlobVersion {
		return nil, fmt.Errorf("%w: version %d, this kernel reads %d", errBlob, priv.Version, BlobVersion)
	}
	if priv.Driver != Name {
		return nil, fmt.Errorf("%w: for driver %q, device renderD%d is %s", errBlob, priv.Driver, minor, Name)
	}
	info := Driver{}.Info()
	page := uint64(1) << info.PageShift
	vms := map[uint32]bool{}
	lr := map[uint32]bool{}
	for i, v := range priv.Vms {
		if v.VmId == 0 || v.VmId > uapi.MaxID || vms[v.VmId] {
			return nil, fmt.Errorf("%w: vms[%d]: VM id %d is not an id (1 to %d) or is listed twice", errBlob, i, v.VmId, uapi.MaxID)
		}
		vms[v.VmId] = true
		lr[v.VmId] = v.Flags&uapi.XeVmCreateFlagLRMode != 0
		if v.Flags&^uapi.XeVmCreateFlagLRMode != 0 {
			return nil, fmt.Errorf("%w: VM %d: unknown flags %#x", errBlob, v.VmId, v.Flags)
		}
		var end uint64
		for j, b := range v.Bindings {
			switch {
			case b.Range == 0 || b.Va%page != 0 || b.Range%page != 0 || b.BoOffset%page != 0:
				return nil, fmt.Errorf("%w: VM %d binding %d: va %#x range %#x offset %#x: not page aligned or empty", errBlob, v.VmId, j, b.Va, b.Range, b.BoOffset)
			case b.Va > info.VAMax || b.Range > info.VAMax-b.Va:
				return nil, fmt.Errorf("%w: VM %d binding %d: [%#x, +%#x) outside the address space", errBlob, v.VmId, j, b.Va, b.Range)
			case j > 0 && b.Va < end:
				return nil, fmt.Errorf("%w: VM %d binding %d at %#x overlaps the one before or is out of order", errBlob, v.VmId, j, b.Va)
			}
			end = b.Va + b.Range
		}
	}
	for i, q := range priv.ExecQueues {
		if q.Queue == nil {
			return nil, fmt.Errorf("%w: exec_queues[%d]: no queue state", errBlob, i)
		}
		if q.VmId != 0 && !vms[q.VmId] {
			return nil, fmt.Errorf("%w: exec queue %d: VM %d is not in the blob", errBlob, q.Queue.CtxId, q.VmId)
		}
		if q.LongRunning != lr[q.VmId] {
			return nil, fmt.Errorf("%w: exec queue %d: long-running is %v, its VM %d's mode is %v", errBlob, q.Queue.CtxId, q.LongRunning, q.VmId, lr[q.VmId])
		}
	}
	return priv, nil
}

// Checkpoint implements kernelsim.FilePriv: VMs with their bindings (and
// their BOs, which become part of the checkpoint), exec queues and plain
// contexts with their preempted work, syncobjs and timelines.
func (x *file) Checkpoint(cp *kernelsim.DriverCheckpoint) ([]byte, error) {
	priv := &uapi.XeDriverPrivate{Version: BlobVersion, Driver: Name}
	ids := make([]uint32, 0, len(x.vms))
	for id := range x.vms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		v := x.vms[id]
		vs := &uapi.XeVmState{VmId: id, Flags: v.flags}
		for _, b := range v.binds {
			vs.Bindings = append(vs.Bindings, &uapi.XeBinding{Va: b.va, Range: b.size, BoId: cp.AddBO(b.bo), BoOffset: b.off})
		}
		priv.Vms = append(priv.Vms, vs)
	}
	for _, c := range cp.Contexts() {
		cs, err := cp.Context(c)
		if err != nil {
			return nil, err
		}
		qs := &uapi.XeExecQueueState{Queue: cs, LongRunning: c.LongRunning()}
		if q, ok := c.Data().(*execQueue); ok {
			qs.VmId = q.vm.id
			qs.Preemptions = q.preemptions.Load()
		}
		priv.ExecQueues = append(priv.ExecQueues, qs)
	}
	var err error
	if priv.Syncobjs, priv.SwSyncs, err = cp.Syncobjs(); err != nil {
		return nil, err
	}
	blob, err := proto.Marshal(priv)
	if err != nil {
		return nil, fmt.Errorf("xe driver state: %w", err)
	}
	return blob, nil
}

// Restore implements kernelsim.FilePriv: the VMs with their bindings,
// then the queues, paused, with their saved work (a long-running queue
// is armed with a new preempt fence when it resumes), then syncobjs.
func (x *file) Restore(rs *kernelsim.DriverRestore, blob []byte) error {
	priv, err := decodeBlob(blob, x.f.Device().Minor())
	if err != nil {
		return err
	}
	for _, vs := range priv.Vms {
		v := &vm{id: vs.VmId, flags: vs.Flags, queues: map[uint32]*execQueue{}}
		x.vms[v.id] = v
		for _, b := range vs.Bindings {
			bo, err := rs.BO(b.BoId)
			if err != nil {
				return fmt.Errorf("VM %d binding at %#x: %w", v.id, b.Va, err)
			}
			if b.BoOffset > bo.Size() || b.Range > bo.Size()-b.BoOffset {
				bo.PutLocked()
				return kernelsim.Errnof(syscall.EINVAL, "VM %d binding at %#x: [%#x, +%#x) outside the %#x-byte BO", v.id, b.Va, b.BoOffset, b.Range, bo.Size())
			}
			v.binds = append(v.binds, &binding{va: b.Va, size: b.Range, off: b.BoOffset, bo: bo})
		}
	}
	for _, qs := range priv.ExecQueues {
		if qs.VmId == 0 {
			if _, err := rs.Context(qs.Queue, nil, false); err != nil {
				return err
			}
			continue
		}
		v := x.vms[qs.VmId]
		q := &execQueue{x: x, vm: v, fenceCtx: dma.NewContext(1)}
		q.preemptions.Store(qs.Preemptions)
		c, err := rs.Context(qs.Queue, q, v.lr())
		if err != nil {
			return err
		}
		q.c = c
		v.queues[c.ID()] = q
	}
	return rs.Syncobjs(priv.Syncobjs, priv.SwSyncs)
}
