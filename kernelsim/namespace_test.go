package kernelsim_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// nobody is the unprivileged user of the tests.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// testBinary returns a copy of the test binary that any user may run (the
// build directory of go test is private to root).
func testBinary(t testing.TB) string {
	t.Helper()
	kernelsimd(t) // makes binDir
	onceTestBin.Do(func() {
		path := filepath.Join(binDir, "kernelsim.test")
		data, err := os.ReadFile(os.Args[0])
		if err == nil {
			err = os.WriteFile(path, data, 0o755)
		}
		testBinPath, testBinErr = path, err
	})
	if testBinErr != nil {
		t.Fatal(testBinErr)
	}
	return testBinPath
}

var (
	onceTestBin sync.Once
	testBinPath string
	testBinErr  error
)

// nsClient is a client process started by startNSClient.
type nsClient struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	inos  []uint64 // client inodes of its drm files, as its fstat shows them
	pid   int      // its own pid, in its pid namespace
}

// startNSClient runs the "ns-client" child role with attr (namespaces,
// credentials): it opens files render nodes, does real work on each and
// reports the inodes of its sockets; it keeps them open until stop.
func startNSClient(t *testing.T, dir string, attr *syscall.SysProcAttr, files int) *nsClient {
	t.Helper()
	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=ns-client", "KSIM_DIR="+dir, fmt.Sprintf("KSIM_FILES=%d", files))
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = attr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin := must(cmd.StdinPipe())
	stdout := must(cmd.StdoutPipe())
	ok(t, cmd.Start())
	c := &nsClient{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { c.stop(t) })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("client: %v: %s", err, stderr.String())
	}
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "pid" {
		t.Fatalf("client said %q", line)
	}
	fmt.Sscan(f[1], &c.pid)
	for _, s := range f[2:] {
		var ino uint64
		fmt.Sscan(s, &ino)
		c.inos = append(c.inos, ino)
	}
	return c
}

// stop lets the client close its files and exit, and checks it succeeded.
func (c *nsClient) stop(t *testing.T) {
	if c.stdin == nil {
		return
	}
	c.stdin.Close()
	c.stdin = nil
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("client: %v: %s", err, c.cmd.Stderr)
	}
}

// childNSClient is the "ns-client" role.
func childNSClient() error {
	var files int
	fmt.Sscan(os.Getenv("KSIM_FILES"), &files)
	line := fmt.Sprintf("pid %d", os.Getpid())
	for i := range files {
		d, err := libdrm.Open(kernelsim.RenderNodePath(os.Getenv("KSIM_DIR"), 128))
		if err != nil {
			return err
		}
		defer d.Close()
		if err := gpuWork(d, uint32(i+1)); err != nil {
			return err
		}
		if err := dmaBufInOwnNetNS(d); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(d.FD(), &st); err != nil {
			return err
		}
		line += fmt.Sprintf(" %d", st.Ino)
	}
	fmt.Println(line)
	_, err := io.Copy(io.Discard, os.Stdin)
	return err
}

// dmaBufInOwnNetNS exports a BO and checks that the dma-buf's file lives
// in the client's network namespace: criu looks for a task's sockets
// there, and would not find a dma-buf made in the daemon's.
func dmaBufInOwnNetNS(d *libdrm.Device) error {
	h, err := d.BOCreate(4096, vram, 0, 0)
	if err != nil {
		return err
	}
	fd, err := d.ExportDmaBuf(h)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return fmt.Errorf("SIOCGSKNS on the dma-buf: %w", err)
	}
	defer unix.Close(ns)
	var got, own unix.Stat_t
	if err := unix.Fstat(ns, &got); err != nil {
		return err
	}
	if err := unix.Stat("/proc/self/ns/net", &own); err != nil {
		return err
	}
	if got.Ino != own.Ino || got.Dev != own.Dev {
		return fmt.Errorf("the dma-buf's socket is in network namespace %d, the client in %d", got.Ino, own.Ino)
	}
	return nil
}

// gpuWork creates a BO, fills it on the GPU, waits and reads it back.
func gpuWork(d *libdrm.Device, v uint32) error {
	h, err := d.BOCreate(64<<10, vram, 0, 0)
	if err != nil {
		return err
	}
	ctx, err := d.CtxCreate(0)
	if err != nil {
		return err
	}
	s, err := d.SyncobjCreate(false)
	if err != nil {
		return err
	}
	if _, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
		Commands: []*uapi.Command{fill(0, 0, 64<<10, v)}, OutSyncobjs: []uint32{s}}); err != nil {
		return err
	}
	if _, err := d.SyncobjWait([]uint32{s}, 20*time.Second, true, false); err != nil {
		return err
	}
	got := make([]byte, 64<<10)
	if err := d.Read(h, 0, got); err != nil {
		return err
	}
	if !bytes.Equal(got, pattern(len(got), v)) {
		return fmt.Errorf("BO contents after the fill are wrong")
	}
	return nil
}

func netnsOf(t *testing.T, pid int) string {
	t.Helper()
	return must(os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)))
}

// Clients in other network, user, pid and mount namespaces work exactly
// like host clients: the daemon identifies their sockets in their own
// network namespace, and the control socket's IDENTIFY finds each by the
// inode its fstat shows.
func TestClientsInOtherNamespaces(t *testing.T) {
	env := ksimtest.StartDaemon(t, kernelsimd(t))
	ok(t, os.Chmod(env.Dir, 0o755)) // for nobody's client
	c := ctlClient(t, env)
	daemon := env.Cmd.Process.Pid
	idMap := func(host int) []syscall.SysProcIDMap {
		return []syscall.SysProcIDMap{{ContainerID: 0, HostID: host, Size: 1}}
	}
	must(c.Identify(nil)) // the daemon has accepted the control connection
	fdsBefore := fdTable(t, daemon)
	for _, tc := range []struct {
		name    string
		attr    *syscall.SysProcAttr
		uid     uint32
		ownNet  bool
		ownPIDs bool
	}{
		{name: "host", attr: &syscall.SysProcAttr{}},
		{name: "netns", attr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}, ownNet: true},
		// What `unshare -U -r -n` makes when root runs it.
		{name: "userns", attr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			UidMappings: idMap(0), GidMappings: idMap(0)}, ownNet: true},
		// The same for an unprivileged user: root inside, nobody outside
		// (becoming root inside makes the process nobody outside).
		{name: "nobody-userns", attr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			UidMappings: idMap(int(nobody.Uid)), GidMappings: idMap(int(nobody.Gid)),
			Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}}, uid: nobody.Uid, ownNet: true},
		{name: "pid-mount", attr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}, ownPIDs: true},
		// All of them, as an unprivileged container has.
		{name: "container", attr: &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
			UidMappings: idMap(int(nobody.Uid)), GidMappings: idMap(int(nobody.Gid)),
			Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}}, uid: nobody.Uid, ownNet: true, ownPIDs: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Two files from one namespace share its sock_diag socket.
			cl := startNSClient(t, env.Dir, tc.attr, 2)
			if differs := netnsOf(t, cl.cmd.Process.Pid) != netnsOf(t, daemon); differs != tc.ownNet {
				t.Fatalf("client in its own network namespace: %v, want %v", differs, tc.ownNet)
			}
			if inner := cl.pid != cl.cmd.Process.Pid; inner != tc.ownPIDs {
				t.Fatalf("client pid %d inside, %d outside", cl.pid, cl.cmd.Process.Pid)
			}
			objs := must(c.Identify(cl.inos))
			for i, o := range objs {
				if o.Kind != uapi.ObjectKind_OBJECT_DRM_FILE || o.Inode != cl.inos[i] || o.OwnerPid != int32(cl.cmd.Process.Pid) {
					t.Fatalf("IDENTIFY %d: %v, want the drm file of pid %d", cl.inos[i], o, cl.cmd.Process.Pid)
				}
			}
			st := must(c.Debug())
			for _, f := range st.Files {
				if f.PID == int32(cl.cmd.Process.Pid) && f.UID != tc.uid {
					t.Fatalf("file %d of pid %d belongs to uid %d, want %d", f.ID, f.PID, f.UID, tc.uid)
				}
			}
			cl.stop(t)
			fdsBack(t, daemon, fdsBefore)
		})
	}
	// Every connection is gone, and with the last one from each foreign
	// namespace its sock_diag socket.
	fdsBack(t, daemon, fdsBefore)
}

// fdsBack waits until process pid has the descriptors it had before, and
// lists them if it does not.
func fdsBack(t *testing.T, pid int, before map[string]string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := fdTable(t, pid)
		if len(now) == len(before) {
			return
		}
		if time.Now().After(deadline) {
			for fd, what := range now {
				if before[fd] != what {
					t.Errorf("new fd %s: %s", fd, what)
				}
			}
			t.Fatalf("%d descriptors open, %d before", len(now), len(before))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fdTable maps each descriptor of process pid to what it is.
func fdTable(t testing.TB, pid int) map[string]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	m := map[string]string{}
	for _, e := range must(os.ReadDir(dir)) {
		what, _ := os.Readlink(filepath.Join(dir, e.Name()))
		m[e.Name()] = what
	}
	return m
}

// A daemon that runs as an unprivileged user cannot look into another
// network namespace: it refuses such a client with a reason the client
// reads, and logs the refusal; clients of its own namespace work.
func TestRootlessDaemonRefusesForeignNetworkNamespace(t *testing.T) {
	log := &syncBuffer{}
	env := ksimtest.StartDaemonWith(t, kernelsimd(t), ksimtest.DaemonOptions{Cred: nobody, Log: log})
	cl := startNSClient(t, env.Dir, &syscall.SysProcAttr{}, 1)
	cl.stop(t)

	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=ns-client", "KSIM_DIR="+env.Dir, "KSIM_FILES=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a client in another network namespace was served by a rootless daemon: %s", out)
	}
	for _, want := range []string{"open render node", "kernelsimd refused the connection", "another network namespace", "operation not permitted"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("client error %q does not say %q", out, want)
		}
	}
	want := fmt.Sprintf("refused renderD128 connection of pid %d uid 0: ", cmd.Process.Pid)
	eventually(t, "the refusal in the daemon's log", func() bool { return strings.Contains(log.String(), want) })
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
