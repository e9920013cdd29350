package containers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Podman runs podman with storage and state of its own (--root, --runroot
// and --tmpdir under Dir), so its containers and images never mix with
// the host's, with runc as the OCI runtime and criu named explicitly.
// Close removes it all.
type Podman struct {
	Bin  string
	Dir  string
	runc string
	criu string // the wrapper that runc runs as criu
}

// NewPodman prepares a podman whose state lives in a new directory under
// the system's temporary directory (podman refuses a --runroot longer than
// 50 characters: its sockets' paths must fit into a sockaddr_un). runc
// checkpoints and restores with criu, run with criuEnv added to its
// environment: podman gives runc an environment of its own, so the
// environment reaches criu only through a wrapper script (see
// WriteCriuWrapper), which podman also finds on PATH for its own criu
// version check.
func NewPodman(bin, runc, criu string, criuEnv []string) (*Podman, error) {
	dir, err := os.MkdirTemp("", "drmcr-podman-")
	if err != nil {
		return nil, fmt.Errorf("podman: %w", err)
	}
	if n := len(filepath.Join(dir, "run")); n > 50 {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("podman: run directory under %s would be %d characters long, podman takes at most 50: set TMPDIR to a shorter directory", os.TempDir(), n)
	}
	for _, d := range []string{"root", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("podman: %w", err)
		}
	}
	wrapper, err := WriteCriuWrapper(filepath.Join(dir, "bin"), criu, criuEnv)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("podman: %w", err)
	}
	return &Podman{Bin: bin, Dir: dir, runc: runc, criu: wrapper}, nil
}

func (p *Podman) command(args ...string) *exec.Cmd {
	global := []string{
		"--root", filepath.Join(p.Dir, "root"),
		"--runroot", filepath.Join(p.Dir, "run"),
		"--tmpdir", filepath.Join(p.Dir, "tmp"),
		"--runtime", p.runc,
		"--runtime-flag", "criu=" + p.criu,
	}
	cmd := exec.Command(p.Bin, append(global, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(p.criu)+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd
}

func (p *Podman) run(args ...string) (string, error) {
	return runCmd(p.command(args...))
}

// Import makes image from a root filesystem tarball (`podman import`): no
// registry is involved.
func (p *Podman) Import(tarball, image string) error {
	_, err := p.run("import", tarball, image)
	return err
}

// Mount is a bind mount of a host path into a container.
type Mount struct{ Source, Destination string }

// RunOptions describe a detached podman container.
type RunOptions struct {
	Name        string
	Image       string
	Args        []string
	Env         []string
	Mounts      []Mount
	Annotations map[string]string
}

// Run starts a detached container (`podman run -d`) with RLIMIT_NOFILE and
// RLIMIT_NPROC set to 1024. As root, podman asks by default for 1048576 of
// both, more than the hard limits the container's init inherits from
// conmon on machines like these VMs (nofile 20000, nproc 32768), whose
// processes lack CAP_SYS_RESOURCE: runc then fails with "error setting
// rlimit type 7 (or 6): operation not permitted". (The kernel does not
// enforce RLIMIT_NPROC on root's processes anyway.)
func (p *Podman) Run(o RunOptions) error {
	args := []string{"run", "-d", "--name", o.Name, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
	for _, e := range o.Env {
		args = append(args, "--env", e)
	}
	for _, m := range o.Mounts {
		args = append(args, "--volume", m.Source+":"+m.Destination)
	}
	for k, v := range o.Annotations {
		args = append(args, "--annotation", k+"="+v)
	}
	args = append(args, o.Image)
	_, err := p.run(append(args, o.Args...)...)
	return err
}

// PodmanCheckpointOptions are options of `podman container checkpoint`.
type PodmanCheckpointOptions struct {
	Export       string // --export FILE: the checkpoint as a tar archive
	LeaveRunning bool
	// Keep: --keep, which keeps criu's dump.log (see CriuLog); podman
	// deletes it after a successful checkpoint otherwise.
	Keep bool
}

// Checkpoint checkpoints container name. Its error carries criu's errors
// from dump.log.
func (p *Podman) Checkpoint(name string, o PodmanCheckpointOptions) error {
	args := []string{"container", "checkpoint"}
	if o.Export != "" {
		args = append(args, "--export", o.Export)
	}
	if o.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if o.Keep {
		args = append(args, "--keep")
	}
	if _, err := p.run(append(args, name)...); err != nil {
		return p.withCriuLog(err, name, "dump.log")
	}
	return nil
}

// Restore restores container name from its own checkpoint (`podman
// container restore NAME`).
func (p *Podman) Restore(name string) error {
	if _, err := p.run("container", "restore", name); err != nil {
		return p.withCriuLog(err, name, "restore.log")
	}
	return nil
}

// RestoreImport restores an exported checkpoint as a new container name
// (`podman container restore --import FILE --name NAME`).
func (p *Podman) RestoreImport(archive, name string) error {
	if _, err := p.run("container", "restore", "--import", archive, "--name", name); err != nil {
		return p.withCriuLog(err, name, "restore.log")
	}
	return nil
}

// withCriuLog adds the errors of criu's log in the container's directory.
func (p *Podman) withCriuLog(err error, name, log string) error {
	path, perr := p.criuLogPath(name, log)
	if perr != nil {
		return err
	}
	return fmt.Errorf("%w\ncriu log (%s):\n%s", err, path, CriuLogSummary(path, 40))
}

func (p *Podman) criuLogPath(name, log string) (string, error) {
	dir, err := p.run("inspect", "--format", "{{.StaticDir}}", name)
	if err != nil {
		return "", err
	}
	return filepath.Join(strings.TrimSpace(dir), log), nil
}

// CriuLog returns criu's log of the container's last checkpoint
// ("dump.log", kept only by a checkpoint with Keep or one that failed) or
// restore ("restore.log"), from the container's directory.
func (p *Podman) CriuLog(name, log string) (string, error) {
	path, err := p.criuLogPath(name, log)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("criu log of %s: %w", name, err)
	}
	return string(b), nil
}

// Logs returns what container name wrote to its stdout and stderr
// (`podman logs`, which replays each on its own stream).
func (p *Podman) Logs(name string) (string, error) {
	return p.run("logs", name)
}

// Status returns the container's state ("running", "exited", ...).
func (p *Podman) Status(name string) (string, error) {
	out, err := p.run("inspect", "--format", "{{.State.Status}}", name)
	return strings.TrimSpace(out), err
}

// Remove kills and removes container name; a container podman does not
// know is already removed.
func (p *Podman) Remove(name string) error {
	out, err := p.run("rm", "--force", "--ignore", name)
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// Close removes every container and image of this podman, then its
// directory. Mounts left under it are unmounted first, so that nothing of
// it stays behind even after a failed test.
func (p *Podman) Close() error {
	var errs []error
	if _, err := p.run("rm", "--all", "--force"); err != nil {
		errs = append(errs, err)
	}
	if _, err := p.run("rmi", "--all", "--force"); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(p.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == abs || strings.HasPrefix(mp, abs+"/") {
			points = append(points, mp)
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountinfo undoes the octal escapes (\040 for a blank, ...) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}
