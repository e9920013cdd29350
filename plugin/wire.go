package main

/*
#include <stdlib.h>
*/
import "C"

import (
	"fmt"
	"unsafe"

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
	}, cGetenv)
	if err != nil {
		return nil, err
	}
	return drmcore.New(cfg), nil
}

// cGetenv reads criu's environment through libc (see drmcore.ConfigFromEnv
// for why os.Getenv will not do).
func cGetenv(name string) string {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	if v := C.getenv(cname); v != nil {
		return C.GoString(v)
	}
	return ""
}
