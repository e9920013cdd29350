package drmcore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/amdgpu"
	"drmcr/dmabuf"
	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// This file drives drmcore the way criu drives the plugin, without criu:
// the whole dump/restore logic runs against an in-process kernelsim, with
// the test process standing in for the dumped task.

type testLog struct{ t testing.TB }

func (l testLog) Errorf(f string, a ...any) { l.t.Logf("E: "+f, a...) }
func (l testLog) Warnf(f string, a ...any)  { l.t.Logf("W: "+f, a...) }
func (l testLog) Infof(f string, a ...any)  { l.t.Logf("I: "+f, a...) }
func (l testLog) Debugf(f string, a ...any) { l.t.Logf("D: "+f, a...) }

func newPlugin(t testing.TB, env *ksimtest.Env, dir string) *drmcore.Plugin {
	t.Helper()
	d, err := images.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	cfg := drmcore.Config{
		Log: testLog{t}, ImageDir: d, RuntimeDir: env.Dir,
		PauseTimeout: pauseTimeout, ResumeTimeout: 30 * time.Second,
		Drivers: []drmcore.DriverPlugin{amdgpu.New()}, DmaBuf: dmabuf.New(),
	}
	return drmcore.New(cfg)
}

// pauseTimeout is the PAUSE_DEVICES timeout of the tests.
var pauseTimeout = 5 * time.Second

// socketFDs lists this process's socket fds with their inodes.
func socketFDs(t testing.TB) map[int]uint64 {
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

// dump checkpoints this process like criu: PAUSE_DEVICES, DUMP_UNIX_SK for
// every socket, then the exit hook. It returns the images directory and
// the error of the first failing hook (the dump then fails).
func dump(t testing.TB, env *ksimtest.Env) (string, error) {
	t.Helper()
	dir := t.TempDir()
	p := newPlugin(t, env, dir)
	if err := p.Init(drmcore.StageDump); err != nil {
		t.Fatal(err)
	}
	err := p.PauseDevices(os.Getpid())
	if err == nil {
		for fd, ino := range socketFDs(t) {
			if derr := p.DumpUnixSk(fd, ino); derr != nil && !errors.Is(derr, drmcore.ErrNotMine) {
				err = derr
				break
			}
		}
	}
	ret := 0
	if err != nil {
		ret = -1
	}
	p.Fini(drmcore.StageDump, ret)
	return dir, err
}

// claim does in Go what the plugin's C part does in a restored task.
func claim(e drmcore.RestoreEntry) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: e.SocketPath}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := uapi.Send(fd, e.Request); err != nil {
		unix.Close(fd)
		return -1, err
	}
	buf := make([]byte, 65536)
	n, fds, err := uapi.Recv(fd, buf, 0)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	h, err := uapi.ParseHeader(buf[:n])
	if err == nil && h.Status < 0 {
		err = fmt.Errorf("claim inode %d: %w", e.Ino, syscall.Errno(-h.Status))
	}
	if err != nil {
		uapi.CloseFDs(fds)
		unix.Close(fd)
		return -1, err
	}
	if e.Kind == drmcore.RestoreDRMFile {
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

// restoreOrder says how the restored "tasks" claim their files.
type restoreOrder func(entries []drmcore.RestoreEntry) (map[uint64]int, error)

// inOrder claims the entries one by one in the order of perm.
func inOrder(perm []int) restoreOrder {
	return func(entries []drmcore.RestoreEntry) (map[uint64]int, error) {
		out := map[uint64]int{}
		for _, i := range perm {
			fd, err := claim(entries[i])
			if err != nil {
				return out, err
			}
			out[entries[i].Ino] = fd
		}
		return out, nil
	}
}

// nthOrder claims the entries one by one in their k-th permutation (k
// taken modulo the number of permutations).
func nthOrder(k int) restoreOrder {
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
		return inOrder(perm)(entries)
	}
}

// concurrently claims every entry at once.
func concurrently(entries []drmcore.RestoreEntry) (map[uint64]int, error) {
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
			fd, err := claim(e)
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

// restore runs the restore hooks over dir and returns the restored fds by
// dump-time inode. failAfterClaims makes criu fail after the claims, so
// the exit hook must destroy everything.
func restore(t testing.TB, env *ksimtest.Env, dir string, order restoreOrder, failAfterClaims bool) (map[uint64]int, error) {
	t.Helper()
	p := newPlugin(t, env, dir)
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
		err = p.ResumeDevicesLate(os.Getpid())
	}
	ret := 0
	if err != nil || failAfterClaims {
		ret = -1
	}
	p.Fini(drmcore.StageRestore, ret)
	return fds, err
}

func imageNames(t testing.TB, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "drm-*"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}
