package drmcore_test

import (
	"strings"
	"testing"
	"time"

	"drmcr/drmcore"
	"drmcr/kernelsim"
)

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cfg, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv)
	if err != nil || cfg.RuntimeDir != kernelsim.DefaultRuntimeDir || cfg.PauseTimeout != 5*time.Second || cfg.ResumeTimeout != time.Minute {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	env["KERNELSIM_RUNTIME_DIR"] = "/tmp/x"
	env["DRMCR_PAUSE_TIMEOUT"] = "250ms"
	cfg, err = drmcore.ConfigFromEnv(drmcore.Config{}, getenv)
	if err != nil || cfg.RuntimeDir != "/tmp/x" || cfg.PauseTimeout != 250*time.Millisecond {
		t.Fatalf("from env: %+v %v", cfg, err)
	}
	for _, bad := range []string{"5", "-1s", "soon"} {
		env["DRMCR_RESUME_TIMEOUT"] = bad
		if _, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err == nil || !strings.Contains(err.Error(), "DRMCR_RESUME_TIMEOUT") {
			t.Errorf("DRMCR_RESUME_TIMEOUT=%q: %v", bad, err)
		}
	}
}
