package kernelsim_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	_ "drmcr/kernelsim/amdgpu" // the drivers register themselves
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
	_ "drmcr/kernelsim/xe"
)

// childEnv selects a child role when the test binary is re-executed as a
// client process (see children_test.go).
const childEnv = "KSIM_TEST_CHILD"

var binDir string // where TestMain's helpers build binaries

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// kernelsimd builds cmd/kernelsimd once per test run (with -race when the
// tests run with it) and returns the binary.
func kernelsimd(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ksimbin")
		if err == nil {
			// Other users run the binaries too (see nobody).
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		buildPath = filepath.Join(dir, "kernelsimd")
		args := []string{"build", "-o", buildPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "drmcr/cmd/kernelsimd")
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build kernelsimd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Device configurations: an amdgpu (classic drm_sched ring) at renderD128
// and an xe (firmware scheduling, one queue per context) at renderD129.
func amdgpuDev() kernelsim.DeviceConfig {
	return kernelsim.DeviceConfig{Driver: "amdgpu", Minor: 128, GPUID: 0x1002, VRAMSize: 64 << 20, GTTSize: 64 << 20,
		JobTimeout: 2 * time.Second, RingCredits: 4}
}

func xeDev() kernelsim.DeviceConfig {
	return kernelsim.DeviceConfig{Driver: "xe", Minor: 129, GPUID: 0x8086, VRAMSize: 64 << 20, GTTSize: 64 << 20,
		JobTimeout: 2 * time.Second, RingCredits: 4}
}

func twoDevices() kernelsim.Config {
	return kernelsim.Config{Devices: []kernelsim.DeviceConfig{amdgpuDev(), xeDev()}}
}

const (
	vram = uapi.Domain_DOMAIN_VRAM
	gtt  = uapi.Domain_DOMAIN_GTT
)

// must returns v, or panics with err: for calls that must succeed. (A
// test's panic fails the run with the stack of the failing call.)
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErrno checks that err is a kernelsim error with errno want.
func wantErrno(t testing.TB, err error, want syscall.Errno) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	var e *uapi.Error
	if errors.As(err, &e) && e.Msg == "" {
		t.Fatalf("error %v carries no message", err)
	}
}

// eventually polls cond until it holds or a generous deadline passes:
// for releases that are asynchronous by design.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fill(dst int, off, n uint64, v uint32) *uapi.Command {
	return &uapi.Command{Op: uint32(gpu.OpFill), Dst: int32(dst), Src: -1, DstOff: off, Len: n, Value: uint64(v)}
}

func copyCmd(dst, src int, n uint64) *uapi.Command {
	return &uapi.Command{Op: uint32(gpu.OpCopy), Dst: int32(dst), Src: int32(src), Len: n}
}

func compute(dst, src int, n, iters uint64) *uapi.Command {
	return &uapi.Command{Op: uint32(gpu.OpCompute), Dst: int32(dst), Src: int32(src), Len: n, Iterations: iters}
}

func hang() *uapi.Command { return &uapi.Command{Op: uint32(gpu.OpHang), Dst: -1, Src: -1} }

func pattern(n int, v uint32) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(v >> (8 * (i % 4)))
	}
	return p
}

func readBO(t testing.TB, d *libdrm.Device, h uint32, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	ok(t, d.Read(h, 0, p))
	return p
}

func inode(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	ok(t, unix.Fstat(fd, &st))
	return st.Ino
}

func ctlClient(t testing.TB, env *ksimtest.Env) *ctl.Client {
	t.Helper()
	c := must(ctl.Dial(env.Dir))
	t.Cleanup(func() { c.Close() })
	return c
}

func fileID(t testing.TB, c *ctl.Client, d *libdrm.Device) uint64 {
	t.Helper()
	objs := must(c.Identify([]uint64{inode(t, d.FD())}))
	if len(objs) != 1 || objs[0].Kind != uapi.ObjectKind_OBJECT_DRM_FILE {
		t.Fatalf("identify: %v", objs)
	}
	return objs[0].FileId
}

// census is every leak-relevant count: the kernel's objects, and the
// process-wide live jobs, fences and syncobjs.
type census struct {
	kernelsim.Counts
	Jobs, Fences, Syncobjs int
}

func takeCensus(k *kernelsim.Kernel) census {
	c := census{Jobs: sched.LiveJobs(), Fences: dma.LiveFences(), Syncobjs: dma.LiveSyncobjs()}
	if k != nil {
		c.Counts = k.Counts()
	}
	return c
}

// backToBaseline waits for every count to return to base.
func backToBaseline(t testing.TB, k *kernelsim.Kernel, base census) {
	t.Helper()
	var now census
	deadline := time.Now().Add(20 * time.Second)
	for {
		now = takeCensus(k)
		if now == base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects leaked: now %+v, baseline %+v", now, base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goroutinesBack waits for the goroutine count to drop to base.
func goroutinesBack(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines leaked: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// raw is a render-node connection driven packet by packet.
type raw struct {
	t  testing.TB
	fd int
}

func dialRaw(t testing.TB, path string) *raw {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	ok(t, err)
	ok(t, unix.Connect(fd, &unix.SockaddrUnix{Name: path}))
	r := &raw{t: t, fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	return r
}

func (r *raw) send(pkt []byte, fds ...int) error { return uapi.Send(r.fd, pkt, fds...) }

func (r *raw) request(op uapi.Op, seq uint32, msg proto.Message, fds ...int) {
	r.t.Helper()
	pkt, err := uapi.Marshal(uapi.Header{Op: op, Seq: seq}, msg)
	ok(r.t, err)
	ok(r.t, r.send(pkt, fds...))
}

// recv reads one reply, failing the test if none comes in time.
func (r *raw) recv() (uapi.Header, []byte, []int) {
	r.t.Helper()
	h, payload, fds, err := recvTimeout(r.fd, 20*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	return h, payload, fds
}

func recvTimeout(fd int, timeout time.Duration) (uapi.Header, []byte, []int, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return uapi.Header{}, nil, nil, fmt.Errorf("no reply within %v", timeout)
		}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return uapi.Header{}, nil, nil, err
		}
		if n > 0 {
			break
		}
	}
	buf := make([]byte, uapi.MaxMessage)
	n, fds, err := uapi.Recv(fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		return uapi.Header{}, nil, nil, fmt.Errorf("recv: %w", err)
	}
	if n == 0 {
		return uapi.Header{}, nil, nil, fmt.Errorf("connection closed by the kernel")
	}
	h, err := uapi.ParseHeader(buf[:n])
	if err != nil {
		uapi.CloseFDs(fds)
		return h, nil, nil, fmt.Errorf("reply header: %w", err)
	}
	return h, append([]byte(nil), buf[uapi.HeaderSize:n]...), fds, nil
}

// wantErrorReply reads a reply and checks it is an error with errno want
// and a message.
func (r *raw) wantErrorReply(want syscall.Errno) uapi.Header {
	r.t.Helper()
	h, payload, fds := r.recv()
	uapi.CloseFDs(fds)
	if h.Status != -int32(want) {
		var e uapi.ErrorReply
		proto.Unmarshal(payload, &e)
		r.t.Fatalf("reply status %d (%q), want -%d (%v)", h.Status, e.Message, want, want)
	}
	var e uapi.ErrorReply
	if err := proto.Unmarshal(payload, &e); err != nil || e.Message == "" {
		r.t.Fatalf("error reply without message: %v %q", err, e.Message)
	}
	if len(fds) > 0 {
		r.t.Fatalf("error reply carried %d fds", len(fds))
	}
	return h
}

// alive checks the connection still answers a VERSION request.
func (r *raw) alive() {
	r.t.Helper()
	r.request(uapi.OpVersion, 0xabc, &uapi.VersionRequest{})
	h, payload, fds := r.recv()
	uapi.CloseFDs(fds)
	if h.Status != 0 || h.Seq != 0xabc || h.Op != uapi.OpVersion {
		r.t.Fatalf("VERSION after bad request: header %+v", h)
	}
	var v uapi.VersionReply
	ok(r.t, proto.Unmarshal(payload, &v))
	if v.Driver == "" {
		r.t.Fatalf("VERSION reply %v", &v)
	}
}

// checkpointInto writes the contents of the BOs ids, back to back, into
// the one pages file f from offset 0.
func checkpointInto(c *ctl.Client, ids []uint64, f *os.File, alg uapi.Checksum) (*uapi.PagesExtent, error) {
	xs, err := c.CheckpointBOs([]ctl.PagesTarget{{IDs: ids, File: f}}, alg)
	if err != nil {
		return nil, err
	}
	return xs[0], nil
}
