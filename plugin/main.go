// Command plugin is drm_plugin.so, the CRIU plugin for DRM (GPU) state,
// built with -buildmode=c-shared.
//
// The C part (plugin.c) holds the descriptor criu looks up (CR_PLUGIN_DESC)
// and calls the Go hooks below for init, exit, PAUSE_DEVICES, DUMP_UNIX_SK
// and RESUME_DEVICES_LATE; these all run in criu's main process.
// RESTORE_UNIX_SK runs in tasks criu forks, where Go must not run: it is
// pure C (restore.c) and works from a table that the init hook copies into
// C memory before criu forks.
//
// The hooks delegate to a hooks value made by newHooks (wire.go).
package main

/*
#cgo CFLAGS: -fPIC -fvisibility=hidden -Wall -Werror -O2
#cgo LDFLAGS: -ldl
#include "glue.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"syscall"
	"unsafe"

	"drmcr/drmcore"
)

func main() {}

// hooks is what the plugin needs from drmcore; *drmcore.Plugin satisfies it.
type hooks interface {
	Init(stage drmcore.Stage) error
	Fini(stage drmcore.Stage, ret int)
	PauseDevices(pid int) error
	DumpUnixSk(fd int, ino uint64) error // errors.Is(err, drmcore.ErrNotMine) → -ENOTSUP
	ResumeDevicesLate(pid int) error
	RestoreEntries() []drmcore.RestoreEntry // valid after Init(StageRestore) succeeded
}

// The lead's drmcore.Plugin is what wire.go will eventually construct.
var _ hooks = (*drmcore.Plugin)(nil)

var (
	mu     sync.Mutex
	active hooks // between a successful init and exit
	stage  drmcore.Stage
)

var log drmcore.Logger = criuLogger{}

// errno turns a hook's error into criu's return convention: 0, -ENOTSUP for
// ErrNotMine, the wrapped errno if there is one, else -EIO. Real errors are
// logged with what.
func errno(err error, what string) C.int {
	if err == nil {
		return 0
	}
	if errors.Is(err, drmcore.ErrNotMine) {
		return -C.int(syscall.ENOTSUP)
	}
	log.Errorf("%s: %v", what, err)
	var en syscall.Errno
	if errors.As(err, &en) && en != 0 {
		return -C.int(en)
	}
	return -C.int(syscall.EIO)
}

// guard turns a panic in a hook into -EIO: a panic must not take criu down.
func guard(what string, rc *C.int) {
	if r := recover(); r != nil {
		log.Errorf("%s: panic: %v\n%s", what, r, debug.Stack())
		*rc = -C.int(syscall.EIO)
	}
}

//export drmGoInit
func drmGoInit(cstage C.int) (rc C.int) {
	st := drmcore.Stage(cstage)
	what := fmt.Sprintf("init(%s)", st)
	defer guard(what, &rc)
	mu.Lock()
	defer mu.Unlock()

	log.Infof("%s", what)
	if active != nil { // criu loads each plugin once; be safe anyway
		active.Fini(stage, -1)
		active = nil
	}
	C.drm_restore_table_free()

	h, err := newHooks(log, int(C.drm_image_dir_fd()))
	if err != nil {
		return errno(err, what)
	}
	if err := h.Init(st); err != nil {
		if errors.Is(err, drmcore.ErrNotMine) {
			err = fmt.Errorf("init refused: %v", err) // not a valid answer for init: no %w
		}
		return errno(err, what)
	}
	if st == drmcore.StageRestore {
		if err := publishRestoreEntries(h.RestoreEntries()); err != nil {
			h.Fini(st, -1)
			C.drm_restore_table_free()
			return errno(err, what+": restore table")
		}
	}
	active, stage = h, st
	return 0
}

//export drmGoExit
func drmGoExit(cstage C.int, ret C.int) {
	var rc C.int
	defer guard("exit", &rc)
	mu.Lock()
	defer mu.Unlock()

	st := drmcore.Stage(cstage)
	log.Infof("exit(%s, %d)", st, int(ret))
	if active != nil {
		active.Fini(st, int(ret))
		active = nil
	}
	C.drm_restore_table_free()
}

// current returns the active hooks, or an error for a hook called outside
// init .. exit (which criu does not do).
func current(what string) (hooks, error) {
	if active == nil {
		return nil, fmt.Errorf("%s called before init", what)
	}
	return active, nil
}

//export drmGoPauseDevices
func drmGoPauseDevices(pid C.int) (rc C.int) {
	what := fmt.Sprintf("PAUSE_DEVICES(pid %d)", int(pid))
	defer guard(what, &rc)
	mu.Lock()
	defer mu.Unlock()

	h, err := current(what)
	if err == nil {
		err = h.PauseDevices(int(pid))
	}
	return errno(err, what)
}

//export drmGoDumpUnixSk
func drmGoDumpUnixSk(fd C.int, id C.int) (rc C.int) {
	// criu passes the socket's inode, a u32, as an int.
	ino := uint64(uint32(id))
	what := fmt.Sprintf("DUMP_UNIX_SK(fd %d, ino %d)", int(fd), ino)
	defer guard(what, &rc)
	mu.Lock()
	defer mu.Unlock()

	h, err := current(what)
	if err == nil {
		err = h.DumpUnixSk(int(fd), ino)
	}
	return errno(err, what)
}

//export drmGoResumeDevicesLate
func drmGoResumeDevicesLate(pid C.int) (rc C.int) {
	what := fmt.Sprintf("RESUME_DEVICES_LATE(pid %d)", int(pid))
	defer guard(what, &rc)
	mu.Lock()
	defer mu.Unlock()

	h, err := current(what)
	if err == nil {
		err = h.ResumeDevicesLate(int(pid))
	}
	return errno(err, what)
}

// publishRestoreEntries copies the restore table into C memory, where the
// C RESTORE_UNIX_SK hook finds it in the tasks criu forks.
func publishRestoreEntries(entries []drmcore.RestoreEntry) error {
	seen := make(map[uint64]bool, len(entries))
	for i, e := range entries {
		switch {
		case e.Ino == 0 || e.Ino > 0xffffffff:
			return fmt.Errorf("entry %d: inode %d is not a u32 socket inode", i, e.Ino)
		case seen[e.Ino]:
			return fmt.Errorf("entry %d: inode %d listed twice", i, e.Ino)
		case e.Kind != drmcore.RestoreDRMFile && e.Kind != drmcore.RestoreDmaBuf:
			return fmt.Errorf("entry %d (ino %d): unknown kind %d", i, e.Ino, e.Kind)
		case e.SocketPath == "":
			return fmt.Errorf("entry %d (ino %d): empty socket path", i, e.Ino)
		case len(e.SocketPath) > C.DRM_RESTORE_PATH_MAX || (e.SocketPath[0] != 0 && len(e.SocketPath) >= C.DRM_RESTORE_PATH_MAX):
			return fmt.Errorf("entry %d (ino %d): socket path %q too long", i, e.Ino, e.SocketPath)
		case len(e.Request) < 16:
			return fmt.Errorf("entry %d (ino %d): request of %d bytes has no header", i, e.Ino, len(e.Request))
		}
		seen[e.Ino] = true
	}

	if rc := C.drm_restore_table_reset(C.size_t(len(entries))); rc < 0 {
		return syscall.Errno(-rc)
	}
	for i, e := range entries {
		path := []byte(e.SocketPath)
		rc := C.drm_restore_table_set(C.size_t(i), C.uint64_t(e.Ino), C.int(e.Kind),
			(*C.char)(unsafe.Pointer(&path[0])), C.size_t(len(path)),
			unsafe.Pointer(&e.Request[0]), C.size_t(len(e.Request)))
		if rc < 0 {
			return fmt.Errorf("entry %d (ino %d): %w", i, e.Ino, syscall.Errno(-rc))
		}
		log.Debugf("restore table: ino %d kind %d path %s (%d-byte request)", e.Ino, e.Kind, e.SocketPath, len(e.Request))
	}
	return nil
}
