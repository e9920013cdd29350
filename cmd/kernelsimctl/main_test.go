package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/ktime"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

func TestDebugTextAndJSON(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	h, err := d.BOCreate(8192, uapi.Domain_DOMAIN_VRAM, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := d.ExportDmaBuf(h)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := d.VMMap(h, 0, 0x10000, 8192, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CtxCreate(0); err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := runErr([]string{"-runtime-dir", env.Dir, "debug"}, &text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"renderD128 amdgpu", "handle 1 -> bo 1 prime", "va 0x10000+0x2000 -> handle 1", "ctx 1 submitted 0", "dma-bufs:", "bo 1 renderD128 8192 bytes DOMAIN_VRAM"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text view lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := runErr([]string{"-runtime-dir", env.Dir, "debug", "-json"}, &js); err != nil {
		t.Fatal(err)
	}
	var st kernelsim.DebugState
	if err := json.Unmarshal(js.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Files) != 1 || len(st.BOs) != 1 || len(st.DmaBufs) != 1 || st.Files[0].Mappings[0].VA != 0x10000 {
		t.Fatalf("JSON view: %+v", st)
	}
	if err := runErr([]string{"-runtime-dir", env.Dir, "bogus"}, &js); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestDebugDuringTeardown prints the debug view in a loop while clients
// come and go with work in flight (run with -race).
func TestDebugDuringTeardown(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var b bytes.Buffer
			if err := runErr([]string{"-runtime-dir", env.Dir, "debug"}, &b); err != nil {
				errs <- err
				return
			}
		}
	}()
	for i := range 40 {
		d, err := libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128))
		if err != nil {
			t.Fatal(err)
		}
		h, _ := d.BOCreate(1<<20, uapi.Domain_DOMAIN_GTT, 0, 0)
		ctx, _ := d.CtxCreate(0)
		for j := range 4 {
			d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}},
				Commands: []*uapi.Command{{Op: 1, Src: -1, Len: 1 << 20, Value: uint64(i + j)}}})
		}
		d.Close()
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// TestDebugShowsJobs: a job held in flight by the manual clock is listed
// with its context, state and BOs, and is gone once it completed.
func TestDebugShowsJobs(t *testing.T) {
	clock := ktime.NewManual()
	env := ksimtest.Start(t, kernelsim.Config{Clock: clock})
	d := env.Open(t, 128)
	h, err := d.BOCreate(1<<20, uapi.Domain_DOMAIN_VRAM, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := d.CtxCreate(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, Len: 1 << 20, Value: 1}}}); err != nil {
		t.Fatal(err)
	}
	if !clock.WaitPending(1, 10*time.Second) {
		t.Fatal("the job never reached the GPU")
	}
	var text bytes.Buffer
	if err := runErr([]string{"-runtime-dir", env.Dir, "debug"}, &text); err != nil {
		t.Fatal(err)
	}
	if want := "file 1 ctx 1 started, 1 command(s) on bos [1]"; !strings.Contains(text.String(), want) {
		t.Fatalf("text view lacks %q:\n%s", want, text.String())
	}
	clock.Advance(time.Hour)
	if busy, err := d.WaitIdle(h, true, 10*time.Second); err != nil || busy {
		t.Fatalf("job did not finish: %v %v", busy, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		text.Reset()
		if err := runErr([]string{"-runtime-dir", env.Dir, "debug"}, &text); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text.String(), "  job ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("finished job still listed:\n%s", text.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runErr runs kernelsimctl and turns a non-zero exit into an error
// carrying its stderr.
func runErr(args []string, out *bytes.Buffer) error {
	var errOut bytes.Buffer
	if code := run(args, out, &errOut); code != 0 {
		return fmt.Errorf("kernelsimctl %q: exit %d: %s", args, code, errOut.String())
	}
	return nil
}

// noNull fails on any null in a JSON document: every list of the debug
// view is present and [] when empty.
func noNull(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case nil:
		t.Errorf("%s is null", path)
	case map[string]any:
		for k, x := range v {
			noNull(t, path+"."+k, x)
		}
	case []any:
		for i, x := range v {
			noNull(t, fmt.Sprintf("%s[%d]", path, i), x)
		}
	}
}

// TestDebugJSONEmptyLists: the lists of an idle kernel, of a file without
// handles and of a BO without fences are [], never null or missing.
func TestDebugJSONEmptyLists(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	var js bytes.Buffer
	if err := runErr([]string{"-runtime-dir", env.Dir, "debug", "-json"}, &js); err != nil {
		t.Fatal(err)
	}
	var idle map[string]any
	must(t, json.Unmarshal(js.Bytes(), &idle))
	noNull(t, "idle", idle)
	for _, k := range []string{"files", "bos", "dmabufs", "jobs"} {
		if l, ok := idle[k].([]any); !ok || len(l) != 0 {
			t.Errorf("idle kernel: %s is %v, want []", k, idle[k])
		}
	}

	env.Open(t, 128) // a file with nothing in it
	d := env.Open(t, 128)
	if _, err := d.BOCreate(8192, uapi.Domain_DOMAIN_GTT, 0, 0); err != nil {
		t.Fatal(err)
	}
	js.Reset()
	if err := runErr([]string{"-runtime-dir", env.Dir, "debug", "-json"}, &js); err != nil {
		t.Fatal(err)
	}
	var all any
	must(t, json.Unmarshal(js.Bytes(), &all))
	noNull(t, "busy", all)
	var busy struct {
		Files []map[string]any `json:"files"`
		BOs   []map[string]any `json:"bos"`
	}
	must(t, json.Unmarshal(js.Bytes(), &busy))
	if len(busy.Files) != 2 || len(busy.BOs) != 1 {
		t.Fatalf("want 2 files and 1 BO:\n%s", js.String())
	}
	for _, k := range []string{"handles", "mappings", "contexts", "syncobjs"} {
		if l, ok := busy.Files[0][k].([]any); !ok || len(l) != 0 {
			t.Errorf("file without objects: %s is %v, want []", k, busy.Files[0][k])
		}
	}
	if l, ok := busy.BOs[0]["resv"].([]any); !ok || len(l) != 0 {
		t.Errorf("idle BO: resv is %v, want []", busy.BOs[0]["resv"])
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUsage: -h documents KERNELSIM_RUNTIME_DIR and exits 0; mistakes
// exit 2 with the usage.
func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "$KERNELSIM_RUNTIME_DIR") || !strings.Contains(out.String(), "/run/kernelsim") {
		t.Errorf("-h: exit %d:\n%s%s", code, out.String(), errOut.String())
	}
	for _, args := range [][]string{nil, {"bogus"}, {"-x"}, {"debug", "-x"}, {"debug", "extra"}} {
		out.Reset()
		errOut.Reset()
		if code := run(args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage: kernelsimctl") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut.String())
		}
	}
	errOut.Reset()
	if code := run([]string{"-runtime-dir", t.TempDir(), "debug"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "control") {
		t.Errorf("no daemon: exit %d, stderr %q", code, errOut.String())
	}
}
