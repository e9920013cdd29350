// Package drmcore is the top-level DRM plugin: it recognises the kernelsim
// files of a dumped process tree, dispatches them to the sub-plugin of their
// kind (a driver's render node, or a dma-buf), keeps the object graph of the
// whole checkpoint and prepares restore.
//
// It is independent of CRIU's C ABI: package plugin adapts criu's hooks to
// the methods here.
package drmcore

import "errors"

// Stage is criu's plugin stage (CR_PLUGIN_STAGE__*).
type Stage int

const (
	StageDump    Stage = 0
	StagePreDump Stage = 1
	StageRestore Stage = 2
)

func (s Stage) String() string {
	switch s {
	case StageDump:
		return "dump"
	case StagePreDump:
		return "pre-dump"
	case StageRestore:
		return "restore"
	}
	return "unknown"
}

// ErrNotMine means the file is not a kernelsim file: criu (or another
// plugin) must handle it. The adapter turns it into -ENOTSUP.
var ErrNotMine = errors.New("not a kernelsim file")

// Logger writes into criu's log. Debugf is only shown at criu's -v4;
// Summaryf is shown at criu's default verbosity, for the one line a dump or
// restore ends with, as criu's own errors and warnings are.
type Logger interface {
	Summaryf(format string, args ...any)
	Errorf(format string, args ...any)
	Warnf(format string, args ...any)
	Infof(format string, args ...any)
	Debugf(format string, args ...any)
}

// RestoreKind says what the C part returns for one restored socket.
type RestoreKind int

const (
	// RestoreDRMFile: connect to SocketPath, send Request, read one reply
	// with status 0, and return the connected socket itself.
	RestoreDRMFile RestoreKind = 1
	// RestoreDmaBuf: connect to SocketPath, send Request, read one reply
	// with status 0 carrying one fd (SCM_RIGHTS), close the connection and
	// return the received fd.
	RestoreDmaBuf RestoreKind = 2
	// RestoreChannel: a reply channel of a drm file, restored as
	// RestoreDRMFile is (the connected socket is returned).
	RestoreChannel RestoreKind = 3
)

// RestoreEntry is everything the C part of the plugin needs, inside a
// restored task, to recreate one socket criu asks for by its dump-time
// inode. It is prepared by Go before criu forks.
type RestoreEntry struct {
	Ino        uint64
	Kind       RestoreKind
	SocketPath string
	Request    []byte // one complete protocol message (header + payload)
}
