// Package ksimtest starts kernelsim for tests: in-process (a Kernel served
// on sockets in a temporary directory) or as a real kernelsimd process.
package ksimtest

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"drmcr/kernelsim"
	_ "drmcr/kernelsim/amdgpu" // the drivers register themselves
	"drmcr/kernelsim/libdrm"
	_ "drmcr/kernelsim/xe"
)

// Env is a running kernelsim.
type Env struct {
	Dir    string
	Kernel *kernelsim.Kernel // nil for a daemon process
	Server *kernelsim.Server
	Cmd    *exec.Cmd
}

// Start serves a new kernel in-process until the test ends.
func Start(t testing.TB, cfg kernelsim.Config) *Env {
	t.Helper()
	dir := shortTempDir(t)
	k, err := kernelsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kernelsim.Serve(k, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		k.Shutdown()
	})
	return &Env{Dir: dir, Kernel: k, Server: srv}
}

// StartDaemon runs the kernelsimd binary at path until the test ends.
func StartDaemon(t testing.TB, path string, args ...string) *Env {
	t.Helper()
	return StartDaemonWith(t, path, DaemonOptions{}, args...)
}

// DaemonOptions adjust how StartDaemonWith runs kernelsimd.
type DaemonOptions struct {
	// Cred runs the daemon as another user, who gets its runtime
	// directory.
	Cred *syscall.Credential
	// Log receives the daemon's standard error, as well as the test's.
	Log io.Writer
	// UserNS runs the daemon in a user namespace of its own, the test's
	// uid and gid mapped to themselves (for limits that are set per user
	// namespace, such as /proc/sys/user/max_inotify_watches).
	UserNS bool
}

// StartDaemonWith is StartDaemon with options.
func StartDaemonWith(t testing.TB, path string, opts DaemonOptions, args ...string) *Env {
	t.Helper()
	dir := shortTempDir(t)
	cmd := exec.Command(path, append([]string{"-runtime-dir", dir, "-q"}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if opts.Log != nil {
		cmd.Stderr = io.MultiWriter(os.Stderr, opts.Log)
	}
	// Never outlive the test process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: opts.Cred}
	if opts.UserNS {
		uid, gid := os.Getuid(), os.Getgid()
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	}
	if opts.Cred != nil {
		if err := os.Chown(dir, int(opts.Cred.Uid), int(opts.Cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kernelsimd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		var werr error
		go func() { werr = cmd.Wait(); close(done) }()
		select {
		case <-done:
			// A clean exit on SIGINT; a race report makes it exit 66.
			if werr != nil {
				t.Errorf("kernelsimd exited with %v", werr)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("kernelsimd did not exit on SIGINT")
		}
	})
	ctlPath := kernelsim.ControlPath(dir)
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(ctlPath); err == nil {
			return &Env{Dir: dir, Cmd: cmd}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("kernelsimd did not create %s", ctlPath)
	return nil
}

// Open opens render node minor.
func (e *Env) Open(t testing.TB, minor uint32) *libdrm.Device {
	t.Helper()
	d, err := libdrm.Open(kernelsim.RenderNodePath(e.Dir, minor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// shortTempDir makes a temporary directory with a short path: unix socket
// paths are limited to 108 bytes.
func shortTempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "ksim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Clean(dir)
}
