//go:build drmcr_testclaim

// Test-only: built only with -tags drmcr_testclaim (tests/criu builds such
// a .so into a temporary directory); drm_plugin.so proper never contains it.
//
// With DRMCR_TESTCLAIM_SOCKET=PATH in criu's environment, the hooks made by
// newHooks are wrapped so that:
//   - dump: DUMP_UNIX_SK claims every socket whose peer is bound to PATH and
//     records its inode in the image file drm-testclaim.img;
//   - restore: RestoreEntries adds, for each recorded inode, an entry that
//     connects to PATH and sends a 16-byte kernelsim header (op 0xfffe,
//     seq = the inode): RestoreDRMFile, or RestoreDmaBuf when
//     DRMCR_TESTCLAIM_KIND=dmabuf.
// This exercises the C RESTORE_UNIX_SK path against a toy server, whatever
// the real hooks are. From init(restore) to exit, a goroutine allocates
// busily and logs from its own thread, as the real restore streams BO
// contents while criu forks: neither criu nor the C hook may notice.

package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"drmcr/drmcore"
	"drmcr/plugin"
)

const (
	testClaimEnv  = "DRMCR_TESTCLAIM_SOCKET"
	testKindEnv   = "DRMCR_TESTCLAIM_KIND"
	testClaimFile = "drm-testclaim.img" // drm-*: restore starts the helper
	testClaimOp   = 0xfffe
)

func init() {
	inner := newHooks
	newHooks = func(env plugin.Env) (plugin.Hooks, error) {
		h, err := inner(env)
		if err != nil {
			return nil, err
		}
		path := env.Getenv(testClaimEnv)
		if path == "" {
			return h, nil
		}
		env.Log.Warnf("testclaim: claiming sockets connected to %s", path)
		return &testClaim{Hooks: h, log: env.Log, dirFD: env.ImageDirFD, path: path, kind: env.Getenv(testKindEnv)}, nil
	}
}

type testClaim struct {
	plugin.Hooks
	log   drmcore.Logger
	dirFD int
	path  string
	kind  string
	inos  []uint64

	stop chan struct{}
	done sync.WaitGroup
}

func (t *testClaim) Init(stage drmcore.Stage) error {
	if err := t.Hooks.Init(stage); err != nil {
		return err
	}
	if stage == drmcore.StageRestore {
		t.stop = make(chan struct{})
		t.done.Add(1)
		go t.busy()
	}
	return nil
}

func (t *testClaim) Fini(stage drmcore.Stage, ret int) {
	if t.stop != nil {
		close(t.stop)
		t.done.Wait()
		t.stop = nil
	}
	t.Hooks.Fini(stage, ret)
}

var sink [][]byte

func (t *testClaim) busy() {
	defer t.done.Done()
	t.log.Infof("testclaim: busy goroutine running")
	n := 0
	for {
		select {
		case <-t.stop:
			t.log.Infof("testclaim: busy goroutine made %d allocations", n)
			return
		default:
		}
		sink = append(sink, make([]byte, 64<<10))
		if len(sink) > 64 {
			sink = sink[:0]
		}
		n++
		if n%256 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

func (t *testClaim) DumpUnixSk(fd int, ino uint64) error {
	sa, err := syscall.Getpeername(fd)
	if un, ok := sa.(*syscall.SockaddrUnix); err == nil && ok && un.Name == t.path {
		t.log.Infof("testclaim: claiming ino %d (fd %d, peer %s)", ino, fd, un.Name)
		t.inos = append(t.inos, ino)
		return t.save()
	}
	return t.Hooks.DumpUnixSk(fd, ino)
}

func (t *testClaim) save() error {
	var b strings.Builder
	for _, ino := range t.inos {
		fmt.Fprintf(&b, "%d\n", ino)
	}
	fd, err := syscall.Openat(t.dirFD, testClaimFile, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("testclaim: create %s: %w", testClaimFile, err)
	}
	f := os.NewFile(uintptr(fd), testClaimFile)
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		return fmt.Errorf("testclaim: write %s: %w", testClaimFile, err)
	}
	return nil
}

func (t *testClaim) RestoreEntries() []drmcore.RestoreEntry {
	entries := t.Hooks.RestoreEntries()
	fd, err := syscall.Openat(t.dirFD, testClaimFile, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.log.Warnf("testclaim: no %s: %v", testClaimFile, err)
		return entries
	}
	f := os.NewFile(uintptr(fd), testClaimFile)
	defer f.Close()
	kind := drmcore.RestoreDRMFile
	if t.kind == "dmabuf" {
		kind = drmcore.RestoreDmaBuf
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ino, err := strconv.ParseUint(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			t.log.Errorf("testclaim: bad line %q", sc.Text())
			continue
		}
		req := make([]byte, 16)
		binary.LittleEndian.PutUint32(req[0:], 0x4d49534b) // "KSIM"
		binary.LittleEndian.PutUint16(req[4:], 1)
		binary.LittleEndian.PutUint16(req[6:], testClaimOp)
		binary.LittleEndian.PutUint32(req[8:], uint32(ino))
		entries = append(entries, drmcore.RestoreEntry{
			Ino: ino, Kind: kind, SocketPath: t.path, Request: req,
		})
		t.log.Infof("testclaim: will restore ino %d via %s (kind %d)", ino, t.path, kind)
	}
	return entries
}
