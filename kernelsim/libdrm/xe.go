package libdrm

import "drmcr/kernelsim/uapi"

// The xe driver's requests (xe_drm.proto), as libdrm's xe helpers wrap
// DRM_IOCTL_XE_*; another driver's device answers them ENOTTY.

// XeVMCreate creates a VM (flags: uapi.XeVmCreateFlagLRMode for a
// long-running one).
func (d *Device) XeVMCreate(flags uint32) (uint32, error) {
	r := &uapi.XeVmCreateReply{}
	_, err := d.c.Call(uapi.OpXeVmCreate, &uapi.XeVmCreateRequest{Flags: flags}, r)
	return r.VmId, err
}

// XeVMDestroy destroys a VM with no exec queue left.
func (d *Device) XeVMDestroy(id uint32) error {
	_, err := d.c.Call(uapi.OpXeVmDestroy, &uapi.XeVmDestroyRequest{VmId: id}, nil)
	return err
}

// XeExecQueueCreate creates an exec queue on a VM.
func (d *Device) XeExecQueueCreate(vm uint32, priority int32) (uint32, error) {
	r := &uapi.XeExecQueueCreateReply{}
	_, err := d.c.Call(uapi.OpXeExecQueueCreate, &uapi.XeExecQueueCreateRequest{VmId: vm, Priority: priority}, r)
	return r.ExecQueueId, err
}

// XeExecQueueDestroy destroys an exec queue, whatever it runs.
func (d *Device) XeExecQueueDestroy(id uint32) error {
	_, err := d.c.Call(uapi.OpXeExecQueueDestroy, &uapi.XeExecQueueDestroyRequest{ExecQueueId: id}, nil)
	return err
}

// XeVMBind runs bind operations on a VM.
func (d *Device) XeVMBind(req *uapi.XeVmBindRequest) error {
	_, err := d.c.Call(uapi.OpXeVmBind, req, nil)
	return err
}

// XeBind maps [va, va+size) of a VM to a BO's bytes from offset on.
func (d *Device) XeBind(vm, handle uint32, offset, va, size uint64) error {
	return d.XeVMBind(&uapi.XeVmBindRequest{VmId: vm, Binds: []*uapi.XeVmBindOp{
		{Op: uapi.XeVmBindOp_MAP, Handle: handle, BoOffset: offset, Va: va, Range: size}}})
}

// XeUnbind unmaps [va, va+size) of a VM.
func (d *Device) XeUnbind(vm uint32, va, size uint64) error {
	return d.XeVMBind(&uapi.XeVmBindRequest{VmId: vm, Binds: []*uapi.XeVmBindOp{
		{Op: uapi.XeVmBindOp_UNMAP, Va: va, Range: size}}})
}

// XeExec queues a batch on an exec queue.
func (d *Device) XeExec(req *uapi.XeExecRequest) (*uapi.XeExecReply, error) {
	r := &uapi.XeExecReply{}
	_, err := d.c.Call(uapi.OpXeExec, req, r)
	return r, err
}
