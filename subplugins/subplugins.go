// Package subplugins lists the DRM plugin's sub-plugins: one per driver
// and the dma-buf one. The plugin, drmcrit and the tests take them from
// here, so that a new driver's sub-plugin is added in one place and the
// core (drmcore) names no driver.
package subplugins

import (
	"drmcr/amdgpu"
	"drmcr/dmabuf"
	"drmcr/drmcore"
	// The kernel's drivers, whose blobs the kernel's restore checks
	// (kernelsim.CheckRestore) that drmcore runs offline decode.
	_ "drmcr/kernelsim/amdgpu"
	_ "drmcr/kernelsim/xe"
	"drmcr/xe"
)

// All returns the sub-plugins.
func All() drmcore.SubPlugins {
	return drmcore.SubPlugins{
		Drivers: []drmcore.DriverPlugin{amdgpu.New(), xe.New()},
		DmaBuf:  dmabuf.New(),
	}
}
