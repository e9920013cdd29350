// Command core is the plugin's Go library, drm_plugin_core.so, built with
// -buildmode=c-shared. criu never loads it: drm_plugin.so (plugin/c)
// starts a helper process that loads it and calls drmcr_core_serve with
// the channel to criu (see package plugin).
package main

import "C"

import (
	"fmt"
	"net"
	"os"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/plugin"
	"drmcr/subplugins"
)

func main() {}

//export drmcr_core_serve
func drmcr_core_serve(fd C.int) C.int {
	f := os.NewFile(uintptr(fd), "criu")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "drm_plugin helper: channel: %v\n", err)
		return 1
	}
	defer c.Close()
	uc, ok := c.(*net.UnixConn)
	if !ok {
		fmt.Fprintf(os.Stderr, "drm_plugin helper: channel is a %T, not a unix socket\n", c)
		return 1
	}
	if err := plugin.Serve(uc, newHooks); err != nil {
		fmt.Fprintf(os.Stderr, "drm_plugin helper: %v\n", err)
		return 1
	}
	return 0
}

// newHooks makes the hooks for one criu run: the top-level DRM plugin with
// its sub-plugins.
var newHooks = func(env plugin.Env) (plugin.Hooks, error) {
	if env.ImageDirFD < 0 {
		return nil, fmt.Errorf("criu gave no images directory")
	}
	subs := subplugins.All()
	cfg, err := drmcore.ConfigFromEnv(drmcore.Config{
		Log:      env.Log,
		ImageDir: images.DirFromFD(env.ImageDirFD),
		Drivers:  subs.Drivers,
		DmaBuf:   subs.DmaBuf,
	}, env.Getenv)
	if err != nil {
		return nil, err
	}
	return drmcore.New(cfg), nil
}
