package xe

import (
	"context"
	"slices"
	"sort"
	"syscall"

	"drmcr/kernelsim"
	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/uapi"
)

// vm is a GPU address space (struct xe_vm): bindings of BO ranges at GPU
// addresses, sorted by address and never overlapping. A binding holds a
// reference on its BO, whatever the file's handles do (as a VMA holds
// its GEM object). Under the kernel lock.
type vm struct {
	id     uint32
	flags  uint32
	binds  []*binding
	queues map[uint32]*execQueue // the exec queues bound to it
}

// binding maps [va, va+size) to the BO's bytes from off on.
type binding struct {
	va, size, off uint64
	bo            *kernelsim.BO
}

func (b *binding) end() uint64 { return b.va + b.size }

// lr reports whether the VM is long-running.
func (v *vm) lr() bool { return v.flags&uapi.XeVmCreateFlagLRMode != 0 }

// release drops the bindings' BOs.
func (v *vm) release() {
	for _, b := range v.binds {
		b.bo.PutLocked()
	}
	v.binds = nil
}

// vmCreate is XE_VM_CREATE: ids from 1, the lowest free.
func (x *file) vmCreate(flags uint32) (uint32, error) {
	if flags&^uapi.XeVmCreateFlagLRMode != 0 {
		return 0, kernelsim.Errnof(syscall.EINVAL, "VM_CREATE: unknown flags %#x", flags&^uapi.XeVmCreateFlagLRMode)
	}
	var id uint32
	err := x.f.Locked(func() error {
		for id = 1; x.vms[id] != nil; id++ {
			if id == uapi.MaxID {
				return kernelsim.Errnof(syscall.ENOSPC, "VM_CREATE: no free VM id")
			}
		}
		x.vms[id] = &vm{id: id, flags: flags, queues: map[uint32]*execQueue{}}
		return nil
	})
	return id, err
}

// vmDestroy is XE_VM_DESTROY: refused while exec queues use the VM, as xe
// does (EBUSY). Jobs in flight keep their BOs by themselves.
func (x *file) vmDestroy(id uint32) error {
	return x.f.Locked(func() error {
		v, ok := x.vms[id]
		if !ok {
			return kernelsim.Errnof(syscall.ENOENT, "no VM %d", id)
		}
		if len(v.queues) != 0 {
			return kernelsim.Errnof(syscall.EBUSY, "VM %d has %d exec queue(s)", id, len(v.queues))
		}
		v.release()
		delete(x.vms, id)
		return nil
	})
}

// vmBind is XE_VM_BIND. The operations are checked first, then the
// ioctl waits for the in-syncobjs' fences (a replayable wait: nothing has
// happened yet), then applies every operation or none, in order, and
// gives each out-syncobj a signalled fence. Linux runs the bind as a job
// on the VM's bind queue and returns at once; here the caller waits
// instead, which a client using the out-fences cannot tell apart.
func (x *file) vmBind(ctx context.Context, r *uapi.XeVmBindRequest) error {
	var waits []*dma.Fence
	defer func() {
		for _, w := range waits {
			w.Put()
		}
	}()
	err := x.f.Locked(func() error {
		v, ok := x.vms[r.VmId]
		if !ok {
			return kernelsim.Errnof(syscall.ENOENT, "no VM %d", r.VmId)
		}
		if _, err := x.applyBinds(v, r.Binds, false); err != nil {
			return err
		}
		for _, h := range append(slices.Clone(r.InSyncobjs), r.OutSyncobjs...) {
			if _, err := x.f.SyncobjLocked(h); err != nil {
				return err
			}
		}
		for _, h := range r.InSyncobjs {
			s, _ := x.f.SyncobjLocked(h)
			fence := s.Fence()
			if fence == nil {
				return kernelsim.Errnof(syscall.EINVAL, "syncobj %d has no fence", h)
			}
			waits = append(waits, fence)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, w := range waits {
		if w.Signaled() {
			continue
		}
		if err := kernelsim.BlockingWait(ctx, w.Wait); err != nil {
			return err
		}
	}
	return x.f.Locked(func() error {
		v, ok := x.vms[r.VmId]
		if !ok {
			return kernelsim.Errnof(syscall.ENOENT, "no VM %d", r.VmId)
		}
		added, err := x.applyBinds(v, r.Binds, true)
		if err != nil {
			return err
		}
		for _, bo := range added {
			for _, q := range v.queues {
				q.installPreemptFence(bo)
			}
		}
		done := dma.NewFence(dma.NewContext(1), 1, "xe-bind")
		done.Signal(nil)
		for _, h := range r.OutSyncobjs {
			s, err := x.f.SyncobjLocked(h)
			if err != nil {
				done.Put()
				return err
			}
			s.Replace(done)
		}
		done.Put()
		return nil
	})
}

// applyBinds runs bind operations on a copy of the VM's bindings and,
// when commit is set, makes the copy the VM's; it returns the BOs newly
// bound. Called with the kernel lock held.
func (x *file) applyBinds(v *vm, ops []*uapi.XeVmBindOp, commit bool) ([]*kernelsim.BO, error) {
	dev := x.f.Device()
	page, vaMax := dev.PageSize(), dev.VAMax()
	binds := slices.Clone(v.binds)
	var (
		gets, puts []*kernelsim.BO // references taken and dropped by the new list
		added      []*kernelsim.BO
	)
	for i, op := range ops {
		if op.Range == 0 || op.Va%page != 0 || op.Range%page != 0 || op.BoOffset%page != 0 {
			return nil, kernelsim.Errnof(syscall.EINVAL, "bind op %d: va %#x range %#x offset %#x: not page aligned or empty", i, op.Va, op.Range, op.BoOffset)
		}
		if op.Va > vaMax || op.Range > vaMax-op.Va {
			return nil, kernelsim.Errnof(syscall.EINVAL, "bind op %d: [%#x, +%#x) outside the address space", i, op.Va, op.Range)
		}
		var bo *kernelsim.BO
		switch op.Op {
		case uapi.XeVmBindOp_MAP:
			b, err := x.f.LookupLocked(op.Handle)
			if err != nil {
				return nil, err
			}
			if op.BoOffset > b.Size() || op.Range > b.Size()-op.BoOffset {
				return nil, kernelsim.Errnof(syscall.EINVAL, "bind op %d: [%#x, +%#x) outside the %#x-byte BO", i, op.BoOffset, op.Range, b.Size())
			}
			bo = b
		case uapi.XeVmBindOp_UNMAP:
			if op.Handle != 0 || op.BoOffset != 0 {
				return nil, kernelsim.Errnof(syscall.EINVAL, "bind op %d: UNMAP names no BO", i)
			}
		default:
			return nil, kernelsim.Errnof(syscall.EINVAL, "bind op %d: unknown op %d", i, op.Op)
		}
		// Both ops first clear the range, splitting bindings that
		// straddle its ends (drm_gpuvm's remap); MAP then inserts.
		binds = unmapRange(binds, op.Va, op.Va+op.Range, &gets, &puts)
		if bo != nil {
			nb := &binding{va: op.Va, size: op.Range, off: op.BoOffset, bo: bo}
			j := sort.Search(len(binds), func(j int) bool { return binds[j].va >= nb.va })
			binds = slices.Insert(binds, j, nb)
			gets = append(gets, bo)
			added = append(added, bo)
		}
	}
	if !commit {
		return nil, nil
	}
	for _, bo := range gets {
		bo.GetLocked()
	}
	for _, bo := range puts {
		bo.PutLocked()
	}
	v.binds = binds
	return added, nil
}

// unmapRange removes [start, end) from sorted bindings: each binding it
// covers goes (its reference to puts), each it cuts keeps the pieces
// outside (a new reference per extra piece to gets).
func unmapRange(binds []*binding, start, end uint64, gets, puts *[]*kernelsim.BO) []*binding {
	out := make([]*binding, 0, len(binds)+1)
	for _, b := range binds {
		if b.end() <= start || b.va >= end {
			out = append(out, b)
			continue
		}
		pieces := 0
		if b.va < start {
			out = append(out, &binding{va: b.va, size: start - b.va, off: b.off, bo: b.bo})
			pieces++
		}
		if b.end() > end {
			out = append(out, &binding{va: end, size: b.end() - end, off: b.off + (end - b.va), bo: b.bo})
			pieces++
		}
		switch pieces {
		case 0:
			*puts = append(*puts, b.bo)
		case 2:
			*gets = append(*gets, b.bo)
		}
	}
	return out
}

// lookup resolves a GPU address to the rest of its binding. Called with
// the kernel lock held.
func (v *vm) lookup(va uint64) (*binding, uint64, bool) {
	i := sort.Search(len(v.binds), func(i int) bool { return v.binds[i].end() > va })
	if i == len(v.binds) || v.binds[i].va > va {
		return nil, 0, false
	}
	return v.binds[i], va - v.binds[i].va, true
}
