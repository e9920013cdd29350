package containers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteCriuConfig writes a criu configuration file that makes criu load
// its plugins from libDir (`lib DIR`), the way a user names the plugin
// directory in /etc/criu/runc.conf. The path is written in double quotes,
// which criu's configuration syntax takes for a value with blanks or '#';
// a path holding a double quote, a backslash or a newline is refused.
func WriteCriuConfig(path, libDir string) error {
	abs, err := filepath.Abs(libDir)
	if err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	if strings.ContainsAny(abs, "\"\\\n") {
		return fmt.Errorf("criu config: plugin directory %q holds a double quote, backslash or newline", abs)
	}
	if err := os.WriteFile(path, []byte("lib \""+abs+"\"\n"), 0o644); err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	return nil
}

// WriteCriuWrapper writes an executable script named criu into dir that
// runs criu with env added to its environment, and returns its path.
// podman runs runc, and so criu, with an environment of its own (PATH and
// XDG_RUNTIME_DIR; conmon adds HOME at restore), so settings a plugin
// reads from criu's environment reach it only through such a wrapper.
func WriteCriuWrapper(dir, criu string, env []string) (string, error) {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Written by drmcr/internal/containers: criu with a test's environment.\n")
	for _, e := range env {
		key, val, ok := strings.Cut(e, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t\n'\"$=;") {
			return "", fmt.Errorf("criu wrapper: bad environment entry %q", e)
		}
		fmt.Fprintf(&b, "%s=%s\nexport %s\n", key, shellQuote(val), key)
	}
	fmt.Fprintf(&b, "exec %s \"$@\"\n", shellQuote(criu))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("criu wrapper: %w", err)
	}
	path := filepath.Join(dir, "criu")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o755); err != nil {
		return "", fmt.Errorf("criu wrapper: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("criu wrapper: %w", err)
	}
	return path, nil
}

// shellQuote quotes s for sh: inside single quotes, ' is the only
// character that needs care.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
