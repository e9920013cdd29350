// Package xe is the kernel side of the simulated Intel xe driver, modelled
// on Linux's drivers/gpu/drm/xe: VMs created by VM_CREATE and filled by
// VM_BIND (map and unmap operations on GPU address ranges, instead of
// amdgpu's VA ioctl), exec queues bound to a VM, each with its own
// scheduler (the firmware schedules queues: jobs of different queues
// complete out of order), EXEC naming GPU addresses, and long-running
// (LR) VMs whose queues' jobs have no timeout and are preempted through
// preempt fences. Its driver blob is uapi.XeDriverPrivate.
//
// Importing the package registers the driver with kernelsim (as a driver
// module registers with the drm core).
//
// Locking: a file's xe state (VMs, bindings, queues) is part of the
// kernel's object graph, under the kernel lock (kernelsim.File.Locked);
// an exec queue's preempt fence has its own lock, a leaf.
package xe

import (
	"context"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// Name is the driver's name.
const Name = "xe"

// BlobVersion is the version of the xe driver blob this kernel writes and
// reads.
const BlobVersion = 1

func init() { kernelsim.RegisterDriver(Driver{}) }

// Driver is the xe driver.
type Driver struct{}

// Info implements kernelsim.Driver.
func (Driver) Info() kernelsim.DriverInfo {
	return kernelsim.DriverInfo{Name: Name, Sched: sched.Firmware, GEMFlags: 0x0f, VAMax: 1 << 48, PageShift: 12, Vendor: 0x8086}
}

func ioctl[R any, PR interface {
	*R
	proto.Message
}, P proto.Message](newReply func() P, run func(ctx context.Context, x *file, req PR) (proto.Message, error)) kernelsim.Ioctl {
	return kernelsim.Ioctl{
		Request: func() proto.Message { return PR(new(R)) },
		Reply:   func() proto.Message { return newReply() },
		Run: func(ctx context.Context, f *kernelsim.File, m proto.Message) (proto.Message, error) {
			return run(ctx, f.Priv().(*file), m.(PR))
		},
	}
}

var ioctls = map[uapi.Op]kernelsim.Ioctl{
	uapi.OpXeVmCreate: ioctl(func() *uapi.XeVmCreateReply { return &uapi.XeVmCreateReply{} },
		func(_ context.Context, x *file, r *uapi.XeVmCreateRequest) (proto.Message, error) {
			id, err := x.vmCreate(r.Flags)
			return &uapi.XeVmCreateReply{VmId: id}, err
		}),
	uapi.OpXeVmDestroy: ioctl(func() *uapi.Empty { return &uapi.Empty{} },
		func(_ context.Context, x *file, r *uapi.XeVmDestroyRequest) (proto.Message, error) {
			return &uapi.Empty{}, x.vmDestroy(r.VmId)
		}),
	uapi.OpXeExecQueueCreate: ioctl(func() *uapi.XeExecQueueCreateReply { return &uapi.XeExecQueueCreateReply{} },
		func(_ context.Context, x *file, r *uapi.XeExecQueueCreateRequest) (proto.Message, error) {
			id, err := x.execQueueCreate(r.VmId, r.Priority)
			return &uapi.XeExecQueueCreateReply{ExecQueueId: id}, err
		}),
	uapi.OpXeExecQueueDestroy: ioctl(func() *uapi.Empty { return &uapi.Empty{} },
		func(_ context.Context, x *file, r *uapi.XeExecQueueDestroyRequest) (proto.Message, error) {
			return &uapi.Empty{}, x.execQueueDestroy(r.ExecQueueId)
		}),
	uapi.OpXeVmBind: ioctl(func() *uapi.Empty { return &uapi.Empty{} },
		func(ctx context.Context, x *file, r *uapi.XeVmBindRequest) (proto.Message, error) {
			return &uapi.Empty{}, x.vmBind(ctx, r)
		}),
	uapi.OpXeExec: ioctl(func() *uapi.XeExecReply { return &uapi.XeExecReply{} },
		func(ctx context.Context, x *file, r *uapi.XeExecRequest) (proto.Message, error) {
			return x.exec(ctx, r)
		}),
}

// Ioctls implements kernelsim.Driver.
func (Driver) Ioctls() map[uapi.Op]kernelsim.Ioctl { return ioctls }

// Open implements kernelsim.Driver.
func (Driver) Open(f *kernelsim.File) kernelsim.FilePriv {
	return &file{f: f, vms: map[uint32]*vm{}}
}

// CheckBlob implements kernelsim.Driver.
func (Driver) CheckBlob(blob []byte, minor uint32) error {
	_, err := decodeBlob(blob, minor)
	return err
}

// file is xe's state of a drm file (struct xe_file): its VMs. Its exec
// queues are the file's contexts whose data is an *execQueue. Under the
// kernel lock.
type file struct {
	f   *kernelsim.File
	vms map[uint32]*vm
}

// Postclose implements kernelsim.FilePriv: the file's contexts are gone,
// so its VMs go, dropping their bindings' BOs.
func (x *file) Postclose() {
	for id, v := range x.vms {
		for _, q := range v.queues {
			q.disarm(dma.ErrCanceled)
		}
		v.release()
		delete(x.vms, id)
	}
}
