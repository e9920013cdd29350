package containers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// Wrap runs every podman command through a command: on a host of
	// its own (crrun.Host.Wrap), where its containers then run, see the
	// host's mounts and are checkpointed and restored by a criu there.
	Wrap []string
	// StateDir is where podman's commands find Dir, if elsewhere: on
	// hosts, one path that each host binds its own directory to, as
	// two machines keep their state at the same path. A checkpoint
	// archive names some paths of podman's state (conmon's pid file), so
	// it restores only on a podman whose state is at the same path.
	StateDir string
}

func (p *Podman) stateDir() string {
	if p.StateDir != "" {
		return p.StateDir
	}
	return p.Dir
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
		"--root", filepath.Join(p.stateDir(), "root"),
		"--runroot", filepath.Join(p.stateDir(), "run"),
		"--tmpdir", filepath.Join(p.stateDir(), "tmp"),
		"--runtime", p.runc,
		"--runtime-flag", "criu=" + p.criu,
	}
	argv := append(append(slices.Clone(p.Wrap), p.Bin), global...)
	cmd := exec.Command(argv[0], append(argv[1:], args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(p.criu)+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd
}

func (p *Podman) run(args ...string) (string, error) {
	return runCmd(p.command(args...))
}

// inspect returns a field of container name (`podman inspect --format`),
// from podman's standard output only: podman may warn on its standard
// error.
func (p *Podman) inspect(name, format string) (string, error) {
	cmd := p.command("inspect", "--format", format, name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
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

// PodmanRestoreOptions are options of `podman container restore`.
type PodmanRestoreOptions struct {
	// Keep: --keep, which keeps criu's restore.log (see CriuLog);
	// podman deletes it after a successful restore otherwise.
	Keep bool
}

// RestoreImport restores an exported checkpoint as a new container name
// (`podman container restore --import FILE --name NAME`), with at most
// one set of options.
func (p *Podman) RestoreImport(archive, name string, opts ...PodmanRestoreOptions) error {
	args := []string{"container", "restore", "--import", archive, "--name", name}
	if len(opts) > 0 && opts[0].Keep {
		args = append(args, "--keep")
	}
	if _, err := p.run(args...); err != nil {
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
	dir, err := p.inspect(name, "{{.StaticDir}}")
	if err != nil {
		return "", err
	}
	// Where this process finds it, if podman's state is bound elsewhere.
	if rel, err := filepath.Rel(p.stateDir(), dir); err == nil && !strings.HasPrefix(rel, "..") {
		dir = filepath.Join(p.Dir, rel)
	}
	return filepath.Join(dir, log), nil
}

// CriuLog returns criu's log of the container's last checkpoint
// ("dump.log", kept only by a checkpoint with Keep or one that failed) or
// restore ("restore.log", kept only by a restore with Keep or one that
// failed), from the container's directory.
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
	return p.inspect(name, "{{.State.Status}}")
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
	if err := unmountUnder(p.Wrap, p.stateDir()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount point at or below dir, deepest first,
// in this process's mount namespace or, through wrap, a host's.
func unmountUnder(wrap []string, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	var b []byte
	if wrap == nil {
		b, err = os.ReadFile("/proc/self/mountinfo")
	} else {
		argv := append(slices.Clone(wrap), "cat", "/proc/self/mountinfo")
		b, err = exec.Command(argv[0], argv[1:]...).Output()
	}
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
		if wrap != nil {
			argv := append(slices.Clone(wrap), "umount", "--lazy", points[i])
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w: %s", points[i], err, out))
			}
			continue
		}
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
