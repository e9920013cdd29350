package main

import (
	"fmt"
	"os"

	"drmcr/drmcore"
)

// newHooks makes the hooks for one criu run. imageDirFD is criu's images
// directory (criu_get_image_dir()), or -1 outside criu.
//
// TEMPORARY: a stub that logs each call, claims nothing and restores
// nothing, so that the .so works end to end until drmcore.New exists.
var newHooks = func(log drmcore.Logger, imageDirFD int) (hooks, error) {
	return &stubHooks{log: log, imageDirFD: imageDirFD}, nil
}

type stubHooks struct {
	log        drmcore.Logger
	imageDirFD int
}

func (s *stubHooks) Init(stage drmcore.Stage) error {
	dir, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", s.imageDirFD))
	if err != nil {
		dir = err.Error()
	}
	s.log.Infof("stub: Init(%s), images dir fd %d (%s)", stage, s.imageDirFD, dir)
	return nil
}

func (s *stubHooks) Fini(stage drmcore.Stage, ret int) {
	s.log.Infof("stub: Fini(%s, %d)", stage, ret)
}

func (s *stubHooks) PauseDevices(pid int) error {
	s.log.Infof("stub: PauseDevices(%d)", pid)
	return nil
}

func (s *stubHooks) DumpUnixSk(fd int, ino uint64) error {
	s.log.Debugf("stub: DumpUnixSk(fd %d, ino %d): not mine", fd, ino)
	return drmcore.ErrNotMine
}

func (s *stubHooks) ResumeDevicesLate(pid int) error {
	s.log.Infof("stub: ResumeDevicesLate(%d)", pid)
	return nil
}

func (s *stubHooks) RestoreEntries() []drmcore.RestoreEntry { return nil }
