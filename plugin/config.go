package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"drmcr/drmcore"
)

// DefaultConfigFile holds the plugin's settings for criu runs whose
// environment does not carry them: podman, for one, starts criu with an
// environment of its own. DRMCR_CONFIG in criu's environment names another
// file. plugin/c/plugin.c reads KERNELSIM_RUNTIME_DIR from it too.
const DefaultConfigFile = "/etc/criu/drm_plugin.conf"

// settings returns the plugin's settings: criu's environment first, then
// the config file. The file has one NAME=value per line, blank lines and
// #-comments; a name that is not a setting is refused (a typo must not
// pass silently). A missing default file is no error; a missing file that
// DRMCR_CONFIG names is.
func settings(env map[string]string) (func(string) string, error) {
	path, named := env["DRMCR_CONFIG"]
	if !named {
		path = DefaultConfigFile
	}
	file, err := readConfig(path)
	if err != nil && (named || !errors.Is(err, fs.ErrNotExist)) {
		return nil, err
	}
	return func(name string) string {
		if v, ok := env[name]; ok {
			return v
		}
		return file[name]
	}, nil
}

func readConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plugin config: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case !ok:
			return nil, fmt.Errorf("%s:%d: want NAME=value, got %q", path, n, line)
		case !slices.Contains(drmcore.Settings, name):
			return nil, fmt.Errorf("%s:%d: unknown setting %q (known: %s)", path, n, name, strings.Join(drmcore.Settings, ", "))
		}
		out[name] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
