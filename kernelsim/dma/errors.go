package dma

import (
	"context"
	"errors"
	"syscall"
)

// ErrnoError is an error carrying a Linux errno, the way a fence carries a
// negative error code in the kernel.
type ErrnoError struct {
	N   syscall.Errno
	Msg string
}

func (e *ErrnoError) Error() string { return e.Msg }

// Is lets errors.Is match both the sentinel and the bare syscall.Errno.
func (e *ErrnoError) Is(target error) bool {
	if t, ok := target.(syscall.Errno); ok {
		return t == e.N
	}
	return false
}

// Sentinel fence errors (compare with errors.Is).
var (
	// ErrCanceled is -ECANCELED: the work was cancelled before it ran or
	// while running (entity teardown, guilty context).
	ErrCanceled error = &ErrnoError{syscall.ECANCELED, "fence canceled (ECANCELED)"}
	// ErrTimedOut is -ETIME: the job hung and was killed by the timeout
	// handler.
	ErrTimedOut error = &ErrnoError{syscall.ETIME, "job timed out (ETIME)"}
	// ErrNoEnt is -ENOENT: sw_sync signals its pending fences with it when
	// the timeline is released.
	ErrNoEnt error = &ErrnoError{syscall.ENOENT, "timeline released (ENOENT)"}
	// ErrInvalid is -EINVAL: bad input.
	ErrInvalid error = &ErrnoError{syscall.EINVAL, "invalid argument (EINVAL)"}
	// ErrIO is -EIO: a hardware (simulated) error.
	ErrIO error = &ErrnoError{syscall.EIO, "I/O error (EIO)"}
)

// Errno maps err to a negative errno for the wire: 0 for nil, the errno of
// an ErrnoError or syscall.Errno anywhere in the chain, -ETIME for a deadline,
// -EINTR for a cancelled context, and -EIO for anything else.
func Errno(err error) int32 {
	if err == nil {
		return 0
	}
	var e *ErrnoError
	if errors.As(err, &e) {
		return -int32(e.N)
	}
	var se syscall.Errno
	if errors.As(err, &se) {
		return -int32(se)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return -int32(syscall.ETIME)
	case errors.Is(err, context.Canceled):
		return -int32(syscall.EINTR)
	}
	return -int32(syscall.EIO)
}

// ErrFromErrno is the inverse of Errno for restoring a fence error saved
// as a number: it returns the matching sentinel, or an ErrnoError for others.
func ErrFromErrno(n int32) error {
	if n == 0 {
		return nil
	}
	if n < 0 {
		n = -n
	}
	for _, s := range []error{ErrCanceled, ErrTimedOut, ErrNoEnt, ErrInvalid, ErrIO} {
		if s.(*ErrnoError).N == syscall.Errno(n) {
			return s
		}
	}
	en := syscall.Errno(n)
	return &ErrnoError{en, en.Error()}
}
