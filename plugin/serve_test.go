package plugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"drmcr/drmcore"
	"drmcr/kernelsim"
)

// TestChannelMatchesC: every constant of plugin/c/channel.h has the value
// this side uses.
func TestChannelMatchesC(t *testing.T) {
	src, err := os.ReadFile("c/channel.h")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"DRM_CH_VERSION": channelVersion, "DRM_CH_HEADER_SIZE": headerSize, "DRM_CH_MAX_FDS": maxFDs,
		"DRM_CH_HELLO": frameHello, "DRM_CH_LOG": frameLog, "DRM_CH_RESTORE_ENTRY": frameRestoreEntry,
		"DRM_CH_RESULT": frameResult, "DRM_CH_INIT": frameInit, "DRM_CH_PAUSE_DEVICES": framePauseDevices,
		"DRM_CH_DUMP_UNIX_SK": frameDumpUnixSk, "DRM_CH_RESUME_DEVICES_LATE": frameResumeDevicesLate,
		"DRM_CH_EXIT": frameExit,
	}
	got := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:#define\s+)?(DRM_CH_[A-Z_0-9]+)\s*=?\s*\(?(\d+)u?(?:\s*<<\s*(\d+))?\)?`).FindAllStringSubmatch(string(src), -1) {
		v, _ := strconv.ParseInt(m[2], 10, 64)
		if m[3] != "" {
			sh, _ := strconv.Atoi(m[3])
			v <<= sh
		}
		got[m[1]] = v
	}
	want["DRM_CH_MAX_PAYLOAD"] = maxPayload
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s: channel.h has %d (found %v), Go has %d", name, g, ok, v)
		}
	}
	for name, want := range map[string]string{"DRM_DEFAULT_CONFIG": DefaultConfigFile, "DRM_DEFAULT_RUNTIME_DIR": kernelsim.DefaultRuntimeDir} {
		hdr, err := os.ReadFile("c/drm_plugin.h")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(hdr), "#define "+name+` "`+want+`"`) {
			t.Errorf("drm_plugin.h: %s is not %q", name, want)
		}
	}
	for _, p := range envPrefixes {
		if !strings.Contains(string(src), `"`+p+`"`) {
			t.Errorf("channel.h does not forward %s*", p)
		}
	}
}

// fakeHooks records what the helper calls.
type fakeHooks struct {
	mu      sync.Mutex
	log     drmcore.Logger
	calls   []string
	entries []drmcore.RestoreEntry
	fail    map[string]error
	panics  bool
}

func (h *fakeHooks) record(call string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, call)
	h.log.Infof("hook %s", call)
	if h.panics && strings.HasPrefix(call, "pause") {
		panic("boom")
	}
	return h.fail[strings.Fields(call)[0]]
}

func (h *fakeHooks) setFail(hook string, err error) {
	h.mu.Lock()
	h.fail[hook] = err
	h.mu.Unlock()
}

func (h *fakeHooks) Init(st drmcore.Stage) error { return h.record("init " + st.String()) }
func (h *fakeHooks) Fini(st drmcore.Stage, ret int) {
	h.record(fmt.Sprintf("fini %s %d", st, ret))
}
func (h *fakeHooks) PauseDevices(pid int) error { return h.record(fmt.Sprintf("pause %d", pid)) }
func (h *fakeHooks) DumpUnixSk(fd int, ino uint64) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	return h.record(fmt.Sprintf("dump %d %d", ino, st.Ino))
}
func (h *fakeHooks) ResumeDevicesLate(pid int) error { return h.record(fmt.Sprintf("resume %d", pid)) }
func (h *fakeHooks) RestoreEntries() []drmcore.RestoreEntry {
	return h.entries
}

func (h *fakeHooks) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

// criuSide plays the C part of drm_plugin.so.
type criuSide struct {
	t    *testing.T
	c    *net.UnixConn
	done chan error
}

func startHelper(t *testing.T, h *fakeHooks, gotEnv *Env) *criuSide {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "channel")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	criu, helper := conn(fds[0]), conn(fds[1])
	s := &criuSide{t: t, c: criu, done: make(chan error, 1)}
	go func() {
		s.done <- Serve(helper, func(env Env) (Hooks, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if gotEnv != nil {
				*gotEnv = env
			}
			h.log = env.Log
			return h, nil
		})
		helper.Close()
	}()
	t.Cleanup(func() { criu.Close() })
	f := s.read()
	if f.typ != frameHello || binary.LittleEndian.Uint32(f.payload) != channelVersion ||
		int32(binary.LittleEndian.Uint32(f.payload[4:])) != 0 {
		t.Fatalf("no hello: %+v", f)
	}
	return s
}

func (s *criuSide) read() frame {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := readFrame(s.c)
	if err != nil {
		s.t.Fatal(err)
	}
	return f
}

// call sends a request and returns the result with the log lines and
// restore entries that came before it.
func (s *criuSide) call(typ uint32, payload []byte, fds ...int) (rc int32, logs []string, entries [][]byte) {
	s.t.Helper()
	if err := writeFrame(s.c, typ, payload, fds...); err != nil {
		s.t.Fatal(err)
	}
	for {
		f := s.read()
		switch f.typ {
		case frameLog:
			logs = append(logs, fmt.Sprintf("%d %s", binary.LittleEndian.Uint32(f.payload), f.payload[4:]))
		case frameRestoreEntry:
			entries = append(entries, f.payload)
		case frameResult:
			return int32(binary.LittleEndian.Uint32(f.payload)), logs, entries
		default:
			s.t.Fatalf("unexpected frame %d", f.typ)
		}
	}
}

func initPayload(stage drmcore.Stage, level uint32, env ...string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(stage))
	b = binary.LittleEndian.AppendUint32(b, level)
	for _, e := range env {
		b = append(append(b, e...), 0)
	}
	return b
}

func pidPayload(pid int) []byte { return u32(uint32(pid)) }

func TestServeDump(t *testing.T) {
	h := &fakeHooks{fail: map[string]error{"resume": drmcore.ErrNotMine, "pause": nil}}
	var gotEnv Env
	s := startHelper(t, h, &gotEnv)
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	rc, logs, _ := s.call(frameInit, initPayload(drmcore.StageDump, levelInfo,
		"KERNELSIM_RUNTIME_DIR=/x", "DRMCR_PAUSE_TIMEOUT=3s", "HOME=/root", "DRMCR_EMPTY="), int(dir.Fd()))
	if rc != 0 {
		t.Fatalf("init: rc %d, logs %q", rc, logs)
	}
	h.mu.Lock() // Serve wrote env under it
	env := gotEnv
	h.mu.Unlock()
	if env.Getenv("KERNELSIM_RUNTIME_DIR") != "/x" || env.Getenv("DRMCR_PAUSE_TIMEOUT") != "3s" || env.Getenv("HOME") != "" {
		t.Errorf("env forwarded wrong: runtime %q timeout %q home %q", env.Getenv("KERNELSIM_RUNTIME_DIR"), env.Getenv("DRMCR_PAUSE_TIMEOUT"), env.Getenv("HOME"))
	}
	var st syscall.Stat_t
	if env.ImageDirFD < 0 || syscall.Fstat(env.ImageDirFD, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Errorf("images dir fd %d is not a directory", env.ImageDirFD)
	}
	if len(logs) != 1 || logs[0] != "3 hook init dump" {
		t.Errorf("init logs: %q", logs)
	}

	// A hook's log lines come before its result; an errno survives.
	h.setFail("pause", fmt.Errorf("context 3 did not drain: %w", syscall.ETIMEDOUT))
	rc, logs, _ = s.call(framePauseDevices, pidPayload(42))
	if rc != -int32(syscall.ETIMEDOUT) {
		t.Errorf("pause: rc %d, want -ETIMEDOUT", rc)
	}
	if len(logs) != 2 || logs[0] != "3 hook pause 42" || logs[1] != "1 PAUSE_DEVICES(pid 42): context 3 did not drain: connection timed out" {
		t.Errorf("pause logs: %q", logs)
	}
	// Not ours: -ENOTSUP, and nothing logged as an error.
	rc, logs, _ = s.call(frameResumeDevicesLate, pidPayload(7))
	if rc != -int32(syscall.ENOTSUP) || len(logs) != 1 {
		t.Errorf("resume: rc %d logs %q, want -ENOTSUP", rc, logs)
	}
	// DUMP_UNIX_SK gets the fd criu passed.
	sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(sp[0])
	defer syscall.Close(sp[1])
	syscall.Fstat(sp[0], &st)
	rc, _, _ = s.call(frameDumpUnixSk, u32(uint32(st.Ino)), sp[0])
	if want := fmt.Sprintf("dump %d %d", st.Ino, st.Ino); rc != 0 || !contains(h.Calls(), want) {
		t.Errorf("dump: rc %d, calls %q, want %q", rc, h.Calls(), want)
	}
	// Debug lines are not even sent at criu's info level.
	rc, logs, _ = s.call(frameExit, append(u32(uint32(drmcore.StageDump)), u32(0)...))
	if rc != 0 || len(logs) != 2 || logs[0] != "3 hook fini dump 0" || !strings.HasPrefix(logs[1], "3 helper process peak RSS ") {
		t.Errorf("exit: rc %d logs %q", rc, logs)
	}
	if err := <-s.done; err != nil {
		t.Fatalf("Serve after exit: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// TestServeRestoreEntries: the restore table reaches criu's side, entry by
// entry, before init's result; a bad table fails init.
func TestServeRestoreEntries(t *testing.T) {
	req := make([]byte, 16)
	h := &fakeHooks{entries: []drmcore.RestoreEntry{
		{Ino: 11, Kind: drmcore.RestoreDRMFile, SocketPath: "/run/kernelsim/dri/renderD128", Request: req},
		{Ino: 12, Kind: drmcore.RestoreDmaBuf, SocketPath: "/run/kernelsim/dri/renderD129", Request: append(req, 1, 2)},
	}}
	s := startHelper(t, h, nil)
	rc, _, entries := s.call(frameInit, initPayload(drmcore.StageRestore, levelInfo))
	if rc != 0 || len(entries) != 2 {
		t.Fatalf("init: rc %d, %d entries", rc, len(entries))
	}
	e := entries[1]
	plen := binary.LittleEndian.Uint32(e[12:])
	if ino, kind := binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint32(e[8:]); ino != 12 || kind != 2 ||
		string(e[16:16+plen]) != "/run/kernelsim/dri/renderD129" || len(e[16+plen:]) != 18 {
		t.Errorf("entry: %x", e)
	}

	for _, bad := range []drmcore.RestoreEntry{
		{Ino: 1 << 32, Kind: drmcore.RestoreDRMFile, SocketPath: "/s", Request: req},
		{Ino: 3, Kind: 9, SocketPath: "/s", Request: req},
		{Ino: 3, Kind: drmcore.RestoreDRMFile, SocketPath: "/" + strings.Repeat("x", 120), Request: req},
		{Ino: 3, Kind: drmcore.RestoreDRMFile, SocketPath: "/s", Request: req[:4]},
	} {
		h := &fakeHooks{entries: []drmcore.RestoreEntry{bad}}
		s := startHelper(t, h, nil)
		rc, logs, entries := s.call(frameInit, initPayload(drmcore.StageRestore, levelInfo))
		if rc >= 0 || len(entries) != 0 || !strings.Contains(strings.Join(logs, "\n"), "restore table") {
			t.Errorf("bad entry %+v: rc %d, %d entries, logs %q", bad, rc, len(entries), logs)
		}
		if calls := h.Calls(); calls[len(calls)-1] != "fini restore -1" {
			t.Errorf("failed init did not end the stage: %q", calls)
		}
	}
}

// TestServeCriuGone: when criu's end closes without the exit hook (criu
// died), the stage ends as failed: paused work resumes, sessions abort.
func TestServeCriuGone(t *testing.T) {
	h := &fakeHooks{}
	s := startHelper(t, h, nil)
	if rc, _, _ := s.call(frameInit, initPayload(drmcore.StageDump, levelInfo)); rc != 0 {
		t.Fatal(rc)
	}
	s.c.Close()
	if err := <-s.done; err != nil {
		t.Fatal(err)
	}
	if calls := h.Calls(); calls[len(calls)-1] != "fini dump -1" {
		t.Errorf("calls %q, want fini dump -1 last", calls)
	}
}

// TestServePanic: a panicking hook fails with -EIO and a logged stack;
// the helper goes on serving.
func TestServePanic(t *testing.T) {
	h := &fakeHooks{panics: true}
	s := startHelper(t, h, nil)
	s.call(frameInit, initPayload(drmcore.StageDump, levelInfo))
	rc, logs, _ := s.call(framePauseDevices, pidPayload(1))
	if rc != -int32(syscall.EIO) || !strings.Contains(strings.Join(logs, "\n"), "panic: boom") {
		t.Errorf("rc %d logs %q", rc, logs)
	}
	if rc, _, _ := s.call(frameResumeDevicesLate, pidPayload(1)); rc != 0 {
		t.Errorf("after a panic: rc %d", rc)
	}
}

// TestServeBackgroundLogs: lines logged between hooks come with the next
// hook, bounded.
func TestServeBackgroundLogs(t *testing.T) {
	h := &fakeHooks{}
	s := startHelper(t, h, nil)
	s.call(frameInit, initPayload(drmcore.StageRestore, levelDebug))
	h.mu.Lock()
	log := h.log
	h.mu.Unlock()
	log.Debugf("between hooks")
	for i := 0; i < maxPending+5; i++ {
		log.Infof("flood %d", i)
	}
	_, logs, _ := s.call(frameResumeDevicesLate, pidPayload(5))
	if len(logs) != maxPending+2 || logs[0] != "4 between hooks" || logs[maxPending] != "2 (6 log lines dropped between hooks)" {
		t.Errorf("%d lines: first %q, last %q", len(logs), logs[0], logs[len(logs)-1])
	}
}

// TestServeUnknownFrame: garbage from criu's side fails that request only.
func TestServeUnknownFrame(t *testing.T) {
	s := startHelper(t, &fakeHooks{}, nil)
	if rc, _, _ := s.call(99, nil); rc != -int32(syscall.EIO) {
		t.Errorf("unknown frame: rc %d", rc)
	}
	if rc, _, _ := s.call(framePauseDevices, pidPayload(1)); rc != -int32(syscall.EIO) {
		t.Errorf("hook before init: rc %d", rc)
	}
	if rc, _, _ := s.call(framePauseDevices, []byte{1}); rc != -int32(syscall.EIO) {
		t.Errorf("short frame: rc %d", rc)
	}
	var huge [headerSize]byte
	binary.LittleEndian.PutUint32(huge[:], framePauseDevices)
	binary.LittleEndian.PutUint32(huge[4:], maxPayload+1)
	s.c.Write(huge[:])
	if err := <-s.done; err == nil || !errors.Is(err, err) || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized frame: %v", err)
	}
}

// FuzzChannel: whatever criu's side sends, the helper answers each frame
// with a result or ends the channel with an error; it never panics or
// hangs.
func FuzzChannel(f *testing.F) {
	f.Add(uint32(frameInit), initPayload(drmcore.StageDump, levelDebug, "DRMCR_X=1"))
	f.Add(uint32(framePauseDevices), pidPayload(3))
	f.Add(uint32(frameDumpUnixSk), u32(77))
	f.Add(uint32(frameExit), append(u32(0), u32(0)...))
	f.Add(uint32(0xffff), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, typ uint32, payload []byte) {
		if len(payload) > 1<<16 {
			return
		}
		s := startHelper(t, &fakeHooks{fail: map[string]error{}}, nil)
		s.call(frameInit, initPayload(drmcore.StageRestore, levelDebug))
		if err := writeFrame(s.c, typ, payload); err != nil {
			t.Fatal(err)
		}
		for {
			s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			fr, err := readFrame(s.c)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("the helper hung")
				}
				return // it ended the channel
			}
			if fr.typ == frameResult {
				break
			}
		}
		if typ != frameExit {
			if rc, _, _ := s.call(frameResumeDevicesLate, pidPayload(1)); rc != 0 {
				t.Fatalf("the helper stopped serving after frame %d: rc %d", typ, rc)
			}
		}
	})
}

// TestSettings: criu's environment wins over the config file; the file
// refuses unknown names; a missing default file is fine, a missing named
// one is not.
func TestSettings(t *testing.T) {
	dir := t.TempDir()
	conf := dir + "/drm_plugin.conf"
	os.WriteFile(conf, []byte("# settings\n\nKERNELSIM_RUNTIME_DIR = /srv/ksim\nDRMCR_PAUSE_TIMEOUT=9s\nDRMCR_DEVICE_MAP = renderD128=renderD131,0x10020081=renderD130\n"), 0o644)
	get, err := settings(map[string]string{"DRMCR_CONFIG": conf, "DRMCR_PAUSE_TIMEOUT": "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if get("KERNELSIM_RUNTIME_DIR") != "/srv/ksim" || get("DRMCR_PAUSE_TIMEOUT") != "2s" || get("DRMCR_RESUME_TIMEOUT") != "" {
		t.Errorf("runtime %q pause %q resume %q", get("KERNELSIM_RUNTIME_DIR"), get("DRMCR_PAUSE_TIMEOUT"), get("DRMCR_RESUME_TIMEOUT"))
	}
	if m := get("DRMCR_DEVICE_MAP"); m != "renderD128=renderD131,0x10020081=renderD130" {
		t.Errorf("device map %q", m)
	}
	os.WriteFile(conf, []byte("DRMCR_PAUSE_TIMOUT=9s\n"), 0o644)
	if _, err := settings(map[string]string{"DRMCR_CONFIG": conf}); err == nil || !strings.Contains(err.Error(), `:1: unknown setting "DRMCR_PAUSE_TIMOUT"`) {
		t.Errorf("typo: %v", err)
	}
	os.WriteFile(conf, []byte("just words\n"), 0o644)
	if _, err := settings(map[string]string{"DRMCR_CONFIG": conf}); err == nil || !strings.Contains(err.Error(), "want NAME=value") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := settings(map[string]string{"DRMCR_CONFIG": dir + "/none"}); err == nil {
		t.Error("a missing named config file was accepted")
	}
}
