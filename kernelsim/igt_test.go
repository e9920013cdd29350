package kernelsim_test

// Tests derived from IGT (igt-gpu-tools), the DRM subsystem's test suite:
// each follows what an IGT subtest checks, on kernelsim's render nodes.
// docs/IGT.md maps each test to its subtest and says what was adapted
// (kernelsim has no flink, no CPU mmap, no syncobj fds, no ioctl flags or
// pads). Named TestIGT_<igt test>/<subtest>.

import (
	"bytes"
	"errors"
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

func igtEnv(t *testing.T) *ksimtest.Env {
	return ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{instant(amdgpuDev())}})
}

// igtSubmit runs a job writing v over the first 4 KiB of BO h (the stand-in
// for IGT's execbuf of a batch), returning the submit's error.
func igtSubmit(d *libdrm.Device, ctx, h, v uint32) error {
	_, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
		Commands: []*uapi.Command{fill(0, 0, 4096, v)}})
	return err
}

// checkBO is IGT's check_bo: both handles show the same contents, and a
// write through the first shows through the second.
func checkBO(t *testing.T, d1 *libdrm.Device, h1 uint32, d2 *libdrm.Device, h2 uint32, counter *uint32) {
	t.Helper()
	const n = 16 << 10
	want := pattern(n, *counter)
	if got := readBO(t, d1, h1, n); !bytes.Equal(got, want) {
		t.Fatalf("handle %d: not the old contents", h1)
	}
	if got := readBO(t, d2, h2, n); !bytes.Equal(got, want) {
		t.Fatalf("handle %d: not the old contents", h2)
	}
	*counter++
	ok(t, d1.Write(h1, 0, pattern(n, *counter)))
	if got := readBO(t, d2, h2, n); !bytes.Equal(got, pattern(n, *counter)) {
		t.Fatalf("a write through handle %d does not show through handle %d", h1, h2)
	}
}

func TestIGT_gem_basic(t *testing.T) {
	env := igtEnv(t)
	t.Run("bad-close", func(t *testing.T) {
		d := env.Open(t, 128)
		wantErrno(t, d.BOClose(0x10101010), syscall.EINVAL)
	})
	t.Run("create-close", func(t *testing.T) {
		d := env.Open(t, 128)
		ok(t, d.BOClose(must(d.BOCreate(16<<10, gtt, 0, 0))))
	})
	t.Run("create-fd-close", func(t *testing.T) {
		env := igtEnv(t) // its own kernel: a census of this subtest alone
		base := takeCensus(env.Kernel)
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		must(d.BOCreate(16<<10, gtt, 0, 0))
		ok(t, d.Close())
		backToBaseline(t, env.Kernel, base)
	})
}

func TestIGT_gem_close(t *testing.T) {
	env := igtEnv(t)
	t.Run("basic", func(t *testing.T) {
		d := env.Open(t, 128)
		ok(t, d.BOClose(must(d.BOCreate(4096, gtt, 0, 0))))
	})
	// Clones of a handle come from flink in IGT; render nodes have none,
	// and a PRIME import into the same file returns the same handle, so
	// the clones live in other files.
	t.Run("many-handles-one-vma", func(t *testing.T) {
		d := env.Open(t, 128)
		orig := must(d.BOCreate(4096, gtt, 0, 0))
		ctx := must(d.CtxCreate(0))
		ok(t, igtSubmit(d, ctx, orig, 1))
		fd := must(d.ExportDmaBuf(orig))
		defer unix.Close(fd)
		type clone struct {
			d      *libdrm.Device
			ctx, h uint32
		}
		var clones []clone
		for range 32 {
			c := env.Open(t, 128)
			cl := clone{d: c, ctx: must(c.CtxCreate(0)), h: must(c.ImportDmaBuf(fd))}
			ok(t, igtSubmit(c, cl.ctx, cl.h, 2))
			clones = append(clones, cl)
		}
		ok(t, d.BOClose(orig))
		wantErrno(t, igtSubmit(d, ctx, orig, 3), syscall.ENOENT)
		for i, c := range clones {
			if err := igtSubmit(c.d, c.ctx, c.h, 4); err != nil {
				t.Fatalf("clone %d, after the original closed: %v", i, err)
			}
			ok(t, c.d.BOClose(c.h))
			wantErrno(t, igtSubmit(c.d, c.ctx, c.h, 5), syscall.ENOENT)
		}
	})
}

func TestIGT_prime_self_import(t *testing.T) {
	env := igtEnv(t)
	const size = 16 << 10
	t.Run("basic-with_one_bo", func(t *testing.T) {
		var counter uint32
		d1 := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		d2 := env.Open(t, 128)
		h := must(d1.BOCreate(size, gtt, 0, 0))
		ok(t, d1.Write(h, 0, pattern(size, counter)))
		fd := must(d1.ExportDmaBuf(h))
		h1 := must(d2.ImportDmaBuf(fd))
		checkBO(t, d1, h, d2, h1, &counter)
		if h2 := must(d2.ImportDmaBuf(fd)); h2 != h1 {
			t.Fatalf("re-import: handle %d, the first import got %d", h2, h1)
		}
		if hs := must(d1.ImportDmaBuf(fd)); hs != h {
			t.Fatalf("self-import on the exporter: handle %d, want %d", hs, h)
		}
		unix.Close(fd)
		checkBO(t, d1, h, d2, h1, &counter)
		ok(t, d1.BOClose(h))
		checkBO(t, d2, h1, d2, h1, &counter)
		fd = must(d2.ExportDmaBuf(h1))
		ok(t, d2.BOClose(h1)) // the dma-buf alone holds the BO
		h = must(d1.ImportDmaBuf(fd))
		h1 = must(d2.ImportDmaBuf(fd))
		unix.Close(fd)
		checkBO(t, d1, h, d2, h1, &counter)
		ok(t, d1.Close())
		checkBO(t, d2, h1, d2, h1, &counter)
	})
	t.Run("basic-with_two_bos", func(t *testing.T) {
		var counter uint32
		d1, d2 := env.Open(t, 128), env.Open(t, 128)
		h1, h2 := must(d1.BOCreate(size, gtt, 0, 0)), must(d1.BOCreate(size, gtt, 0, 0))
		ok(t, d1.Write(h2, 0, pattern(size, counter)))
		fd := must(d1.ExportDmaBuf(h1))
		must(d2.ImportDmaBuf(fd))
		unix.Close(fd)
		ok(t, d1.BOClose(h1))
		fd = must(d1.ExportDmaBuf(h2))
		hi := must(d2.ImportDmaBuf(fd))
		checkBO(t, d1, h2, d2, hi, &counter)
		ok(t, d1.BOClose(h2))
		unix.Close(fd)
		checkBO(t, d2, hi, d2, hi, &counter)
	})
	t.Run("basic-with_fd_dup", func(t *testing.T) {
		var counter uint32
		d1, d2 := env.Open(t, 128), env.Open(t, 128)
		h := must(d1.BOCreate(size, gtt, 0, 0))
		ok(t, d1.Write(h, 0, pattern(size, counter)))
		fd1 := must(d1.ExportDmaBuf(h))
		ok(t, d1.BOClose(h))
		fd2 := must(unix.Dup(fd1))
		unix.Close(fd1)
		hi := must(d2.ImportDmaBuf(fd2))
		checkBO(t, d2, hi, d2, hi, &counter)
		unix.Close(fd2)
		checkBO(t, d2, hi, d2, hi, &counter)
	})
	// IGT opens the BO in the second file by its flink name; here it is
	// imported there, then exported from there and imported again.
	t.Run("basic-with_one_bo_two_files", func(t *testing.T) {
		d1, d2 := env.Open(t, 128), env.Open(t, 128)
		h := must(d1.BOCreate(size, gtt, 0, 0))
		fd1 := must(d1.ExportDmaBuf(h))
		defer unix.Close(fd1)
		hOpen := must(d2.ImportDmaBuf(fd1))
		fd2 := must(d2.ExportDmaBuf(hOpen))
		defer unix.Close(fd2)
		if hi := must(d2.ImportDmaBuf(fd2)); hi != hOpen {
			t.Fatalf("self-import of the re-export: handle %d, want %d", hi, hOpen)
		}
	})
	// The races run a fixed number of rounds on as many threads as CPUs
	// (IGT runs them for 5 seconds), all on one fd, and check that no
	// object leaks.
	t.Run("export-vs-gem_close-race", func(t *testing.T) {
		env := igtEnv(t)
		base := takeCensus(env.Kernel)
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		raceOnOneFD(t, func() error {
			h, err := d.BOCreate(4096, gtt, 0, 0)
			if err != nil {
				return err
			}
			if h != 1 {
				if err := d.BOClose(h); err != nil {
					return err
				}
			}
			fd, err := d.ExportDmaBuf(1)
			if err == nil {
				unix.Close(fd)
			} else if !errors.Is(err, syscall.ENOENT) {
				return err
			}
			if err := d.BOClose(1); err != nil && !errors.Is(err, syscall.EINVAL) {
				return err
			}
			return nil
		})
		ok(t, d.Close())
		backToBaseline(t, env.Kernel, base)
	})
	t.Run("reimport-vs-gem_close-race", func(t *testing.T) {
		env := igtEnv(t)
		base := takeCensus(env.Kernel)
		d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
		fd := must(d.ExportDmaBuf(must(d.BOCreate(size, gtt, 0, 0))))
		raceOnOneFD(t, func() error {
			h, err := d.ImportDmaBuf(fd)
			if err != nil {
				return err
			}
			if err := d.BOClose(h); err != nil && !errors.Is(err, syscall.EINVAL) {
				return err
			}
			return nil
		})
		ok(t, d.Close())
		unix.Close(fd)
		backToBaseline(t, env.Kernel, base)
	})
}

// raceOnOneFD runs round on several goroutines at once, a fixed number of
// times each.
func raceOnOneFD(t *testing.T, round func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				if err := round(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestIGT_syncobj_basic(t *testing.T) {
	env := igtEnv(t)
	t.Run("bad-destroy", func(t *testing.T) {
		d := env.Open(t, 128)
		wantErrno(t, d.SyncobjDestroy(0xdeadbeef), syscall.EINVAL)
	})
	t.Run("create-signaled", func(t *testing.T) {
		d := env.Open(t, 128)
		s := must(d.SyncobjCreate(true))
		must(d.SyncobjWait([]uint32{s}, 0, false, false))
		ok(t, d.SyncobjDestroy(s))
	})
}

// Stages of a syncobj in syncobj_wait: no fence, an unsignalled sw_sync
// fence, a signalled one.
const (
	unsubmitted = iota
	submitted
	signaled
)

// attachSwSync puts a fence of a new sw_sync timeline (point 1) into
// syncobj s and returns the timeline (IGT's syncobj_attach_sw_sync).
func attachSwSync(t testing.TB, d *libdrm.Device, s uint32) uint32 {
	t.Helper()
	tl := must(d.SwSyncCreate())
	ok(t, d.SwSyncFence(tl, 1, s))
	return tl
}

// syncobjIn makes a syncobj in a stage.
func syncobjIn(t testing.TB, d *libdrm.Device, stage int) uint32 {
	t.Helper()
	s := must(d.SyncobjCreate(false))
	if stage >= submitted {
		tl := attachSwSync(t, d, s)
		if stage == signaled {
			ok(t, d.SwSyncInc(tl, 1))
		}
	}
	return s
}

// trigger attaches a signalled fence (IGT's syncobj_trigger).
func trigger(t testing.TB, d *libdrm.Device, s uint32) {
	t.Helper()
	ok(t, d.SwSyncInc(attachSwSync(t, d, s), 1))
}

// waitErr is the errno of a wait (0 for success).
func waitErr(d *libdrm.Device, handles []uint32, timeout time.Duration, all, forSubmit bool) syscall.Errno {
	_, err := d.SyncobjWait(handles, timeout, all, forSubmit)
	var e *uapi.Error
	if errors.As(err, &e) {
		return e.Errno
	}
	if err != nil {
		return syscall.EIO
	}
	return 0
}

// wantWait checks a wait's outcome with IGT's three timeouts: a poll, a
// short one and, unless it must time out, none.
func wantWait(t *testing.T, d *libdrm.Device, handles []uint32, all, forSubmit bool, want syscall.Errno) {
	t.Helper()
	timeouts := []time.Duration{0, 100 * time.Millisecond}
	if want != syscall.ETIME {
		timeouts = append(timeouts, -1)
	}
	for _, to := range timeouts {
		if got := waitErr(d, handles, to, all, forSubmit); got != want {
			t.Fatalf("wait (timeout %v): errno %v, want %v", to, errnoName(got), errnoName(want))
		}
	}
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	return e.Error()
}

// waitName is syncobj_wait's subtest name for a wait mode and stages.
func waitName(kind string, all, forSubmit bool, stages []bool, want syscall.Errno) string {
	var b strings.Builder
	if want == syscall.EINVAL {
		b.WriteString("invalid-")
	}
	b.WriteString(kind)
	if all {
		b.WriteString("-all")
	}
	if forSubmit {
		b.WriteString("-for-submit")
	}
	for i, name := range []string{"unsubmitted", "submitted", "signaled"} {
		if stages[i] {
			b.WriteString("-" + name)
		}
	}
	return b.String()
}

// waitOutcome is what a wait on syncobjs in stages gives, by Linux's rules.
func waitOutcome(stages []int, all, forSubmit bool) syscall.Errno {
	nSignaled := 0
	for _, s := range stages {
		if s == unsubmitted && !forSubmit {
			return syscall.EINVAL
		}
		if s == signaled {
			nSignaled++
		}
	}
	if (all && nSignaled == len(stages)) || (!all && nSignaled > 0) {
		return 0
	}
	return syscall.ETIME
}

func TestIGT_syncobj_wait(t *testing.T) {
	env := igtEnv(t)
	t.Run("invalid-wait-illegal-handle", func(t *testing.T) {
		d := env.Open(t, 128)
		wantErrno(t, func() error { _, err := d.SyncobjWait([]uint32{0}, 0, false, false); return err }(), syscall.ENOENT)
	})
	t.Run("invalid-reset-illegal-handle", func(t *testing.T) {
		wantErrno(t, env.Open(t, 128).SyncobjReset(0), syscall.ENOENT)
	})
	t.Run("invalid-signal-illegal-handle", func(t *testing.T) {
		wantErrno(t, env.Open(t, 128).SyncobjSignal(0), syscall.ENOENT)
	})
	// single-wait: one syncobj in each stage; multi-wait: three syncobjs
	// in the stages chosen (the highest repeated), each with and without
	// WAIT_ALL and WAIT_FOR_SUBMIT.
	for mask := 1; mask < 8; mask++ {
		var chosen []int
		for s := range 3 {
			if mask&(1<<s) != 0 {
				chosen = append(chosen, s)
			}
		}
		flags := []bool{mask&1 != 0, mask&2 != 0, mask&4 != 0}
		for _, all := range []bool{false, true} {
			for _, forSubmit := range []bool{false, true} {
				if len(chosen) == 1 {
					want := waitOutcome(chosen, all, forSubmit)
					t.Run(waitName("single-wait", all, forSubmit, flags, want), func(t *testing.T) {
						d := env.Open(t, 128)
						wantWait(t, d, []uint32{syncobjIn(t, d, chosen[0])}, all, forSubmit, want)
					})
				}
				if all && forSubmit && mask == 7 {
					continue // IGT's loop bound stops one short of this one
				}
				stages := append([]int(nil), chosen...)
				for len(stages) < 3 {
					stages = append(stages, chosen[len(chosen)-1])
				}
				want := waitOutcome(stages, all, forSubmit)
				t.Run(waitName("multi-wait", all, forSubmit, flags, want), func(t *testing.T) {
					d := env.Open(t, 128)
					var hs []uint32
					for _, s := range stages {
						hs = append(hs, syncobjIn(t, d, s))
					}
					wantWait(t, d, hs, all, forSubmit, want)
				})
			}
		}
	}
	// delayed: the fence signals (or, with WAIT_FOR_SUBMIT, arrives
	// signalled) while the wait waits, from another thread on the same fd.
	for _, tc := range []struct {
		name           string
		all, forSubmit bool
	}{
		{"wait-delayed-signal", false, false},
		{"wait-for-submit-delayed-submit", false, true},
		{"wait-all-delayed-signal", true, false},
		{"wait-all-for-submit-delayed-submit", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := env.Open(t, 128)
			id := fileID(t, ctlClient(t, env), d)
			s := must(d.SyncobjCreate(false))
			var tl uint32
			if !tc.forSubmit {
				tl = attachSwSync(t, d, s)
			}
			done := make(chan error, 1)
			go func() { _, err := d.SyncobjWait([]uint32{s}, 10*time.Second, tc.all, tc.forSubmit); done <- err }()
			waitingIn(t, env.Kernel, id, 1)
			if tc.forSubmit {
				trigger(t, d, s)
			} else {
				ok(t, d.SwSyncInc(tl, 1))
			}
			ok(t, <-done)
		})
	}
	t.Run("reset-unsignaled", func(t *testing.T) {
		d := env.Open(t, 128)
		s := must(d.SyncobjCreate(false))
		wantWait(t, d, []uint32{s}, false, false, syscall.EINVAL)
		ok(t, d.SyncobjReset(s))
		wantWait(t, d, []uint32{s}, false, false, syscall.EINVAL)
	})
	t.Run("reset-signaled", func(t *testing.T) {
		d := env.Open(t, 128)
		s := must(d.SyncobjCreate(false))
		trigger(t, d, s)
		wantWait(t, d, []uint32{s}, false, false, 0)
		ok(t, d.SyncobjReset(s))
		wantWait(t, d, []uint32{s}, false, false, syscall.EINVAL)
	})
	t.Run("reset-multiple-signaled", func(t *testing.T) {
		d := env.Open(t, 128)
		var hs []uint32
		for range 3 {
			s := must(d.SyncobjCreate(false))
			trigger(t, d, s)
			hs = append(hs, s)
		}
		wantWait(t, d, hs, false, false, 0)
		for _, s := range hs {
			ok(t, d.SyncobjReset(s))
		}
		for _, s := range hs {
			wantWait(t, d, []uint32{s}, false, false, syscall.EINVAL)
		}
	})
	t.Run("reset-during-wait-for-submit", func(t *testing.T) {
		d := env.Open(t, 128)
		id := fileID(t, ctlClient(t, env), d)
		s := must(d.SyncobjCreate(false))
		done := make(chan error, 1)
		go func() { _, err := d.SyncobjWait([]uint32{s}, 10*time.Second, false, true); done <- err }()
		waitingIn(t, env.Kernel, id, 1)
		ok(t, d.SyncobjReset(s)) // a no-op in the middle of a wait
		trigger(t, d, s)
		ok(t, <-done)
	})
	t.Run("signal", func(t *testing.T) {
		d := env.Open(t, 128)
		s := must(d.SyncobjCreate(false))
		if got := waitErr(d, []uint32{s}, 0, false, false); got != syscall.EINVAL {
			t.Fatalf("wait on an empty syncobj: %v", errnoName(got))
		}
		if got := waitErr(d, []uint32{s}, 0, false, true); got != syscall.ETIME {
			t.Fatalf("wait for submit on an empty syncobj: %v", errnoName(got))
		}
		ok(t, d.SyncobjSignal(s))
		must(d.SyncobjWait([]uint32{s}, 0, false, false))
		must(d.SyncobjWait([]uint32{s}, 0, false, true))
	})
	for _, tc := range []struct {
		name           string
		all, forSubmit bool
	}{
		{"wait-any-snapshot", false, false},
		{"wait-all-snapshot", true, false},
		{"wait-for-submit-snapshot", false, true},
		{"wait-all-for-submit-snapshot", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) { waitSnapshot(t, env, tc.all, tc.forSubmit) })
	}
	for _, tc := range []struct {
		name           string
		all, forSubmit bool
	}{
		{"wait-any-complex", false, false},
		{"wait-all-complex", true, false},
		{"wait-for-submit-complex", false, true},
		{"wait-all-for-submit-complex", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) { waitComplex(t, env, tc.all, tc.forSubmit) })
	}
}

// waitSnapshot: a wait goes by the fences the syncobjs held when it began
// (or, waiting for submit, the first fence attached): while it waits, the
// first syncobj's fence is signalled (all) or attached (for submit), then
// the syncobj is reset and given a fence that never signals; the wait
// still ends once the second syncobj's fence signals, and a wait for any
// reports index 1.
func waitSnapshot(t *testing.T, env *ksimtest.Env, all, forSubmit bool) {
	d := env.Open(t, 128)
	id := fileID(t, ctlClient(t, env), d)
	s := []uint32{must(d.SyncobjCreate(false)), must(d.SyncobjCreate(false))}
	var tl [2]uint32
	if !forSubmit {
		tl[0], tl[1] = attachSwSync(t, d, s[0]), attachSwSync(t, d, s[1])
	}
	type result struct {
		first uint32
		err   error
	}
	done := make(chan result, 1)
	go func() {
		first, err := d.SyncobjWait(s, 10*time.Second, all, forSubmit)
		done <- result{first, err}
	}()
	waitingIn(t, env.Kernel, id, 1)
	switch {
	case all && forSubmit:
		trigger(t, d, s[0])
	case all:
		ok(t, d.SwSyncInc(tl[0], 1))
	case forSubmit:
		attachSwSync(t, d, s[0])
	}
	ok(t, d.SyncobjReset(s[0]))
	attachSwSync(t, d, s[0]) // never signals
	if forSubmit {
		trigger(t, d, s[1])
	} else {
		ok(t, d.SwSyncInc(tl[1], 1))
	}
	r := <-done
	ok(t, r.err)
	if !all && r.first != 1 {
		t.Fatalf("first_signaled %d, want 1", r.first)
	}
}

// waitComplex: eight syncobjs go through their stages in a shuffled order
// (no fence, a fence, signalled, reset, a fence that never signals) while
// a wait on all of them waits; a wait for any ends with the first one
// signalled, as its index, a wait for all once all eight have signalled.
// IGT waits on the first two only (its count_handles is 2); here the wait
// is on all eight, as the test means.
func waitComplex(t *testing.T, env *ksimtest.Env, all, forSubmit bool) {
	d := env.Open(t, 128)
	id := fileID(t, ctlClient(t, env), d)
	shuffled := []int{
		2, 0, 6, 1, 1, 4, 5, 2, 0, 7, 1, 7, 6, 3, 4, 5,
		0, 2, 7, 3, 5, 4, 0, 6, 7, 3, 2, 5, 6, 1, 4, 3,
	}
	var (
		s     [8]uint32
		tl    [8]uint32
		stage [8]int
		first = -1
		n     int
	)
	for i := range s {
		s[i] = must(d.SyncobjCreate(false))
		if !forSubmit {
			tl[i] = attachSwSync(t, d, s[i])
			stage[i] = 1 // submitted up front
		}
	}
	type result struct {
		first uint32
		err   error
	}
	done := make(chan result, 1)
	go func() {
		f, err := d.SyncobjWait(s[:], 10*time.Second, all, forSubmit)
		done <- result{f, err}
	}()
	waitingIn(t, env.Kernel, id, 1)
	for _, i := range shuffled {
		switch stage[i] {
		case 0:
			tl[i] = attachSwSync(t, d, s[i])
		case 1:
			ok(t, d.SwSyncInc(tl[i], 1))
			if n == 0 {
				first = i
			}
			n++
		case 2:
			ok(t, d.SyncobjReset(s[i]))
		case 3:
			attachSwSync(t, d, s[i])
		default:
			t.Fatalf("syncobj %d has no stage %d", i, stage[i])
		}
		stage[i]++
		if (all && n == len(s)) || (!all && n > 0) {
			break
		}
	}
	r := <-done
	ok(t, r.err)
	if all && n != len(s) {
		t.Fatalf("%d of %d signalled", n, len(s))
	}
	if !all && int(r.first) != first {
		t.Fatalf("first_signaled %d, the first signalled was %d", r.first, first)
	}
}
