// Package criu tests drm_plugin.so inside real criu (build/bin/criu, made by
// `make criu`). These tests need root and a provisioned criu; without them
// they fail, they never skip.
package criu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"drmcr/internal/crrun"
)

var (
	buildOnce sync.Once
	buildErr  error
	builtDir  string // holds lib/drm_plugin.so, testlib/drm_plugin.so, seqclient
)

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// criu returns the provisioned criu wrapper, or fails the test.
func criu(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(repoRoot(t), "build", "bin", "criu")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("criu is not provisioned (%v): run `make criu` first", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("criu tests need root (euid %d)", os.Geteuid())
	}
	return bin
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// go test puts its own go first in PATH; this is only a fallback.
	return "go"
}

// artifacts builds, once per test binary, the plugin as shipped (lib/), the
// plugin with the drmcr_testclaim tag (testlib/), kernelsimd, gpuload and
// the seqclient and fakecriu programs.
func artifacts(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "drmcr-criu-test-")
		if buildErr != nil {
			return
		}
		steps := [][]string{
			{"cc", "-O2", "-Wall", "-Werror", "-o", filepath.Join(builtDir, "seqclient"), "tests/criu/testdata/seqclient.c"},
			{goTool(), "build", "-o", filepath.Join(builtDir, "kernelsimd"), "./cmd/kernelsimd"},
			{goTool(), "build", "-o", filepath.Join(builtDir, "gpuload"), "./cmd/gpuload"},
			{"cc", "-O2", "-Wall", "-Werror", "-rdynamic", "-o", filepath.Join(builtDir, "fakecriu"), "tests/criu/testdata/fakecriu.c", "-ldl"},
		}
		for _, s := range steps {
			cmd := exec.Command(s[0], s[1:]...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%s: %v\n%s", strings.Join(s, " "), err, out)
				return
			}
		}
		if buildErr = crrun.BuildPlugin(root, filepath.Join(builtDir, "lib")); buildErr != nil {
			return
		}
		buildErr = crrun.BuildPlugin(root, filepath.Join(builtDir, "testlib"), "drmcr_testclaim")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// runCriu runs criu with a timeout and returns its log (criu writes it into
// the images dir) with the error.
func runCriu(t *testing.T, env []string, imgDir, logName string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, criu(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	logData, _ := os.ReadFile(filepath.Join(imgDir, logName))
	if err != nil {
		err = fmt.Errorf("criu %s: %v\n%s\n--- %s (tail):\n%s", args[0], err, out.String(), logName, tail(string(logData), 40))
	}
	return string(logData), err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startDetached starts a process in its own session with no terminal.
func startDetached(t *testing.T, dir string, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, filepath.Base(name)+".out"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func restoredPid(t *testing.T, pidfile string) int {
	t.Helper()
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("restore wrote no pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pidfile %q: %v", b, err)
	}
	return pid
}

// logPluginLines shows the plugin's lines of a criu log (go test -v).
func logPluginLines(t *testing.T, name, log string) {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "drm_plugin") {
			b.WriteString(l + "\n")
		}
	}
	t.Logf("%s, plugin lines:\n%s", name, b.String())
}

func mustContain(t *testing.T, logName, log string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(log) {
			t.Errorf("%s has no line matching %q; tail:\n%s", logName, p, tail(log, 30))
		}
	}
}

// TestPluginLoads dumps and restores a sleeping process with the plugin as
// shipped and no kernelsimd: criu loads it, its hooks log with the
// drm_plugin: prefix, and a process without GPU state is left to criu.
func TestPluginLoads(t *testing.T) {
	bin := artifacts(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.Mkdir(img, 0o700); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(bin, "lib")

	proc := startDetached(t, dir, "sleep", "1000")
	pid := proc.Process.Pid
	noDaemon := []string{"KERNELSIM_RUNTIME_DIR=" + filepath.Join(dir, "no-kernelsimd")}
	dumpLog, err := runCriu(t, noDaemon, img, "dump.log",
		"dump", "--lib", lib, "-t", strconv.Itoa(pid), "-D", img, "-v4", "-o", "dump.log", "--shell-job")
	if err != nil {
		proc.Process.Kill()
		proc.Wait()
		t.Fatal(err)
	}
	proc.Wait() // criu killed it; reap it so its pid is free again
	mustContain(t, "dump.log", dumpLog,
		`Plugin "drm_plugin" \(version 512 hooks 11\)`,
		`drm_plugin: init\(dump\)`,
		`drm_plugin: no kernelsimd at .*no-kernelsimd: no GPU state to handle`,
		`drm_plugin: exit\(dump, 0\)`)
	if names, _ := filepath.Glob(filepath.Join(img, "drm-*")); len(names) > 0 {
		t.Errorf("a dump without GPU state wrote DRM images: %v", names)
	}

	pidfile := filepath.Join(dir, "restored.pid")
	restoreLog, err := runCriu(t, noDaemon, img, "restore.log",
		"restore", "--lib", lib, "-D", img, "-d", "-v4", "-o", "restore.log", "--shell-job", "--pidfile", pidfile)
	if err != nil {
		t.Fatal(err)
	}
	rpid := restoredPid(t, pidfile)
	defer syscall.Kill(rpid, syscall.SIGKILL)
	if rpid != pid {
		t.Errorf("restored pid %d, want %d", rpid, pid)
	}
	if err := syscall.Kill(rpid, 0); err != nil {
		t.Errorf("restored process %d: %v", rpid, err)
	}
	mustContain(t, "restore.log", restoreLog,
		`drm_plugin: init\(restore\)`,
		`drm_plugin: checkpoint has no GPU state`,
		`drm_plugin: exit\(restore, 0\)`)
}

// TestRestoreUnixSkC dumps a client connected to a toy server outside the
// dumped tree (an external SOCK_SEQPACKET socket). The testclaim build of
// the plugin claims it at dump; at restore, the C RESTORE_UNIX_SK hook
// connects to the server, sends the prepared request and checks the reply.
//   - drm: the hook hands the connection itself to criu;
//   - dmabuf: the server's reply carries one end of a fresh socketpair and
//     the hook hands that fd to criu;
//
// in both, the restored client, blocked in recv(), then answers on its new
// socket. The failure cases check that a refusal (status < 0) and a dma-buf
// reply without an fd make the restore fail with the reason logged.
func TestRestoreUnixSkC(t *testing.T) {
	t.Run("drm", func(t *testing.T) { restoreUnixSk(t, "drm", 0, true) })
	t.Run("dmabuf", func(t *testing.T) { restoreUnixSk(t, "dmabuf", 0, true) })
	t.Run("refused", func(t *testing.T) { restoreUnixSk(t, "drm", -int32(syscall.EPERM), true) })
	t.Run("dmabuf-without-fd", func(t *testing.T) { restoreUnixSk(t, "dmabuf", 0, false) })
}

// toyRefusal is the reason the toy server gives when it refuses a claim:
// it must reach criu's log.
const toyRefusal = "the toy server says no"

func restoreUnixSk(t *testing.T, kind string, replyStatus int32, sendFD bool) {
	bin := artifacts(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.Mkdir(img, 0o700); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(bin, "testlib")
	sock := filepath.Join(dir, "srv.sock")
	// The plugin starts its helper only where GPU state can exist: with a
	// kernelsimd at dump.
	d, err := crrun.StartDaemon(filepath.Join(bin, "kernelsimd"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	env := []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir, "DRMCR_TESTCLAIM_SOCKET=" + sock, "DRMCR_TESTCLAIM_KIND=" + kind}

	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan *net.UnixConn, 4)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				close(conns)
				return
			}
			conns <- c
		}
	}()
	accept := func() *net.UnixConn {
		t.Helper()
		select {
		case c, ok := <-conns:
			if !ok {
				t.Fatal("listener closed")
			}
			t.Cleanup(func() { c.Close() })
			return c
		case <-time.After(30 * time.Second):
			t.Fatal("no connection to the toy server")
		}
		return nil
	}
	buf := make([]byte, 4096)
	recv := func(c *net.UnixConn) []byte {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("toy server read: %v", err)
		}
		return append([]byte(nil), buf[:n]...)
	}
	exchange := func(c *net.UnixConn, ping string) {
		t.Helper()
		if _, err := c.Write([]byte(ping)); err != nil {
			t.Fatalf("toy server write: %v", err)
		}
		if got := string(recv(c)); got != "echo:"+ping {
			t.Fatalf("client answered %q to %q", got, ping)
		}
	}

	client := startDetached(t, dir, filepath.Join(bin, "seqclient"), sock)
	pid := client.Process.Pid
	c1 := accept()
	if got := string(recv(c1)); got != "hello" {
		t.Fatalf("client said %q, want hello", got)
	}
	exchange(c1, "before-dump")

	dumpLog, err := runCriu(t, env, img, "dump.log",
		"dump", "--lib", lib, "-t", strconv.Itoa(pid), "-D", img, "-v4", "-o", "dump.log", "--shell-job")
	if err != nil {
		client.Process.Kill()
		client.Wait()
		t.Fatal(err)
	}
	client.Wait()
	mustContain(t, "dump.log", dumpLog, `drm_plugin: testclaim: claiming ino [0-9]+ \(fd [0-9]+, peer `)

	// The toy server side of RESTORE_UNIX_SK: one request, one reply.
	// For a dma-buf the reply carries one end of a new socketpair; the
	// test talks to the restored client over the other end.
	type served struct {
		conn *net.UnixConn // where the restored client is reachable
		err  error
	}
	srv := make(chan served, 1)
	go func() {
		var c *net.UnixConn
		select {
		case c = <-conns:
		case <-time.After(60 * time.Second):
			srv <- served{err: errors.New("no restore connection")}
			return
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		b := make([]byte, 4096)
		n, err := c.Read(b)
		if err != nil || n != 16 || binary.LittleEndian.Uint32(b) != 0x4d49534b || binary.LittleEndian.Uint16(b[6:]) != 0xfffe {
			srv <- served{conn: c, err: fmt.Errorf("bad restore request %x: %v", b[:n], err)}
			return
		}
		reply := append([]byte(nil), b[:16]...)
		binary.LittleEndian.PutUint32(reply[12:], uint32(replyStatus))
		if replyStatus < 0 {
			// An ErrorReply: field 1, the reason, as kernelsimd sends it.
			reply = append(reply, 0x0a, byte(len(toyRefusal)))
			reply = append(reply, toyRefusal...)
		}
		if kind != "dmabuf" {
			_, err = c.Write(reply)
			srv <- served{conn: c, err: err}
			return
		}
		defer c.Close()
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			srv <- served{err: err}
			return
		}
		f := os.NewFile(uintptr(fds[1]), "dmabuf-peer")
		fc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			syscall.Close(fds[0])
			srv <- served{err: err}
			return
		}
		var oob []byte
		if sendFD {
			oob = syscall.UnixRights(fds[0])
		}
		_, _, err = c.WriteMsgUnix(reply, oob, nil)
		syscall.Close(fds[0])
		srv <- served{conn: fc.(*net.UnixConn), err: err}
	}()

	pidfile := filepath.Join(dir, "restored.pid")
	restoreLog, rerr := runCriu(t, env, img, "restore.log",
		"restore", "--lib", lib, "-D", img, "-d", "-v4", "-o", "restore.log", "--shell-job", "--pidfile", pidfile)
	s := <-srv
	if s.conn != nil {
		defer s.conn.Close()
	}
	if s.err != nil {
		t.Fatalf("toy server: %v (restore: %v)", s.err, rerr)
	}

	if replyStatus < 0 || !sendFD {
		if rerr == nil {
			syscall.Kill(restoredPid(t, pidfile), syscall.SIGKILL)
			t.Fatal("restore succeeded although the reply was an error")
		}
		want := `drm_plugin: RESTORE_UNIX_SK\(ino [0-9]+\): kernelsimd refused \(Operation not permitted\): ` + toyRefusal
		if !sendFD {
			want = `drm_plugin: RESTORE_UNIX_SK\(ino [0-9]+\): reply carries no dma-buf fd`
		}
		mustContain(t, "restore.log", restoreLog, want)
		return
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	rpid := restoredPid(t, pidfile)
	defer syscall.Kill(rpid, syscall.SIGKILL)
	if rpid != pid {
		t.Errorf("restored pid %d, want %d", rpid, pid)
	}
	mustContain(t, "restore.log", restoreLog,
		`drm_plugin: testclaim: will restore ino [0-9]+`,
		`drm_plugin: testclaim: busy goroutine made [0-9]+ allocations`,
		map[string]string{
			"drm":    `drm_plugin: RESTORE_UNIX_SK\(ino [0-9]+\): drm file restored as fd [0-9]+`,
			"dmabuf": `drm_plugin: RESTORE_UNIX_SK\(ino [0-9]+\): dma-buf restored as fd [0-9]+`,
		}[kind])
	logPluginLines(t, "restore.log", restoreLog)
	// The restored client, blocked in recv() on what is now the socket the
	// C hook connected, answers on it.
	exchange(s.conn, "after-restore")
}
