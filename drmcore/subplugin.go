package drmcore

import (
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// DriverPlugin checkpoints and restores the drm files of one driver. The
// kernel's checkpoint of a file carries driver-neutral state the core
// understands (handles, BOs, mappings) and a driver blob only the driver
// sub-plugin and the kernel interpret.
type DriverPlugin interface {
	// Driver is the DRM driver name it handles ("amdgpu").
	Driver() string
	// DumpFile checks the kernel's checkpoint of one drm file, in
	// particular that its driver blob is of a version this sub-plugin
	// can restore, and makes the file's image.
	DumpFile(ino uint64, pid int32, cp *uapi.FileCheckpoint) (*images.DrmFile, error)
	// CheckFile checks every field of the driver's part of a drm file
	// image (the driver blob: contexts, saved jobs, syncobjs), creating
	// nothing and reporting every problem. bo gives a BO of the
	// checkpoint by id, nil for none. The core checks the image's other
	// fields, and the kernel's checks (kernelsim.CheckRestore) the
	// objects it creates from them.
	CheckFile(img *images.DrmFile, bo func(id uint64) *uapi.BoState) []images.Problem
	// RestoreFile turns a checked file image into the kernel's restore
	// request for the file.
	RestoreFile(img *images.DrmFile) (*uapi.RestoreFile, error)
	// State decodes the driver blob of a file image for the tools
	// (drmcrit show, the demo): what every driver's blob holds and the
	// driver's own objects.
	State(img *images.DrmFile) (*DriverState, error)
}

// DriverState is a driver blob as the tools show it.
type DriverState struct {
	// Contexts are the file's contexts (amdgpu) or exec queues (xe),
	// with their saved work.
	Contexts []*uapi.ContextState
	Syncobjs []*uapi.SyncobjState
	SwSyncs  []*uapi.SwSyncState
	// Objects are the driver's own objects, one line each ("VM 1 (long-running): 2 bindings").
	Objects []string
}

// DmaBufPlugin checkpoints and restores dma-buf files.
type DmaBufPlugin interface {
	// DumpDmaBuf makes the image of a dma-buf whose BO the kernel
	// described.
	DumpDmaBuf(ino uint64, pid int32, bo *uapi.BoState) (*images.DmaBuf, error)
	// RestoreDmaBuf turns a dma-buf image into the kernel's restore
	// request.
	RestoreDmaBuf(img *images.DmaBuf) (*uapi.RestoreDmaBuf, error)
}
