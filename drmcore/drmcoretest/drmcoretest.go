// Package drmcoretest drives the DRM plugin's logic the way criu drives
// the plugin, without criu: the dump hooks over a task's sockets, and the
// restore hooks with the C part's claims done in Go. Tests of drmcore and
// of the tools that read its images use it, against an in-process kernelsim.
package drmcoretest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
	"drmcr/subplugins"
)

// Log is a drmcore.Logger writing to the test log.
type Log struct{ T testing.TB }

func (l Log) Summaryf(f string, a ...any) { l.T.Logf("S: "+f, a...) }
func (l Log) Errorf(f string, a ...any)   { l.T.Logf("E: "+f, a...) }
func (l Log) Warnf(f string, a ...any)    { l.T.Logf("W: "+f, a...) }
func (l Log) Infof(f string, a ...any)    { l.T.Logf("I: "+f, a...) }
func (l Log) Debugf(f string, a ...any)   { l.T.Logf("D: "+f, a...) }

// Plugin makes the plugin as criu would load it, writing or reading images
// in dir and talking to the kernelsim at runtimeDir. opts adjust its
// configuration (a DRMCR_DEVICE_MAP, say).
func Plugin(t testing.TB, runtimeDir, dir string, pauseTimeout time.Duration, opts ...func(*drmcore.Config)) *drmcore.Plugin {
	t.Helper()
	d, err := images.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	subs := subplugins.All()
	cfg := drmcore.Config{
		Log: Log{t}, ImageDir: d, RuntimeDir: runtimeDir,
		PauseTimeout: pauseTimeout, ResumeTimeout: 30 * time.Second,
		Drivers: subs.Drivers, DmaBuf: subs.DmaBuf,
		// Two pages files on any machine: tests see BOs spread over more
		// than one, and the same files everywhere.
		PagesFiles: 2,
		// This process stands in for the restored tasks: record, do not
		// kill.
		KillTask: func(pid int) error { t.Logf("the plugin kills pid %d", pid); Killed = append(Killed, pid); return nil },
	}
	for _, o := range opts {
		o(&cfg)
	}
	return drmcore.New(cfg)
}

// Killed lists the pids the plugins of this package asked to kill.
var Killed []int

// SocketInodes lists the socket fds of this process with their inodes.
func SocketInodes(t testing.TB) map[int]uint64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint64{}
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			continue
		}
		out[fd] = st.Ino
	}
	return out
}

// Dump runs the dump hooks as criu does for task pid: init, PAUSE_DEVICES,
// DUMP_UNIX_SK for each socket inode with a copy of the task's socket (the
// task may be another process: its socket is copied with pidfd_getfd, as
// criu's parasite would hand it over), then the exit hook with the dump's
// outcome. It returns the first failing hook's error: the dump failed.
func Dump(t testing.TB, p *drmcore.Plugin, pid int, inodes []uint64) error {
	t.Helper()
	if err := p.Init(drmcore.StageDump); err != nil {
		t.Fatal(err)
	}
	err := p.PauseDevices(pid)
	if errors.Is(err, drmcore.ErrNotMine) {
		err = nil // criu goes on: a task without GPU state
	}
	if err == nil {
		socks, serr := taskSockets(pid)
		if serr != nil {
			t.Fatal(serr)
		}
		for _, ino := range inodes {
			fd, ok := socks[ino]
			if !ok {
				fd = -1
			}
			if derr := p.DumpUnixSk(fd, ino); derr != nil && !errors.Is(derr, drmcore.ErrNotMine) {
				err = derr
				break
			}
		}
		for _, fd := range socks {
			unix.Close(fd)
		}
	}
	ret := 0
	if err != nil {
		ret = -1
	}
	p.Fini(drmcore.StageDump, ret)
	return err
}

// taskSockets returns a copy of each socket of task pid, by inode.
func taskSockets(pid int) (map[uint64]int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	out := map[uint64]int{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			continue // closed meanwhile
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			unix.Close(fd)
			continue
		}
		if _, dup := out[st.Ino]; dup {
			unix.Close(fd)
			continue
		}
		out[st.Ino] = fd
	}
	return out, nil
}

// DumpSelf checkpoints this test process into a new directory; opts
// adjust the plugin's configuration.
func DumpSelf(t testing.TB, runtimeDir string, pauseTimeout time.Duration, opts ...func(*drmcore.Config)) (string, error) {
	t.Helper()
	dir := t.TempDir()
	var inodes []uint64
	for _, ino := range SocketInodes(t) {
		inodes = append(inodes, ino)
	}
	return dir, Dump(t, Plugin(t, runtimeDir, dir, pauseTimeout, opts...), os.Getpid(), inodes)
}

// Claim does in Go what the plugin's C part does in a restored task.
func Claim(e drmcore.RestoreEntry) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: e.SocketPath}); err != nil {
		return fail(err)
	}
	if err := uapi.Send(fd, e.Request); err != nil {
		return fail(err)
	}
	buf := make([]byte, 65536)
	n, fds, err := uapi.Recv(fd, buf, 0)
	if err != nil {
		return fail(err)
	}
	h, err := uapi.ParseHeader(buf[:n])
	if err == nil && h.Status < 0 {
		// The daemon's reason, which the C part logs into criu's log.
		var reason uapi.ErrorReply
		proto.Unmarshal(buf[uapi.HeaderSize:n], &reason)
		err = fmt.Errorf("claim inode %d: %w: %s", e.Ino, syscall.Errno(-h.Status), reason.Message)
	}
	if err != nil {
		uapi.CloseFDs(fds)
		return fail(err)
	}
	if e.Kind == drmcore.RestoreDRMFile || e.Kind == drmcore.RestoreChannel {
		uapi.CloseFDs(fds)
		return fd, nil
	}
	unix.Close(fd)
	if len(fds) != 1 {
		uapi.CloseFDs(fds)
		return -1, fmt.Errorf("dma-buf claim returned %d fds", len(fds))
	}
	return fds[0], nil
}

// Order says how the restored tasks claim their files; it returns the
// restored fds by dump-time inode.
type Order func(entries []drmcore.RestoreEntry) (map[uint64]int, error)

// InOrder claims the entries one by one in the order of perm.
func InOrder(perm []int) Order {
	return func(entries []drmcore.RestoreEntry) (map[uint64]int, error) {
		out := map[uint64]int{}
		for _, i := range perm {
			fd, err := Claim(entries[i])
			if err != nil {
				return out, err
			}
			out[entries[i].Ino] = fd
		}
		return out, nil
	}
}

// NthOrder claims the entries one by one in their k-th permutation (k
// taken modulo the number of permutations).
func NthOrder(k int) Order {
	return func(entries []drmcore.RestoreEntry) (map[uint64]int, error) {
		rest := make([]int, len(entries))
		for i := range rest {
			rest[i] = i
		}
		var perm []int
		for n := len(rest); n > 0; n-- {
			i := k % n
			k /= n
			perm = append(perm, rest[i])
			rest = append(rest[:i], rest[i+1:]...)
		}
		return InOrder(perm)(entries)
	}
}

// Concurrently claims every entry at once.
func Concurrently(entries []drmcore.RestoreEntry) (map[uint64]int, error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  = map[uint64]int{}
		errs []error
	)
	for _, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fd, err := Claim(e)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out[e.Ino] = fd
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Restore runs the restore hooks over dir for this process and returns the
// restored fds by dump-time inode; they are closed when the test ends
// (CloseAll closes them before). A failed restore closes them at once.
// failAfterClaims makes criu fail after the claims, so that the exit hook
// must destroy everything the restore created.
func Restore(t testing.TB, runtimeDir, dir string, order Order, failAfterClaims bool, opts ...func(*drmcore.Config)) (map[uint64]int, error) {
	t.Helper()
	p := Plugin(t, runtimeDir, dir, 5*time.Second, opts...)
	if err := p.Init(drmcore.StageRestore); err != nil {
		p.Fini(drmcore.StageRestore, -1)
		return nil, err
	}
	fds, err := order(p.RestoreEntries())
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	if err == nil && !failAfterClaims {
		if err = p.ResumeDevicesLate(os.Getpid()); errors.Is(err, drmcore.ErrNotMine) {
			err = nil // no drm file claimed: nothing to resume
		}
	}
	ret := 0
	if err != nil || failAfterClaims {
		ret = -1
	}
	p.Fini(drmcore.StageRestore, ret)
	if err != nil {
		// criu kills the tasks of a failed restore, and what they were
		// given goes with them: a claim that won the race against the
		// loader finding damage must not keep its objects alive.
		CloseAll(fds)
		fds = nil
	}
	return fds, err
}

// CloseAll closes the descriptors Restore handed out, as the restored
// tasks' exit does, and forgets them: Restore's cleanup would otherwise
// close the same numbers again, by then maybe someone else's.
func CloseAll(fds map[uint64]int) {
	for ino, fd := range fds {
		unix.Close(fd)
		delete(fds, ino)
	}
}
