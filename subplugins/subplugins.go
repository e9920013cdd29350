// Package subplugins lists the DRM plugin's sub-plugins: one per driver
// and the dma-buf one. The plugin, drmcrit and the tests take them from
// here, so that a new driver's sub-plugin is added in one place and the
// core (drmcore) names no driver.
package subplugins

import (
	"drmcr/amdgpu"
	"drmcr/dmabuf"
	"drmcr/drmcore"
	_ "drmcr/kernelsim/xe" // the kernel's restore checks (kernelsim.CheckRestore) know the xe blob
	"drmcr/xe"
)

// All returns the sub-plugins.
func All() drmcore.SubPlugins {
	return drmcore.SubPlugins{
		Drivers: []drmcore.DriverPlugin{amdgpu.New(), xe.New()},
		DmaBuf:  dmabuf.New(),
	}
}
