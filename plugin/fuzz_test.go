package plugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"drmcr/drmcore"
)

// FuzzSettings: any config file is read or refused with a message naming
// the file and line, never panics; criu's environment wins over the file,
// every setting read is a known one, and the plugin's configuration made
// of them has positive timeouts or is refused naming the setting.
func FuzzSettings(f *testing.F) {
	f.Add([]byte("# settings\n\nKERNELSIM_RUNTIME_DIR = /srv/ksim\nDRMCR_PAUSE_TIMEOUT=9s\n"))
	f.Add([]byte("DRMCR_PAUSE_TIMOUT=9s\n"))
	f.Add([]byte("just words\n"))
	f.Add([]byte("=\n==\n#=\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		conf := filepath.Join(dir, "drm_plugin.conf")
		if err := os.WriteFile(conf, data, 0o600); err != nil {
			t.Fatal(err)
		}
		get, err := settings(map[string]string{"DRMCR_CONFIG": conf, "DRMCR_RESUME_TIMEOUT": "env"})
		if err != nil {
			if !strings.Contains(err.Error(), conf) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if get("DRMCR_RESUME_TIMEOUT") != "env" {
			t.Fatal("the file won over criu's environment")
		}
		file, err := readConfig(conf)
		if err != nil {
			t.Fatalf("settings read the file, readConfig says %v", err)
		}
		for name := range file {
			if !slices.Contains(drmcore.Settings, name) {
				t.Fatalf("unknown setting %q read", name)
			}
		}
		cfg, err := drmcore.ConfigFromEnv(drmcore.Config{}, get)
		switch {
		case err != nil && !strings.Contains(err.Error(), "DRMCR_"):
			t.Fatalf("error does not name the setting: %v", err)
		case err == nil && (cfg.PauseTimeout <= 0 || cfg.ResumeTimeout <= 0 || cfg.RuntimeDir == ""):
			t.Fatalf("configuration %+v", cfg)
		}
	})
}
