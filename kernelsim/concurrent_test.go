package kernelsim_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// fileOf returns the debug view of the drm file with id.
func fileOf(t testing.TB, k *kernelsim.Kernel, id uint64) kernelsim.DebugFile {
	t.Helper()
	for _, f := range k.Debug().Files {
		if f.ID == id {
			return f
		}
	}
	t.Fatalf("no drm file %d", id)
	return kernelsim.DebugFile{}
}

// waitingIn waits until n requests wait in drm file id.
func waitingIn(t testing.TB, k *kernelsim.Kernel, id uint64, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d requests waiting in drm file %d", n, id), func() bool {
		return fileOf(t, k, id).Waiting == n
	})
}

// within fails the test if done is not closed within a generous time: for
// what would deadlock if requests on one file were serialised.
func within(t testing.TB, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: still blocked after 20s", what)
	}
}

// TestWaitForSubmitDoesNotBlockSubmit: one thread waits, without a time
// limit, for a syncobj that has no fence yet (WAIT_FOR_SUBMIT); another
// thread submits on the same fd the job that fills it. On Linux both run;
// a file that served one request at a time would deadlock.
func TestWaitForSubmitDoesNotBlockSubmit(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	base := takeCensus(env.Kernel)
	d := env.Open(t, 128)
	id := fileID(t, ctlClient(t, env), d)
	h := must(d.BOCreate(4096, vram, 0, 0))
	ctx := must(d.CtxCreate(0))
	s := must(d.SyncobjCreate(false))

	waited := make(chan struct{})
	var werr error
	go func() {
		defer close(waited)
		_, werr = d.SyncobjWait([]uint32{s}, -1, true, true)
	}()
	waitingIn(t, env.Kernel, id, 1)
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
			Commands: []*uapi.Command{fill(0, 0, 4096, 0x5a5a5a5a)}, OutSyncobjs: []uint32{s}})
		if err != nil {
			t.Error(err)
		}
	}()
	within(t, "submit while another thread waits on the same fd", submitted)
	within(t, "the wait for the submitted job", waited)
	ok(t, werr)
	if !bytes.Equal(readBO(t, d, h, 4096), pattern(4096, 0x5a5a5a5a)) {
		t.Fatal("the job did not run")
	}
	d.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestConcurrentRequestsOneFile: many goroutines share one Device; each
// creates, writes, reads back and closes its own BOs, and submits jobs and
// waits for them, all at once. Every reply reaches its caller: every read
// gives back what its goroutine wrote, handles never collide.
func TestConcurrentRequestsOneFile(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	base := takeCensus(env.Kernel)
	d := env.Open(t, 128)
	const workers, rounds = 16, 40
	var (
		mu      sync.Mutex
		live    = map[uint32]int{} // handle -> worker
		wg      sync.WaitGroup
		errs    = make(chan error, workers)
		mustNot = func(w int, h uint32) error {
			mu.Lock()
			defer mu.Unlock()
			if o, dup := live[h]; dup {
				return fmt.Errorf("worker %d got handle %d, which worker %d holds", w, h, o)
			}
			live[h] = w
			return nil
		}
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				ctx, err := d.CtxCreate(0)
				if err != nil {
					return err
				}
				s, err := d.SyncobjCreate(false)
				if err != nil {
					return err
				}
				for i := range rounds {
					v := uint32(w<<16 | i)
					h, err := d.BOCreate(4096, gtt, 0, 0)
					if err != nil {
						return err
					}
					if err := mustNot(w, h); err != nil {
						return err
					}
					if err := d.Write(h, 0, pattern(2048, v)); err != nil {
						return err
					}
					if _, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
						Commands: []*uapi.Command{fill(0, 2048, 2048, ^v)}, OutSyncobjs: []uint32{s}}); err != nil {
						return err
					}
					if _, err := d.SyncobjWait([]uint32{s}, -1, true, false); err != nil {
						return err
					}
					got := make([]byte, 4096)
					if err := d.Read(h, 0, got); err != nil {
						return err
					}
					if want := append(pattern(2048, v), pattern(2048, ^v)...); !bytes.Equal(got, want) {
						return fmt.Errorf("worker %d round %d read another's data: %x", w, i, got[:8])
					}
					mu.Lock()
					delete(live, h)
					mu.Unlock()
					if err := d.BOClose(h); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		ok(t, err)
	}
	d.Close()
	backToBaseline(t, env.Kernel, base)
}

// TestHangupCancelsWaitingRequests: a client closes its drm file while
// many of its requests wait without a time limit; the file and every
// goroutine serving it go at once, as a killed process's ioctls end.
func TestHangupCancelsWaitingRequests(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	base := takeCensus(env.Kernel)
	goroutines := runtime.NumGoroutine()
	r := dialRaw(t, kernelsim.RenderNodePath(env.Dir, 128))
	r.request(uapi.OpSyncobjCreate, 1, &uapi.SyncobjCreateRequest{})
	_, payload, _ := r.recv()
	var sc uapi.SyncobjCreateReply
	ok(t, proto.Unmarshal(payload, &sc))
	const n = 50
	for i := range n {
		r.request(uapi.OpSyncobjWait, uint32(10+i), &uapi.SyncobjWaitRequest{Handles: []uint32{sc.Handle}, TimeoutNs: -1, WaitAll: true, WaitForSubmit: true})
	}
	eventually(t, "the waits to start", func() bool {
		fs := env.Kernel.Debug().Files
		return len(fs) == 1 && fs[0].Waiting == n
	})
	ok(t, unix.Shutdown(r.fd, unix.SHUT_RDWR)) // the client hangs up
	backToBaseline(t, env.Kernel, base)
	goroutinesBack(t, goroutines)
}

// TestWaitLimit: the requests one user may have waiting are bounded
// (Limits.Waits, kernelsimd -uid-max-waits): the one over the limit fails
// with EAGAIN, naming the flag, instead of waiting; below it, waits work.
func TestWaitLimit(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())},
		Limits: kernelsim.Limits{Waits: 3}})
	d := env.Open(t, 128)
	id := fileID(t, ctlClient(t, env), d)
	s := must(d.SyncobjCreate(false))
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.SyncobjWait([]uint32{s}, -1, true, true); err != nil {
				t.Error(err)
			}
		}()
	}
	waitingIn(t, env.Kernel, id, 3)
	_, err := d.SyncobjWait([]uint32{s}, -1, true, true)
	wantErrno(t, err, syscall.EAGAIN)
	if !strings.Contains(err.Error(), kernelsim.FlagUIDMaxWaits) {
		t.Errorf("the refusal does not name %s: %v", kernelsim.FlagUIDMaxWaits, err)
	}
	// A wait that need not wait is no waiting request.
	s2 := must(d.SyncobjCreate(true))
	must(d.SyncobjWait([]uint32{s2}, -1, true, false))
	ok(t, d.SyncobjSignal(s))
	wg.Wait()
	waitingIn(t, env.Kernel, id, 0)
	must(d.SyncobjWait([]uint32{s}, -1, true, true))
}

// TestForkedChildSharesDrmFile: a child process inherits the parent's drm
// fd (as fork does) and uses it with FromSharedFD while the parent goes on
// using it: both see the same drm file (the child reads a BO by the
// parent's handle), and every reply reaches its own process, however their
// requests interleave.
func TestForkedChildSharesDrmFile(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
	base := takeCensus(env.Kernel)
	d := env.Open(t, 128)
	id := fileID(t, ctlClient(t, env), d)
	h := must(d.BOCreate(8192, vram, 0, 0))
	ok(t, d.Write(h, 0, pattern(8192, 0x31323334)))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=shared-fd", "KSIM_HANDLE="+strconv.Itoa(int(h)))
	cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(must(unix.Dup(d.FD()))), "drm")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ok(t, cmd.Start())
	cmd.ExtraFiles[0].Close()
	if err := sharedFDWork(d, "parent", 300); err != nil {
		t.Error(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	if len(fileOf(t, env.Kernel, id).Channels) != 0 {
		t.Error("the child's reply channel outlived the child")
	}
	ok(t, d.BOClose(h))
	d.Close()
	backToBaseline(t, env.Kernel, base)
}

// sharedFDWork is what each process of TestForkedChildSharesDrmFile does
// on the shared drm file: BOs of its own, written and read back, and jobs
// waited for.
func sharedFDWork(d *libdrm.Device, who string, rounds int) error {
	ctx, err := d.CtxCreate(0)
	if err != nil {
		return err
	}
	s, err := d.SyncobjCreate(false)
	if err != nil {
		return err
	}
	for i := range rounds {
		v := uint32(len(who)<<24 | i)
		h, err := d.BOCreate(4096, gtt, 0, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
		if _, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
			Commands: []*uapi.Command{fill(0, 0, 4096, v)}, OutSyncobjs: []uint32{s}}); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
		if _, err := d.SyncobjWait([]uint32{s}, -1, true, false); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
		got := make([]byte, 4096)
		if err := d.Read(h, 0, got); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
		if !bytes.Equal(got, pattern(4096, v)) {
			return fmt.Errorf("%s round %d: read %x", who, i, got[:8])
		}
		if err := d.BOClose(h); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
	}
	return d.CtxDestroy(ctx)
}

// childSharedFD is the child of TestForkedChildSharesDrmFile: fd 3 is the
// inherited drm file.
func childSharedFD() error {
	d := libdrm.FromSharedFD(3)
	defer d.Close()
	h, err := strconv.Atoi(os.Getenv("KSIM_HANDLE"))
	if err != nil {
		return err
	}
	got := make([]byte, 8192)
	if err := d.Read(uint32(h), 0, got); err != nil {
		return fmt.Errorf("read the parent's BO by its handle: %w", err)
	}
	if !bytes.Equal(got, pattern(8192, 0x31323334)) {
		return errors.New("the parent's BO reads differently in the child")
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sharedFDWork(d, "child-"+strconv.Itoa(i), 60)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
