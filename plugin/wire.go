package main

import (
	"fmt"

	"drmcr/amdgpu"
	"drmcr/dmabuf"
	"drmcr/drmcore"
	"drmcr/images"
)

// newHooks makes the hooks for one criu run: the top-level DRM plugin with
// its sub-plugins. imageDirFD is criu's images directory
// (criu_get_image_dir()).
var newHooks = func(log drmcore.Logger, imageDirFD int) (hooks, error) {
	if imageDirFD < 0 {
		return nil, fmt.Errorf("criu gave no images directory")
	}
	cfg, err := drmcore.ConfigFromEnv(drmcore.Config{
		Log:      log,
		ImageDir: images.DirFromFD(imageDirFD),
		Drivers:  []drmcore.DriverPlugin{amdgpu.New()},
		DmaBuf:   dmabuf.New(),
	})
	if err != nil {
		return nil, err
	}
	return drmcore.New(cfg), nil
}
