package kernelsim_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// startLimited serves a kernel with limits that apply to the test process
// itself (root, not exempt here) and returns its log.
func startLimited(t *testing.T, lim kernelsim.Limits) (*ksimtest.Env, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := kernelsim.Config{Devices: []kernelsim.DeviceConfig{amdgpuDev()}, Limits: lim, Log: log.New(logs, "", 0)}
	return ksimtest.Start(t, cfg), logs
}

func openNode(env *ksimtest.Env) (*libdrm.Device, error) {
	return libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128))
}

// wantRefusal checks err is errno with a message naming the flag to change.
func wantRefusal(t *testing.T, err error, errno syscall.Errno, flag string) {
	t.Helper()
	wantErrno(t, err, errno)
	if !strings.Contains(err.Error(), flag) {
		t.Fatalf("refusal %q does not name %s", err, flag)
	}
}

// noUsage waits until no user holds anything.
func noUsage(t *testing.T, k *kernelsim.Kernel) {
	t.Helper()
	eventually(t, "every user's usage back to nothing", func() bool { return len(k.Usage()) == 0 })
}

func TestConnectionLimit(t *testing.T) {
	env, logs := startLimited(t, kernelsim.Limits{Conns: 2})
	d1 := must(openNode(env))
	d2 := must(openNode(env))
	_, err := openNode(env)
	wantRefusal(t, err, syscall.EMFILE, kernelsim.FlagUIDMaxConns)
	if !strings.Contains(err.Error(), "open render node") || !strings.Contains(err.Error(), "kernelsimd refused the connection: uid 0 has 2 render-node connections open") {
		t.Fatalf("refusal reads %q", err)
	}
	want := fmt.Sprintf("refused renderD128 connection of pid %d uid 0: uid 0 has 2 render-node connections open", os.Getpid())
	if !strings.Contains(logs.String(), want) {
		t.Fatalf("log %q lacks %q", logs, want)
	}
	if u := env.Kernel.Usage(); len(u) != 1 || u[0].Conns != 2 {
		t.Fatalf("usage %+v, want 2 connections of uid 0", u)
	}
	// The files still work, and closing one makes room.
	ok(t, gpuWork(d1, 1))
	d2.Close()
	var d3 *libdrm.Device
	eventually(t, "a connection after one closed", func() bool {
		d3, err = openNode(env)
		return err == nil
	})
	ok(t, gpuWork(d3, 2))
	d1.Close()
	d3.Close()
	noUsage(t, env.Kernel)
}

// A refused client reads the kernel's reason whether its request went out
// before the refusal or after the kernel hung up.
func TestRefusalReachesClient(t *testing.T) {
	env, _ := startLimited(t, kernelsim.Limits{Conns: 1})
	_ = must(openNode(env))
	path := kernelsim.RenderNodePath(env.Dir, 128)

	// The request is sent after the kernel hung up: send fails (EPIPE),
	// the refusal waits in the socket.
	c := must(uapi.Dial(path))
	defer c.Close()
	pfd := []unix.PollFd{{Fd: int32(c.FD()), Events: unix.POLLRDHUP}}
	for pfd[0].Revents == 0 {
		must(unix.Poll(pfd, -1))
	}
	_, err := c.Call(uapi.OpVersion, &uapi.VersionRequest{}, &uapi.VersionReply{})
	wantRefusal(t, err, syscall.EMFILE, kernelsim.FlagUIDMaxConns)

	// A request sent at once is answered with the refusal, under its own
	// sequence number if the kernel read it first, or under 0. Whether
	// the send still reaches the kernel, and whether the kernel hangs up
	// with it unread (which resets the connection first), is a race.
	fd := must(unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0))
	defer unix.Close(fd)
	ok(t, unix.Connect(fd, &unix.SockaddrUnix{Name: path}))
	pkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 77}, &uapi.VersionRequest{}))
	if err := uapi.Send(fd, pkt); err != nil && err != unix.EPIPE {
		t.Fatal(err)
	}
	buf := make([]byte, uapi.MaxMessage)
	n, _, err := uapi.Recv(fd, buf, 0)
	if err == unix.ECONNRESET {
		n, _, err = uapi.Recv(fd, buf, 0)
	}
	ok(t, err)
	h := must(uapi.ParseHeader(buf[:n]))
	var e uapi.ErrorReply
	ok(t, proto.Unmarshal(buf[uapi.HeaderSize:n], &e))
	if h.Status != -int32(syscall.EMFILE) || !strings.Contains(e.Message, kernelsim.FlagUIDMaxConns) || (h.Seq != 77 && h.Seq != 0) {
		t.Fatalf("refusal %+v %q", h, e.Message)
	}
}

func TestBOMemoryLimit(t *testing.T) {
	env, logs := startLimited(t, kernelsim.Limits{BOMemory: kernelsim.MemLimit{Bytes: 1 << 20}})
	d := env.Open(t, 128)
	a := must(d.BOCreate(512<<10, vram, 0, 0))
	_ = must(d.BOCreate(512<<10, vram, 0, 0))
	_, err := d.BOCreate(4096, vram, 0, 0)
	wantRefusal(t, err, syscall.ENOMEM, kernelsim.FlagUIDMaxBOMemory)
	if !strings.Contains(logs.String(), "refused a BO to pid") {
		t.Fatalf("log %q lacks the refusal", logs)
	}
	// Another region has its own limit, as in dmem.
	g := must(d.BOCreate(1<<20, gtt, 0, 0))
	// A second file of the same user shares the limit.
	d2 := env.Open(t, 128)
	_, err = d2.BOCreate(4096, gtt, 0, 0)
	wantRefusal(t, err, syscall.ENOMEM, kernelsim.FlagUIDMaxBOMemory)
	// Freeing makes room; a BO shared through a dma-buf is uncharged only
	// when its last reference goes.
	ok(t, d.BOClose(a))
	_ = must(d.BOCreate(4096, vram, 0, 0))
	fd := must(d.ExportDmaBuf(g))
	hg := must(d2.ImportDmaBuf(fd))
	unix.Close(fd)
	ok(t, d.BOClose(g))
	_, err = d.BOCreate(4096, gtt, 0, 0)
	wantRefusal(t, err, syscall.ENOMEM, kernelsim.FlagUIDMaxBOMemory)
	ok(t, d2.BOClose(hg))
	eventually(t, "the shared BO uncharged", func() bool {
		h, err := d.BOCreate(4096, gtt, 0, 0)
		if err == nil {
			d.BOClose(h)
		}
		return err == nil
	})
	d.Close()
	d2.Close()
	noUsage(t, env.Kernel)
}

func TestBOMemoryLimitPercent(t *testing.T) {
	env, _ := startLimited(t, kernelsim.Limits{BOMemory: kernelsim.MemLimit{Percent: 25}})
	d := env.Open(t, 128)
	quarter := amdgpuDev().VRAMSize / 4
	_ = must(d.BOCreate(quarter, vram, 0, 0))
	_, err := d.BOCreate(4096, vram, 0, 0)
	wantRefusal(t, err, syscall.ENOMEM, kernelsim.FlagUIDMaxBOMemory)
}

func TestDmaBufLimit(t *testing.T) {
	env, _ := startLimited(t, kernelsim.Limits{DmaBufs: 1})
	d := env.Open(t, 128)
	h1 := must(d.BOCreate(4096, vram, 0, 0))
	h2 := must(d.BOCreate(4096, vram, 0, 0))
	fd := must(d.ExportDmaBuf(h1))
	// Exporting the same BO again is the same dma-buf: no new one.
	again := must(d.ExportDmaBuf(h1))
	if inode(t, fd) != inode(t, again) {
		t.Fatalf("re-export made another dma-buf")
	}
	unix.Close(again)
	_, err := d.ExportDmaBuf(h2)
	wantRefusal(t, err, syscall.EMFILE, kernelsim.FlagUIDMaxDmaBufs)
	// The dma-buf goes with its last file and PRIME entry.
	unix.Close(fd)
	ok(t, d.BOClose(h1))
	eventually(t, "an export after the dma-buf was released", func() bool {
		fd, err = d.ExportDmaBuf(h2)
		return err == nil
	})
	unix.Close(fd)
	d.Close()
	noUsage(t, env.Kernel)
}

// Limited users together may hold only so many of the daemon's
// descriptors: a connection holds one, a dma-buf two.
func TestDescriptorBudget(t *testing.T) {
	env, logs := startLimited(t, kernelsim.Limits{FDs: 3})
	d := must(openNode(env))
	h := must(d.BOCreate(4096, vram, 0, 0))
	fd := must(d.ExportDmaBuf(h))
	_, err := openNode(env)
	wantRefusal(t, err, syscall.ENFILE, kernelsim.FlagReservedFDs)
	if !strings.Contains(logs.String(), "refused renderD128 connection") {
		t.Fatalf("log %q lacks the refusal", logs)
	}
	unix.Close(fd)
	d.Close()
	noUsage(t, env.Kernel)
	_ = must(openNode(env))
}

// Exempt users (kernelsimd: root and its own user) are not limited.
func TestExemptUser(t *testing.T) {
	env, logs := startLimited(t, kernelsim.Limits{Conns: 1, DmaBufs: 1, BOMemory: kernelsim.MemLimit{Bytes: 4096}, FDs: 1,
		Exempt: []uint32{uint32(os.Getuid())}})
	for range 3 {
		d := env.Open(t, 128)
		for range 2 {
			h := must(d.BOCreate(8192, vram, 0, 0))
			unix.Close(must(d.ExportDmaBuf(h)))
		}
	}
	if len(env.Kernel.Usage()) != 0 || logs.String() != "" {
		t.Fatalf("an exempt user was accounted: %+v, log %q", env.Kernel.Usage(), logs)
	}
}

// A flood of refused requests is logged at a bounded rate.
func TestRefusalLogIsRateLimited(t *testing.T) {
	env, logs := startLimited(t, kernelsim.Limits{Conns: 1})
	_ = must(openNode(env))
	const flood = 300
	start := time.Now()
	for range flood {
		_, err := openNode(env)
		if !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("got %v, want EMFILE", err)
		}
	}
	refusals := strings.Count(logs.String(), "refused renderD128 connection")
	// A burst of 20 lines, then 2 a second.
	if most := 20 + int(2*time.Since(start).Seconds()) + 1; refusals < 1 || refusals > most {
		t.Fatalf("%d of %d refusals logged, want 1 to %d", refusals, flood, most)
	}
}

// The control socket is root's and the daemon's user's: anyone else who
// reaches it (here through a socket made world-writable) reads why not.
func TestControlRefusesOtherUsers(t *testing.T) {
	env, logs := startLimited(t, kernelsim.Limits{})
	ok(t, os.Chmod(env.Dir, 0o755))
	ok(t, os.Chmod(kernelsim.ControlPath(env.Dir), 0o666))
	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=ctl-identify", "KSIM_DIR="+env.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	want := fmt.Sprintf("IDENTIFY: kernelsimd refused the connection: the control socket is for root and kernelsimd's user (uid %d), not uid %d (permission denied)", os.Getuid(), nobody.Uid)
	if !strings.Contains(string(out), want) {
		t.Fatalf("client got %q, want %q", out, want)
	}
	if !strings.Contains(logs.String(), "refused control connection of pid") {
		t.Fatalf("log %q lacks the refusal", logs)
	}
}

// childCtlIdentify is the "ctl-identify" role: it prints what an IDENTIFY
// on the control socket gives.
func childCtlIdentify() error {
	c, err := ctl.Dial(os.Getenv("KSIM_DIR"))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Identify([]uint64{1})
	if !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("IDENTIFY as another user: %v, want EACCES", err)
	}
	fmt.Println(err)
	return nil
}
