package containers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Runc runs containers with runc, keeping runc's state in a directory of
// its own.
type Runc struct {
	Bin  string   // runc
	Criu string   // criu binary for checkpoint and restore (runc --criu)
	Root string   // runc's state directory (runc --root)
	Env  []string // added to runc's environment, which criu inherits

	mu  sync.Mutex
	ids map[string]bool // containers to remove in Close
}

// Container is a container that Run or Restore started.
type Container struct {
	ID     string
	Bundle *Bundle
	// Out is what the container's processes write. A restored container
	// writes into a new Output.
	Out  *Output
	runc *Runc
}

// CheckpointOptions are the options of `runc checkpoint`.
type CheckpointOptions struct {
	ImagePath    string // criu's images (--image-path)
	WorkPath     string // criu's log and work files (--work-path): dump.log
	LeaveRunning bool   // --leave-running: the container goes on
}

func (r *Runc) command(args ...string) *exec.Cmd {
	cmd := exec.Command(r.Bin, append([]string{"--root", r.Root, "--criu", r.Criu}, args...)...)
	cmd.Env = append(os.Environ(), r.Env...)
	return cmd
}

func (r *Runc) track(id string, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	if live {
		r.ids[id] = true
	} else {
		delete(r.ids, id)
	}
}

// Run starts a detached container (`runc run -d`) from the bundle, which
// must have been saved.
func (r *Runc) Run(id string, b *Bundle) (*Container, error) {
	return r.start(id, b, "run", "-d", "--bundle", b.Dir, id)
}

// Restore starts a detached container from a checkpoint (`runc restore
// -d`). criu's restore.log goes to workPath.
func (r *Runc) Restore(id string, b *Bundle, imagePath, workPath string) (*Container, error) {
	c, err := r.start(id, b, "restore", "-d", "--bundle", b.Dir, "--image-path", imagePath, "--work-path", workPath, id)
	if err != nil {
		return nil, fmt.Errorf("%w\ncriu log (%s):\n%s", err, filepath.Join(workPath, "restore.log"),
			CriuLogSummary(filepath.Join(workPath, "restore.log"), 40))
	}
	return c, nil
}

func (r *Runc) start(id string, b *Bundle, args ...string) (*Container, error) {
	in, out, o, release, err := stdio()
	if err != nil {
		return nil, err
	}
	cmd := r.command(args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, out
	r.track(id, true)
	err = cmd.Run()
	release()
	if err != nil {
		// runc's own message went into the container's output: once runc
		// and whatever it started are gone, the pipe ends.
		o.WaitClosed(5 * time.Second)
		r.Delete(id)
		return nil, fmt.Errorf("runc %s %s: %w: %s", args[0], id, err, strings.TrimSpace(o.String()))
	}
	return &Container{ID: id, Bundle: b, Out: o, runc: r}, nil
}

// Checkpoint checkpoints the container (`runc checkpoint`). Without
// LeaveRunning the container is gone afterwards.
func (c *Container) Checkpoint(opt CheckpointOptions) error {
	args := []string{"checkpoint", "--image-path", opt.ImagePath, "--work-path", opt.WorkPath}
	if opt.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if _, err := runCmd(c.runc.command(append(args, c.ID)...)); err != nil {
		return fmt.Errorf("%w\ncriu log (%s):\n%s", err, filepath.Join(opt.WorkPath, "dump.log"),
			CriuLogSummary(filepath.Join(opt.WorkPath, "dump.log"), 40))
	}
	if !opt.LeaveRunning {
		c.runc.track(c.ID, false)
	}
	return nil
}

// Status returns the container's runc status ("running", "stopped", ...),
// or "" when runc does not know it.
func (c *Container) Status() (string, error) { return c.runc.Status(c.ID) }

// Delete kills and removes the container.
func (c *Container) Delete() error { return c.runc.Delete(c.ID) }

// Status returns the runc status of container id, or "" when runc does
// not know it.
func (r *Runc) Status(id string) (string, error) {
	out, err := runCmd(r.command("state", id))
	if err != nil {
		if strings.Contains(out, "does not exist") {
			return "", nil
		}
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "", fmt.Errorf("runc state %s: %w", id, err)
	}
	return st.Status, nil
}

// Delete kills container id and removes it (`runc delete --force`, which
// waits until its processes are gone). A container runc does not know is
// already deleted.
func (r *Runc) Delete(id string) error {
	out, err := runCmd(r.command("delete", "--force", id))
	r.track(id, false)
	if err != nil && !strings.Contains(out, "does not exist") {
		return err
	}
	return nil
}

// Close deletes every container Run or Restore started that is not
// deleted yet, then runc's state directory.
func (r *Runc) Close() error {
	r.mu.Lock()
	var ids []string
	for id := range r.ids {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if err := r.Delete(id); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(r.Root); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
