package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// The fixtures are real plugin image directories, written by drmcore's
// dump hooks the way drmcore/criu_emul_test.go drives them: an in-process
// kernelsim, this test process standing in for the dumped task.

const page = 4096

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type checker struct{ t testing.TB }

func ck(t testing.TB) checker { return checker{t} }

// u32 returns v, failing the test on err.
func (c checker) u32(v uint32, err error) uint32 {
	c.t.Helper()
	must(c.t, err)
	return v
}

// pluginDump runs the plugin's dump hooks like criu for task pid over the
// given socket inodes, writing the images into dir.
func pluginDump(t testing.TB, runtimeDir, dir string, pid int, inodes []uint64) {
	t.Helper()
	must(t, drmcoretest.Dump(t, drmcoretest.Plugin(t, runtimeDir, dir, 5*time.Second), pid, inodes))
}

func inodeOf(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	return st.Ino
}

// fixture describes the "rich" checkpoint: two drm files of this process
// sharing a BO through a dma-buf that is also held, VA mappings, and a
// preempted long-running compute job.
type fixture struct {
	dir                 string
	pid                 int
	inoA, inoB, inoDmaB uint64
	sharedBo            uint64 // BO id shared by A (handle hA1) and B (hB)
	hA1, hA2, hB        uint64
	srcBo, dstBo        uint64 // BOs of B's compute job
	ctxB                uint32
}

var (
	richOnce sync.Once
	rich     *fixture
	richErr  string
)

// richFixture builds the rich fixture once per test binary; tests copy it
// before damaging it.
func richFixture(t testing.TB) *fixture {
	t.Helper()
	richOnce.Do(func() {
		// The kernel lives until the end of this test only: the images
		// outlive it in a directory TestMain removes.
		dir, err := os.MkdirTemp("", "drmcrit-rich")
		if err != nil {
			richErr = err.Error()
			return
		}
		fixtureDirs = append(fixtureDirs, dir)
		rich = buildRich(t, dir)
		if rich == nil {
			richErr = "building the fixture failed"
		}
	})
	if rich == nil {
		t.Fatalf("rich fixture: %s", richErr)
	}
	return rich
}

// fixtureDirs are removed by TestMain.
var fixtureDirs []string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(gpuHelper())
	}
	code := m.Run()
	for _, d := range fixtureDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func buildRich(t testing.TB, dir string) *fixture {
	dev := kernelsim.DefaultDevice()
	dev.IterTime = time.Millisecond
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
	a, b := env.Open(t, 128), env.Open(t, 128)
	f := &fixture{dir: dir, pid: os.Getpid()}

	hA1 := ck(t).u32(a.BOCreate(2*page, uapi.Domain_DOMAIN_VRAM, 0x3, 0))
	hA2 := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_GTT, 0, 0))
	ctxA := ck(t).u32(a.CtxCreate(0))
	submitWait(t, a, ctxA, hA1, &uapi.Command{Op: uint32(gpu.OpRandFill), Dst: 0, Src: -1, Len: 2 * page, Value: 42})
	must(t, a.VMMap(hA1, 0, 0x100000, 2*page, 1))
	must(t, a.VMMap(hA2, 0, 0x200000, page, 0))
	dmaFd, err := a.ExportDmaBuf(hA1)
	must(t, err)
	t.Cleanup(func() { unix.Close(dmaFd) })
	hB := ck(t).u32(b.ImportDmaBuf(dmaFd))
	must(t, b.VMMap(hB, 0, 0x400000, page, 0))

	// B: a long-running compute job, preempted by the dump.
	src := ck(t).u32(b.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	dst := ck(t).u32(b.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	ctxB := ck(t).u32(b.CtxCreate(0))
	so := ck(t).u32(b.SyncobjCreate(false))
	_, err = b.Submit(&uapi.SubmitRequest{CtxId: ctxB, LongRunning: true, OutSyncobjs: []uint32{so},
		Bos:      []*uapi.SubmitBo{{Handle: src}, {Handle: dst, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpCompute), Dst: 1, Src: 0, Len: page, Iterations: 5000}}})
	must(t, err)
	time.Sleep(50 * time.Millisecond)

	var inodes []uint64
	for _, ino := range drmcoretest.SocketInodes(t) {
		inodes = append(inodes, ino)
	}
	pluginDump(t, env.Dir, dir, f.pid, inodes)

	f.inoA, f.inoB, f.inoDmaB = inodeOf(t, a.FD()), inodeOf(t, b.FD()), inodeOf(t, dmaFd)
	f.hA1, f.hA2, f.hB = uint64(hA1), uint64(hA2), uint64(hB)
	f.ctxB = ctxB
	f.sharedBo = boID(t, a, hA1)
	f.srcBo, f.dstBo = boID(t, b, src), boID(t, b, dst)
	// Stop the job so the kernel shuts down quickly.
	must(t, b.CtxDestroy(ctxB))
	return f
}

func boID(t testing.TB, d *libdrm.Device, h uint32) uint64 {
	t.Helper()
	info, err := d.BOInfo(h)
	must(t, err)
	return info.BoId
}

func submitWait(t testing.TB, d *libdrm.Device, ctx, h uint32, cmd *uapi.Command) {
	t.Helper()
	_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}}, Commands: []*uapi.Command{cmd}})
	must(t, err)
	if busy, err := d.WaitIdle(h, true, 10*time.Second); err != nil || busy {
		t.Fatalf("wait idle: busy=%v err=%v", busy, err)
	}
}

// copyDir copies a fixture into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	must(t, err)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		must(t, err)
		out, err := os.Create(filepath.Join(dst, e.Name()))
		must(t, err)
		_, err = io.Copy(out, in)
		in.Close()
		must(t, err)
		must(t, out.Close())
	}
	return dst
}

// readImg and writeImg load and store an image message without version
// checks, for damaging fixtures. writeImg re-seals the image (as
// drmcrit encode --reseal does), so that the checks of its fields are
// what finds the damage; writeRaw leaves the seals alone.
func readImg(t testing.TB, dir, name string, m proto.Message) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	must(t, err)
	must(t, proto.Unmarshal(data, m))
}

func writeImg(t testing.TB, dir, name string, m proto.Message) {
	t.Helper()
	if inv, ok := m.(*images.Inventory); ok && inv.Version == images.Version {
		d, err := images.OpenDir(dir)
		must(t, err)
		defer d.Close()
		must(t, d.WriteInventory(inv))
		return
	}
	writeRaw(t, dir, name, m)
	reseal(t, dir, name)
}

func writeRaw(t testing.TB, dir, name string, m proto.Message) {
	t.Helper()
	data, err := proto.Marshal(m)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
}

// reseal records an image's new seal in its directory's inventory.
func reseal(t testing.TB, dir, name string) {
	t.Helper()
	d, err := images.OpenDir(dir)
	must(t, err)
	defer d.Close()
	must(t, d.Reseal(name))
}

// runCmd runs drmcrit and returns its status, stdout and stderr.
func runCmd(t testing.TB, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, bytes.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}
