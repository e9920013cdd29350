// Package amdgpu is the DRM plugin's sub-plugin for amdgpu render nodes.
// It owns the driver-private part of a drm file's checkpoint: contexts,
// their preempted work, syncobjs and sw_sync timelines, which the kernel
// hands out as an opaque, versioned blob.
package amdgpu

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"drmcr/drmcore"
	"drmcr/drvstate"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// Driver is the DRM driver name this sub-plugin handles.
const Driver = "amdgpu"

// blobVersions are the driver blob versions this sub-plugin can restore.
var blobVersions = map[uint32]bool{1: true}

// Plugin is the amdgpu sub-plugin.
type Plugin struct{}

// New returns the sub-plugin.
func New() *Plugin { return &Plugin{} }

// Driver implements drmcore.DriverPlugin.
func (*Plugin) Driver() string { return Driver }

// Decode parses and checks a driver blob.
func Decode(blob []byte) (*uapi.DriverPrivate, error) {
	priv := &uapi.DriverPrivate{}
	if err := proto.Unmarshal(blob, priv); err != nil {
		return nil, fmt.Errorf("driver blob: %w", err)
	}
	if priv.Driver != Driver {
		return nil, fmt.Errorf("driver blob is for %q, not %s", priv.Driver, Driver)
	}
	if !blobVersions[priv.Version] {
		return nil, fmt.Errorf("driver blob version %d is not supported", priv.Version)
	}
	for _, c := range priv.Contexts {
		for _, j := range c.Jobs {
			if len(j.Bos) != len(j.BoIds) {
				return nil, fmt.Errorf("context %d: job with %d BOs and %d BO ids", c.CtxId, len(j.Bos), len(j.BoIds))
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
	return &drmcore.DriverState{Contexts: priv.Contexts, Syncobjs: priv.Syncobjs, SwSyncs: priv.SwSyncs}, nil
}
