package drmcore_test

import (
	"strings"
	"testing"
	"time"

	"drmcr/drmcore"
	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cfg, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv)
	if err != nil || cfg.RuntimeDir != kernelsim.DefaultRuntimeDir || cfg.PauseTimeout != 5*time.Second || cfg.ResumeTimeout != time.Minute || cfg.Checksum != 0 {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	env["KERNELSIM_RUNTIME_DIR"] = "/tmp/x"
	env["DRMCR_PAUSE_TIMEOUT"] = "250ms"
	cfg, err = drmcore.ConfigFromEnv(drmcore.Config{}, getenv)
	if err != nil || cfg.RuntimeDir != "/tmp/x" || cfg.PauseTimeout != 250*time.Millisecond {
		t.Fatalf("from env: %+v %v", cfg, err)
	}
	env["DRMCR_DEVICE_MAP"] = "renderD128=renderD131"
	cfg, err = drmcore.ConfigFromEnv(drmcore.Config{}, getenv)
	if err != nil || len(cfg.DeviceMap) != 1 || cfg.DeviceMap[0].To.Minor != 131 {
		t.Fatalf("DRMCR_DEVICE_MAP: %+v %v", cfg.DeviceMap, err)
	}
	env["DRMCR_DEVICE_MAP"] = "renderD128:renderD131"
	if _, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err == nil || !strings.Contains(err.Error(), "DRMCR_DEVICE_MAP") {
		t.Errorf("a bad DRMCR_DEVICE_MAP: %v", err)
	}
	delete(env, "DRMCR_DEVICE_MAP")
	for _, bad := range []string{"5", "-1s", "soon"} {
		env["DRMCR_RESUME_TIMEOUT"] = bad
		if _, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err == nil || !strings.Contains(err.Error(), "DRMCR_RESUME_TIMEOUT") {
			t.Errorf("DRMCR_RESUME_TIMEOUT=%q: %v", bad, err)
		}
	}
	delete(env, "DRMCR_RESUME_TIMEOUT")
	for _, alg := range uapi.Checksums {
		env["DRMCR_CHECKSUM"] = alg.String()
		if cfg, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err != nil || cfg.Checksum != alg {
			t.Errorf("DRMCR_CHECKSUM=%s: %v %v", alg, cfg.Checksum, err)
		}
	}
	env["DRMCR_CHECKSUM"] = "sha256"
	if _, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err == nil || !strings.Contains(err.Error(), `DRMCR_CHECKSUM: unknown checksum algorithm "sha256" (known: xxh3-128, blake3-256)`) {
		t.Errorf("DRMCR_CHECKSUM=sha256: %v", err)
	}
	delete(env, "DRMCR_CHECKSUM")
	if cfg, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err != nil || cfg.PagesFiles != 0 {
		t.Errorf("DRMCR_PAGES_FILES unset: %d %v (0: one per CPU)", cfg.PagesFiles, err)
	}
	env["DRMCR_PAGES_FILES"] = "3"
	if cfg, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err != nil || cfg.PagesFiles != 3 {
		t.Errorf("DRMCR_PAGES_FILES=3: %d %v", cfg.PagesFiles, err)
	}
	for _, bad := range []string{"0", "9", "-1", "two"} {
		env["DRMCR_PAGES_FILES"] = bad
		if _, err := drmcore.ConfigFromEnv(drmcore.Config{}, getenv); err == nil || !strings.Contains(err.Error(), `DRMCR_PAGES_FILES="`+bad+`": want a count from 1 to 8`) {
			t.Errorf("DRMCR_PAGES_FILES=%q: %v", bad, err)
		}
	}
}
