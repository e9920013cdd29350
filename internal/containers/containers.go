// Package containers runs workloads in real runc and podman containers for
// the end-to-end tests: it builds root filesystems of static binaries, makes
// OCI bundles that keep `runc spec`'s default namespaces and mounts, and
// drives run, checkpoint, restore and removal. criu (the project's wrapper)
// and the plugin directory are always named explicitly, so nothing depends
// on, or changes, the host's /etc/criu/runc.conf.
//
// Every runc or podman instance keeps its state in a directory of its own,
// and names come from UniqueName, so tests can run next to each other and
// next to other users of runc and podman on the same machine.
package containers

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// UniqueName returns prefix-<random hex>, with the characters runc and
// podman refuse in a name replaced by '-'.
func UniqueName(prefix string) string {
	var b strings.Builder
	for _, r := range prefix {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	p := strings.Trim(b.String(), "-.")
	if len(p) > 40 {
		p = p[:40]
	}
	if p == "" {
		p = "drmcr"
	}
	var id [6]byte
	rand.Read(id[:]) // never fails (Go 1.24+: it does not return errors)
	return p + "-" + hex.EncodeToString(id[:])
}

// runCmd runs cmd and returns its combined output; the error names the
// command and carries the output.
func runCmd(cmd *exec.Cmd) (string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// CriuLogSummary returns the lines of the criu log at path that say what
// went wrong: criu's errors and the DRM plugin's lines, at most max of
// them (the last ones). It is what a failed checkpoint or restore reports.
func CriuLogSummary(path string, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no criu log: %v)", err)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error") || strings.Contains(l, "drm_plugin") || strings.Contains(l, "Warn") {
			keep = append(keep, l)
		}
	}
	if len(keep) > max {
		keep = keep[len(keep)-max:]
	}
	return strings.Join(keep, "\n")
}
