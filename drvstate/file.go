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

// CheckImage checks what precedes the blob in every driver's drm file
// image: the image's and the file state's driver are driver, the blob
// decodes (decode), and its version is the one the image records. It
// returns the decoded blob, and whether the caller should go on checking
// it (false when there is nothing to check: no state, which the core
// reports, or a blob of another driver or that does not decode).
func CheckImage[B interface{ GetVersion() uint32 }](img *images.DrmFile, driver string, decode func([]byte) (B, error)) (priv B, ok bool, out []images.Problem) {
	name := images.FileName(img.Inode)
	add := func(field, format string, args ...any) {
		out = append(out, images.Problemf(name, field, format, args...))
	}
	st := img.State
	switch {
	case img.Driver != driver:
		add("driver", "%q, not %s", img.Driver, driver)
		return priv, false, out
	case st == nil:
		return priv, false, out // the core reports it
	case st.Driver != driver:
		add("state.driver", "%q, the image says %s", st.Driver, driver)
		return priv, false, out
	}
	priv, err := decode(st.DriverPrivate)
	if err != nil {
		add("state.driver_private", "%v", err)
		return priv, false, out
	}
	if priv.GetVersion() != img.DriverVersion {
		add("driver_version", "%d, the blob's is %d", img.DriverVersion, priv.GetVersion())
	}
	return priv, true, out
}
