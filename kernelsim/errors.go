package kernelsim

import (
	"errors"
	"fmt"
	"syscall"

	"drmcr/kernelsim/dma"
)

// Error is an ioctl failure: the errno a client sees and a message saying
// why, which the reply carries too.
type Error struct {
	Errno syscall.Errno
	Msg   string
}

func (e *Error) Error() string { return e.Msg + " (" + e.Errno.Error() + ")" }

// Unwrap lets errors.Is(err, syscall.EINVAL) work.
func (e *Error) Unwrap() error { return e.Errno }

func errnof(errno syscall.Errno, format string, args ...any) error {
	return &Error{Errno: errno, Msg: fmt.Sprintf(format, args...)}
}

// ErrnoOf returns the errno a client sees for err: its own if it has one,
// a fence error's, or EIO.
func ErrnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Errno
	}
	var n syscall.Errno
	if errors.As(err, &n) {
		return n
	}
	if v := dma.Errno(err); v != 0 {
		return syscall.Errno(-v)
	}
	return syscall.EIO
}

// prefixed returns err with prefix before its message, keeping its errno.
func prefixed(prefix string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return &Error{Errno: e.Errno, Msg: prefix + ": " + e.Msg}
	}
	return &Error{Errno: ErrnoOf(err), Msg: prefix + ": " + err.Error()}
}
