// Package plugin is the Go side of drm_plugin.so, the CRIU plugin for DRM
// (GPU) state.
//
// criu loads only the C part (plugin/c): the Go runtime must not run in
// criu's process, which has to stay single-threaded (setns into mount and
// user namespaces, and criu's own SIGCHLD handling, depend on it). At init
// the C part starts a helper process that loads the Go library
// (plugin/core) and calls Serve; each hook criu calls is then forwarded over
// a socket as one request, answered by log lines (which the C part prints
// through criu's logging), restore-table entries and a result.
package plugin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"syscall"

	"drmcr/drmcore"
)

// Hooks is what the helper needs from the plugin's logic; *drmcore.Plugin
// satisfies it.
type Hooks interface {
	Init(stage drmcore.Stage) error
	Fini(stage drmcore.Stage, ret int)
	// PauseDevices, DumpUnixSk and ResumeDevicesLate return an error
	// wrapping drmcore.ErrNotMine for a task or socket that holds no GPU
	// state: criu then offers it to the next plugin.
	PauseDevices(pid int) error
	DumpUnixSk(fd int, ino uint64) error
	ResumeDevicesLate(pid int) error
	RestoreEntries() []drmcore.RestoreEntry // valid after Init(StageRestore) succeeded
}

var _ Hooks = (*drmcore.Plugin)(nil)

// Env is what criu hands the plugin at init.
type Env struct {
	Stage drmcore.Stage
	// ImageDirFD is criu's images directory (criu_get_image_dir()), or -1.
	ImageDirFD int
	// Getenv reads the plugin's settings: from criu's environment, else
	// from the config file (DefaultConfigFile, or DRMCR_CONFIG).
	Getenv func(string) string
	Log    drmcore.Logger
}

// NewHooks makes the hooks for one criu run.
type NewHooks func(env Env) (Hooks, error)

// server serves one channel: one criu run.
type server struct {
	conn     *net.UnixConn
	log      *relay
	newHooks NewHooks
	hooks    Hooks // between a successful init and exit
	stage    drmcore.Stage
	imageDir int // our copy of criu's images directory, or -1
}

// Serve serves the channel c until criu ends it: after the exit hook, or
// when criu's end closes (criu died), after which whatever the run had
// paused is resumed and a restore in progress is aborted.
func Serve(c *net.UnixConn, newHooks NewHooks) error {
	s := &server{conn: c, log: newRelay(c), newHooks: newHooks, imageDir: -1}
	defer s.closeImageDir()
	hello := binary.LittleEndian.AppendUint32(nil, channelVersion)
	hello = binary.LittleEndian.AppendUint32(hello, 0)
	hello = binary.LittleEndian.AppendUint32(hello, uint32(os.Getpid()))
	if err := writeFrame(c, frameHello, hello); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	for {
		f, err := readFrame(c)
		if err != nil {
			if s.hooks != nil {
				s.hooks.Fini(s.stage, -1)
				s.hooks = nil
			}
			if errors.Is(err, io.EOF) {
				return nil // criu closed the channel
			}
			return fmt.Errorf("channel: %w", err)
		}
		s.log.begin()
		rc := s.dispatch(f)
		closeFDs(f.fds) // whatever the hook did not take
		if err := s.log.end(rc); err != nil {
			return fmt.Errorf("channel: %w", err)
		}
		if f.typ == frameExit {
			return nil
		}
	}
}

func (s *server) closeImageDir() {
	if s.imageDir >= 0 {
		syscall.Close(s.imageDir)
		s.imageDir = -1
	}
}

// dispatch runs one hook and returns its result in criu's convention.
func (s *server) dispatch(f frame) (rc int32) {
	what := fmt.Sprintf("frame %d", f.typ)
	defer func() {
		if r := recover(); r != nil {
			s.log.Errorf("%s: panic: %v\n%s", what, r, debug.Stack())
			rc = -int32(syscall.EIO)
		}
	}()
	p := f.payload
	switch f.typ {
	case frameInit:
		if len(p) < 8 {
			return s.errno(fmt.Errorf("short init frame"), "init")
		}
		stage := drmcore.Stage(binary.LittleEndian.Uint32(p))
		what = fmt.Sprintf("init(%s)", stage)
		s.log.setLevel(binary.LittleEndian.Uint32(p[4:]))
		dirFD := -1
		if len(f.fds) > 0 {
			dirFD, f.fds[0] = f.fds[0], -1
		}
		return s.errno(s.init(stage, dirFD, parseEnv(p[8:])), what)
	case framePauseDevices, frameResumeDevicesLate, frameDumpUnixSk:
		if len(p) < 4 {
			return s.errno(fmt.Errorf("short frame"), what)
		}
		arg := binary.LittleEndian.Uint32(p)
		if s.hooks == nil {
			return s.errno(fmt.Errorf("hook called outside init .. exit"), what)
		}
		switch f.typ {
		case framePauseDevices:
			what = fmt.Sprintf("PAUSE_DEVICES(pid %d)", int32(arg))
			return s.errno(s.hooks.PauseDevices(int(int32(arg))), what)
		case frameResumeDevicesLate:
			what = fmt.Sprintf("RESUME_DEVICES_LATE(pid %d)", int32(arg))
			return s.errno(s.hooks.ResumeDevicesLate(int(int32(arg))), what)
		}
		what = fmt.Sprintf("DUMP_UNIX_SK(ino %d)", arg)
		if len(f.fds) != 1 {
			return s.errno(fmt.Errorf("%d descriptors sent, want 1", len(f.fds)), what)
		}
		return s.errno(s.hooks.DumpUnixSk(f.fds[0], uint64(arg)), what)
	case frameExit:
		if len(p) < 8 {
			return s.errno(fmt.Errorf("short exit frame"), "exit")
		}
		if s.hooks != nil {
			s.hooks.Fini(drmcore.Stage(binary.LittleEndian.Uint32(p)), int(int32(binary.LittleEndian.Uint32(p[4:]))))
			s.hooks = nil
		}
		s.logPeakRSS()
		return 0
	}
	return s.errno(fmt.Errorf("unknown request"), what)
}

// init makes the hooks and starts the stage; at restore it then sends the
// restore table.
func (s *server) init(stage drmcore.Stage, dirFD int, env map[string]string) error {
	if s.hooks != nil { // criu inits once; a second init ends the first stage
		s.hooks.Fini(s.stage, -1)
		s.hooks = nil
	}
	s.closeImageDir()
	s.imageDir = dirFD
	getenv, err := settings(env)
	if err != nil {
		return err
	}
	h, err := s.newHooks(Env{Stage: stage, ImageDirFD: dirFD, Getenv: getenv, Log: s.log})
	if err != nil {
		return err
	}
	if err := h.Init(stage); err != nil {
		if errors.Is(err, drmcore.ErrNotMine) {
			err = fmt.Errorf("init refused: %v", err) // not a valid answer for init: no %w
		}
		h.Fini(stage, -1)
		return err
	}
	if stage == drmcore.StageRestore {
		if err := s.sendRestoreEntries(h.RestoreEntries()); err != nil {
			h.Fini(stage, -1)
			return fmt.Errorf("restore table: %w", err)
		}
	}
	s.hooks, s.stage = h, stage
	return nil
}

// parseEnv reads INIT's "NAME=value\0" strings, keeping only the plugin's
// own variables.
func parseEnv(b []byte) map[string]string {
	env := map[string]string{}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		for _, p := range envPrefixes {
			if strings.HasPrefix(k, p) {
				env[k] = v
			}
		}
	}
	return env
}

// sendRestoreEntries checks the restore table and sends it, one frame per
// entry, for the C part to use in the tasks criu forks.
func (s *server) sendRestoreEntries(entries []drmcore.RestoreEntry) error {
	seen := make(map[uint64]bool, len(entries))
	for i, e := range entries {
		switch {
		case e.Ino == 0 || e.Ino > 0xffffffff:
			return fmt.Errorf("entry %d: inode %d is not a u32 socket inode", i, e.Ino)
		case seen[e.Ino]:
			return fmt.Errorf("entry %d: inode %d listed twice", i, e.Ino)
		case e.Kind != drmcore.RestoreDRMFile && e.Kind != drmcore.RestoreDmaBuf && e.Kind != drmcore.RestoreChannel:
			return fmt.Errorf("entry %d (ino %d): unknown kind %d", i, e.Ino, e.Kind)
		case e.SocketPath == "":
			return fmt.Errorf("entry %d (ino %d): empty socket path", i, e.Ino)
		case len(e.SocketPath) > maxSocketPath || (e.SocketPath[0] != 0 && len(e.SocketPath) >= maxSocketPath):
			return fmt.Errorf("entry %d (ino %d): socket path %q is longer than a unix socket address allows", i, e.Ino, e.SocketPath)
		case len(e.Request) < 16:
			return fmt.Errorf("entry %d (ino %d): request of %d bytes has no header", i, e.Ino, len(e.Request))
		}
		seen[e.Ino] = true
	}
	for _, e := range entries {
		b := binary.LittleEndian.AppendUint64(nil, e.Ino)
		b = binary.LittleEndian.AppendUint32(b, uint32(e.Kind))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.SocketPath)))
		b = append(b, e.SocketPath...)
		b = append(b, e.Request...)
		if err := s.log.frame(frameRestoreEntry, b); err != nil {
			return err
		}
		s.log.Debugf("restore table: ino %d kind %d path %s (%d-byte request)", e.Ino, e.Kind, e.SocketPath, len(e.Request))
	}
	return nil
}

// maxSocketPath is sizeof(sockaddr_un.sun_path).
const maxSocketPath = 108

// errno turns a hook's error into criu's return convention: 0, -ENOTSUP
// for ErrNotMine, the wrapped errno if there is one, else -EIO. Real
// errors are logged with what.
func (s *server) errno(err error, what string) int32 {
	if err == nil {
		return 0
	}
	if errors.Is(err, drmcore.ErrNotMine) {
		return -int32(syscall.ENOTSUP)
	}
	s.log.Errorf("%s: %v", what, err)
	var en syscall.Errno
	if errors.As(err, &en) && en != 0 && en != syscall.ENOTSUP {
		return -int32(en)
	}
	return -int32(syscall.EIO)
}

// logPeakRSS logs the helper's peak resident memory, the plugin's side of
// what a checkpoint costs in memory beside criu's own (drmbench reads it).
func (s *server) logPeakRSS() {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.log.Infof("helper process peak RSS %d KiB", ru.Maxrss)
	}
}
