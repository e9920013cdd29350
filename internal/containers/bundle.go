package containers

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// CriuConfigAnnotation is the bundle annotation in which runc (and podman,
// which runs runc) finds the criu configuration file to pass to criu.
// Without it runc passes /etc/criu/runc.conf; set to "" it passes none.
const CriuConfigAnnotation = "org.criu.config"

// Bundle is an OCI bundle made by `runc spec`. It keeps the default spec's
// namespaces (pid, network, ipc, uts, mount) and mounts (tmpfs /dev, proc,
// sysfs, cgroups, ...); callers change the process, add bind mounts and
// annotations, and Save.
type Bundle struct {
	Dir  string
	Spec *specs.Spec
}

// NewBundle makes a bundle in dir with runc's default spec, whose root is
// rootfs (made absolute) and whose process runs args with no terminal, as
// a detached container must.
func NewBundle(runc, dir, rootfs string, args ...string) (*Bundle, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("bundle %s: no process arguments", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	root, err := filepath.Abs(rootfs)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if _, err := runCmd(exec.Command(runc, "spec", "--bundle", dir)); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("bundle: runc spec: %w", err)
	}
	if s.Process == nil || s.Root == nil {
		return nil, fmt.Errorf("bundle: runc spec has no process or root")
	}
	s.Root.Path = root
	s.Process.Terminal = false
	s.Process.Args = args
	return &Bundle{Dir: dir, Spec: &s}, nil
}

// Setenv sets KEY=VALUE entries in the process's environment.
func (b *Bundle) Setenv(kv ...string) {
	for _, e := range kv {
		key, _, _ := strings.Cut(e, "=")
		env := b.Spec.Process.Env[:0]
		for _, old := range b.Spec.Process.Env {
			if k, _, _ := strings.Cut(old, "="); k != key {
				env = append(env, old)
			}
		}
		b.Spec.Process.Env = append(env, e)
	}
}

// Bind adds a read-write bind mount of the host path src at dst.
func (b *Bundle) Bind(src, dst string) {
	b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{
		Destination: dst,
		Type:        "bind",
		Source:      src,
		Options:     []string{"rbind", "rw"},
	})
}

// Annotate sets an annotation.
func (b *Bundle) Annotate(key, value string) {
	if b.Spec.Annotations == nil {
		b.Spec.Annotations = map[string]string{}
	}
	b.Spec.Annotations[key] = value
}

// Save writes the spec to the bundle's config.json.
func (b *Bundle) Save() error {
	data, err := json.MarshalIndent(b.Spec, "", "\t")
	if err != nil {
		return fmt.Errorf("bundle %s: %w", b.Dir, err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "config.json"), data, 0o644); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}
