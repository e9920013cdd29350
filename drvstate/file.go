package drvstate

import (
	"fmt"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// BlobVersion decodes a driver blob far enough to give its version, or
// fails on a blob the sub-plugin cannot read.
type BlobVersion func(blob []byte) (uint32, error)

// DumpFile makes the drm file image of a file of driver from the
// kernel's checkpoint, recording its blob's version: the part of a
// sub-plugin's DumpFile that every driver shares.
func DumpFile(driver string, version BlobVersion, ino uint64, pid int32, cp *uapi.FileCheckpoint) (*images.DrmFile, error) {
	if cp.Driver != driver {
		return nil, fmt.Errorf("file of driver %q", cp.Driver)
	}
	v, err := version(cp.DriverPrivate)
	if err != nil {
		return nil, err
	}
	return &images.DrmFile{
		Version: images.Version, Inode: ino, Pid: pid, State: cp,
		Driver: driver, DriverVersion: v,
	}, nil
}

// RestoreFile makes the kernel's restore request of a drm file image of
// driver, whose blob must be readable and of the version the image
// records: the part of a sub-plugin's RestoreFile that every driver
// shares.
func RestoreFile(driver string, version BlobVersion, img *images.DrmFile) (*uapi.RestoreFile, error) {
	if img.Driver != driver || img.State == nil || img.State.Driver != driver {
		return nil, fmt.Errorf("image of driver %q", img.Driver)
	}
	v, err := version(img.State.DriverPrivate)
	if err != nil {
		return nil, err
	}
	if v != img.DriverVersion {
		return nil, fmt.Errorf("driver blob version %d, image says %d", v, img.DriverVersion)
	}
	return &uapi.RestoreFile{Inode: img.Inode, State: img.State}, nil
}
