package crrun

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
)

// Host is a machine of its own on this one, as a restore on another node
// needs: a kernelsimd in a mount namespace of its own, where its runtime
// directory is at the usual place, /run/kernelsim (a tmpfs there that no
// other host sees). Whatever runs on the host (gpuload, criu, podman)
// enters that mount namespace (Wrap, Command), so it finds the host's
// kernelsimd where every client looks by default; the rest of the
// filesystem is the machine's, shared as two nodes would share a network
// file system holding the binaries and the checkpoint.
//
// It needs root, unshare and nsenter (util-linux).
type Host struct {
	*Daemon // Dir: the runtime directory as this process reaches it
	// MountNS is the host's mount namespace (/proc/PID/ns/mnt of its
	// kernelsimd).
	MountNS string
	root    string // /proc/PID/root: the host's filesystem from here
}

// StartHost starts kernelsimd (the binary at bin) with args on a new host
// and waits until it serves.
func StartHost(bin string, args ...string) (*Host, error) {
	// The mount point must exist on the machine; an empty directory
	// there changes nothing for anyone.
	if err := os.MkdirAll(kernelsim.DefaultRuntimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	own, err := os.MkdirTemp("", "kernelsim-host")
	if err != nil {
		return nil, err
	}
	d := &Daemon{LogPath: filepath.Join(own, "kernelsimd.log"), done: make(chan error, 1), own: own}
	if d.log, err = os.Create(d.LogPath); err != nil {
		os.RemoveAll(own)
		return nil, err
	}
	// unshare and the shell exec into kernelsimd: its pid is the host's.
	script := `mount -t tmpfs -o mode=0755 kernelsim "$1" && shift && exec "$@"`
	d.cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
		kernelsim.DefaultRuntimeDir, bin, "-runtime-dir", kernelsim.DefaultRuntimeDir}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.log.Close()
		os.RemoveAll(own)
		return nil, fmt.Errorf("start a host: %w", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	pid := d.cmd.Process.Pid
	// Through /proc/PID/root a path is looked up in the host's mounts.
	h := &Host{Daemon: d, MountNS: fmt.Sprintf("/proc/%d/ns/mnt", pid), root: fmt.Sprintf("/proc/%d/root", pid)}
	d.Dir = h.root + kernelsim.DefaultRuntimeDir
	// Serving once the process is kernelsimd (the tmpfs is mounted before
	// the exec) and its control socket exists.
	if !Poll(10*time.Second, func() bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != filepath.Base(bin)[:min(15, len(filepath.Base(bin)))] {
			return false
		}
		_, err = os.Stat(kernelsim.ControlPath(d.Dir))
		return err == nil
	}) {
		d.Stop()
		return nil, fmt.Errorf("the host's kernelsimd did not start serving:\n%s", d.Log())
	}
	return h, nil
}

// Wrap is the command that runs a program on the host: nsenter into its
// mount namespace (the program keeps this process's environment and
// credentials; its working directory becomes /).
func (h *Host) Wrap() []string { return []string{"nsenter", "--mount=" + h.MountNS, "--"} }

// Command is exec.Command on the host.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	argv := append(h.Wrap(), name)
	return exec.Command(argv[0], append(argv[1:], args...)...)
}

// Bind makes dir the host's own at path: a bind mount in the host's mount
// namespace, which no other host sees, so that two hosts can each keep
// their state at one path, as two machines do. path is created if
// missing (an empty directory, on the machine).
func (h *Host) Bind(dir, path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if out, err := h.Command("mount", "--bind", dir, path).CombinedOutput(); err != nil {
		return fmt.Errorf("host: mount --bind %s %s: %w: %s", dir, path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// StartWorkload starts gpuload on the host, with the host's kernelsimd at
// the default runtime directory. Its files go to dir.
func (h *Host) StartWorkload(bin, dir, scenario string, args ...string) (*Workload, error) {
	inheritNothing.Do(closeOnExecInherited)
	return startWorkload(h.Wrap(), h.root, bin, kernelsim.DefaultRuntimeDir, dir, scenario, args...)
}

var inheritNothing sync.Once

// closeOnExecInherited marks close-on-exec the descriptors this process
// inherited (from the shell that started the tests, say): every process
// it starts would inherit them too, and a workload holding a file of the
// machine's mounts cannot be dumped on a host (criu: "Can't lookup
// mount"). Go opens its own descriptors close-on-exec.
func closeOnExecInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}
