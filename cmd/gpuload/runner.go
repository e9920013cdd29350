package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// runner is one process's view of a run.
type runner struct {
	p      *params
	sc     *scenario
	role   string // "" in the parent
	stderr io.Writer

	children []*child
}

// runSteps is the parent's step loop and the progress protocol: it reports
// "step 0/N" (setupDone), then for each step i (0-based) calls submit(i),
// reports "step i+1/N" (the step's work is submitted), calls complete(i)
// when set (what must finish before the next step starts) and sleeps the
// step delay. It stops at the first error, returned as "step i+1: ...".
func (r *runner) runSteps(submit, complete func(i int) error) error {
	r.setupDone()
	for i := range r.p.steps {
		if err := submit(i); err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		r.progress(i + 1)
		if complete != nil {
			if err := complete(i); err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
		}
		r.stepDelay(i + 1)
	}
	return nil
}

// progress reports that step i (1-based) has been submitted.
func (r *runner) progress(i int) { r.progressLine(fmt.Sprintf("step %d/%d", i, r.p.steps)) }

// setupDone reports "step 0/N": everything is set up (buffers created and
// shared, children ready) and no step has been submitted yet; then it
// waits one step delay, so that a harness can checkpoint that state.
func (r *runner) setupDone() {
	r.progress(0)
	if r.p.stepDelay > 0 {
		time.Sleep(r.p.stepDelay)
	}
}

// progressLine writes a protocol line to stderr and the progress file.
// Only the parent reports progress. The file is opened for each line (no
// descriptor of it stays open across a checkpoint).
func (r *runner) progressLine(line string) {
	if r.role != "" {
		return
	}
	fmt.Fprintln(r.stderr, line)
	if r.p.progress == "" {
		return
	}
	f, err := os.OpenFile(r.p.progress, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(r.stderr, "gpuload: progress file: %v\n", err)
		return
	}
	if _, err := f.Write([]byte(line + "\n")); err != nil {
		fmt.Fprintf(r.stderr, "gpuload: progress file: %v\n", err)
	}
	f.Close()
}

// infof writes an informational line to stderr (never to the progress
// file).
func (r *runner) infof(format string, args ...any) {
	who := r.sc.name
	if r.role != "" {
		who += " " + r.role
	}
	fmt.Fprintf(r.stderr, "gpuload: %s: %s\n", who, fmt.Sprintf(format, args...))
}

// stepDelay sleeps between steps (wall time never affects the result).
func (r *runner) stepDelay(i int) {
	if i < r.p.steps && r.p.stepDelay > 0 {
		time.Sleep(r.p.stepDelay)
	}
}

// gpuProc is a process's drm file and its handles for the scenario's
// logical buffers.
type gpuProc struct {
	dev     *libdrm.Device
	handles map[bufID]uint32
	sizes   map[bufID]uint64
	vas     map[bufID]uint64
	nextVA  uint64 // where the next mapping goes (see vaBase)

	// On xe, buffers are bound into the process's VMs with VM_BIND (xe
	// has no VA ioctl): vm is the regular VM, made at open; a
	// long-running VM is made by xeQueue when asked for.
	driver string
	vm     uint32
	lrVM   uint32
}

// newBuf is a buffer for openGPU to create.
type newBuf struct {
	id     bufID
	size   uint64
	domain uapi.Domain
}

func vram(id bufID, size uint64) newBuf { return newBuf{id, size, uapi.Domain_DOMAIN_VRAM} }
func gtt(id bufID, size uint64) newBuf  { return newBuf{id, size, uapi.Domain_DOMAIN_GTT} }

// openGPU opens the render node and creates bufs, in order.
func (r *runner) openGPU(bufs ...newBuf) (*gpuProc, error) {
	return r.openGPUOn(r.p.minor, bufs...)
}

// openGPUOn is openGPU on the render node of another minor.
func (r *runner) openGPUOn(minor uint32, bufs ...newBuf) (*gpuProc, error) {
	path := kernelsim.RenderNodePath(r.p.runtimeDir, minor)
	dev, err := libdrm.Open(path)
	if err != nil {
		return nil, err
	}
	g := &gpuProc{dev: dev, handles: map[bufID]uint32{}, sizes: map[bufID]uint64{}, vas: map[bufID]uint64{}, nextVA: vaBase}
	v, err := dev.Version()
	if err != nil {
		dev.Close()
		return nil, err
	}
	g.driver = v.Driver
	if g.driver == "xe" {
		if g.vm, err = dev.XeVMCreate(0); err != nil {
			dev.Close()
			return nil, fmt.Errorf("create VM: %w", err)
		}
	}
	for _, b := range bufs {
		if err := g.create(b.id, b.size, b.domain); err != nil {
			g.close()
			return nil, err
		}
	}
	return g, nil
}

func (g *gpuProc) close() {
	if g != nil && g.dev != nil {
		g.dev.Close()
	}
}

// newContext creates a GPU context of the given priority.
func (g *gpuProc) newContext(priority int32) (uint32, error) {
	ctx, err := g.dev.CtxCreate(priority)
	if err != nil {
		return 0, fmt.Errorf("create context: %w", err)
	}
	return ctx, nil
}

// newSyncobj creates an unsignalled syncobj.
func (g *gpuProc) newSyncobj() (uint32, error) {
	so, err := g.dev.SyncobjCreate(false)
	if err != nil {
		return 0, fmt.Errorf("create syncobj: %w", err)
	}
	return so, nil
}

// awaitJob waits without a time limit for the job whose out-syncobj is
// so and checks that it succeeded; what names the job in errors.
func (g *gpuProc) awaitJob(so uint32, what string) error {
	if _, err := g.dev.SyncobjWait([]uint32{so}, -1, true, false); err != nil {
		return fmt.Errorf("wait for the %s: %w", what, err)
	}
	q, err := g.dev.SyncobjQuery(so)
	if err != nil {
		return fmt.Errorf("query syncobj: %w", err)
	}
	if q.Error != 0 {
		return fmt.Errorf("%s failed: %v", what, syscall.Errno(-q.Error))
	}
	return nil
}

// exportDmaBuf exports a buffer as a new dma-buf fd (the caller closes it).
func (g *gpuProc) exportDmaBuf(id bufID) (int, error) {
	fd, err := g.dev.ExportDmaBuf(g.handles[id])
	if err != nil {
		return -1, fmt.Errorf("export: %w", err)
	}
	return fd, nil
}

// A process lays out its GPU virtual addresses from the sizes it maps: each
// buffer goes at the next vaAlign boundary after the previous one, from
// vaBase up, so buffers of any size get disjoint ranges. The layout
// depends only on the order of the process's mappings, so it is the same
// in every run.
const (
	vaBase  = 0x1_0000_0000
	vaAlign = 2 << 20 // the large-page size GPUs map with
)

// allocVA reserves the next VA range for size bytes.
func (g *gpuProc) allocVA(size uint64) uint64 {
	va := g.nextVA
	g.nextVA += (size + vaAlign - 1) &^ (vaAlign - 1)
	return va
}

// create allocates a buffer and maps it into the GPU address space.
func (g *gpuProc) create(id bufID, size uint64, domain uapi.Domain) error {
	h, err := g.dev.BOCreate(size, domain, 0, 0)
	if err != nil {
		return fmt.Errorf("create buffer %d: %w", id, err)
	}
	return g.adopt(id, h, size)
}

// adopt records a handle (created or imported) and maps it.
func (g *gpuProc) adopt(id bufID, h uint32, size uint64) error {
	g.handles[id], g.sizes[id] = h, size
	va := g.allocVA(size)
	if err := g.mapVA(h, va, size); err != nil {
		return fmt.Errorf("map buffer %d (%d bytes at VA %#x): %w", id, size, va, err)
	}
	g.vas[id] = va
	return nil
}

// mapVA maps a BO at va in the process's GPU address spaces: the VA
// ioctl (amdgpu), or VM_BIND into each of its VMs (xe).
func (g *gpuProc) mapVA(h uint32, va, size uint64) error {
	if g.driver != "xe" {
		return g.dev.VMMap(h, 0, va, size, 0)
	}
	for _, vm := range []uint32{g.vm, g.lrVM} {
		if vm == 0 {
			continue
		}
		if err := g.dev.XeBind(vm, h, 0, va, size); err != nil {
			return err
		}
	}
	return nil
}

// unmapVA undoes mapVA.
func (g *gpuProc) unmapVA(va, size uint64) error {
	if g.driver != "xe" {
		return g.dev.VMUnmap(va)
	}
	for _, vm := range []uint32{g.vm, g.lrVM} {
		if vm == 0 {
			continue
		}
		if err := g.dev.XeUnbind(vm, va, size); err != nil {
			return err
		}
	}
	return nil
}

// xeQueue creates an exec queue on the process's regular VM, or on its
// long-running VM (made on first use, with every buffer bound).
func (g *gpuProc) xeQueue(priority int32, longRunning bool) (uint32, error) {
	vm := g.vm
	if longRunning {
		if g.lrVM == 0 {
			lr, err := g.dev.XeVMCreate(uapi.XeVmCreateFlagLRMode)
			if err != nil {
				return 0, fmt.Errorf("create long-running VM: %w", err)
			}
			g.lrVM = lr
			for id, va := range g.vas {
				if err := g.dev.XeBind(lr, g.handles[id], 0, va, g.sizes[id]); err != nil {
					return 0, fmt.Errorf("bind buffer %d into the long-running VM: %w", id, err)
				}
			}
		}
		vm = g.lrVM
	}
	q, err := g.dev.XeExecQueueCreate(vm, priority)
	if err != nil {
		return 0, fmt.Errorf("create exec queue: %w", err)
	}
	return q, nil
}

// xeExec queues a plan job on an exec queue, naming its buffers by GPU
// address.
func (g *gpuProc) xeExec(q uint32, j *job, in, out []uint32) error {
	req := &uapi.XeExecRequest{ExecQueueId: q, InSyncobjs: in, OutSyncobjs: out}
	for _, b := range j.bufs {
		va, ok := g.vas[b.id]
		if !ok {
			return fmt.Errorf("job %s: buffer %d is not mapped in this process", j.name, b.id)
		}
		req.Buffers = append(req.Buffers, &uapi.XeExecBuffer{Va: va, Write: b.write})
	}
	for _, c := range j.cmds {
		req.Commands = append(req.Commands, &uapi.Command{
			Op: uint32(c.Op), Dst: int32(c.Dst), Src: int32(c.Src),
			DstOff: c.DstOff, SrcOff: c.SrcOff, Len: c.Len,
			Value: c.Value, Iterations: c.Iterations,
		})
	}
	if _, err := g.dev.XeExec(req); err != nil {
		return fmt.Errorf("exec %s: %w", j.name, err)
	}
	return nil
}

// importBuf imports a dma-buf fd (which stays open) as buffer id and checks
// its size.
func (g *gpuProc) importBuf(id bufID, fd int, size uint64) error {
	h, err := g.dev.ImportDmaBuf(fd)
	if err != nil {
		return fmt.Errorf("import dma-buf: %w", err)
	}
	info, err := g.dev.BOInfo(h)
	if err != nil {
		return fmt.Errorf("imported buffer info: %w", err)
	}
	if info.Size != size {
		return fmt.Errorf("imported buffer has %d bytes, want %d", info.Size, size)
	}
	return g.adopt(id, h, size)
}

// release unmaps and closes a buffer's handle.
func (g *gpuProc) release(id bufID) error {
	h, ok := g.handles[id]
	if !ok {
		return fmt.Errorf("release buffer %d: no handle", id)
	}
	if va, ok := g.vas[id]; ok {
		if err := g.unmapVA(va, g.sizes[id]); err != nil {
			return fmt.Errorf("unmap buffer %d: %w", id, err)
		}
		delete(g.vas, id)
	}
	if err := g.dev.BOClose(h); err != nil {
		return fmt.Errorf("close buffer %d: %w", id, err)
	}
	delete(g.handles, id)
	delete(g.sizes, id)
	return nil
}

// request builds the submit request of a plan job.
func (g *gpuProc) request(ctx uint32, j *job) (*uapi.SubmitRequest, error) {
	req := &uapi.SubmitRequest{CtxId: ctx, LongRunning: j.longRunning}
	for _, b := range j.bufs {
		h, ok := g.handles[b.id]
		if !ok {
			return nil, fmt.Errorf("job %s: buffer %d has no handle in this process", j.name, b.id)
		}
		req.Bos = append(req.Bos, &uapi.SubmitBo{Handle: h, Write: b.write})
	}
	for _, c := range j.cmds {
		req.Commands = append(req.Commands, &uapi.Command{
			Op: uint32(c.Op), Dst: int32(c.Dst), Src: int32(c.Src),
			DstOff: c.DstOff, SrcOff: c.SrcOff, Len: c.Len,
			Value: c.Value, Iterations: c.Iterations,
		})
	}
	return req, nil
}

// submit queues a plan job on a context.
func (g *gpuProc) submit(ctx uint32, j *job) error {
	return g.submitSync(ctx, j, nil, nil)
}

// submitSync queues a plan job with explicit in- and out-syncobjs.
func (g *gpuProc) submitSync(ctx uint32, j *job, in, out []uint32) error {
	req, err := g.request(ctx, j)
	if err != nil {
		return err
	}
	req.InSyncobjs, req.OutSyncobjs = in, out
	if _, err := g.dev.Submit(req); err != nil {
		return fmt.Errorf("submit %s: %w", j.name, err)
	}
	return nil
}

// readBack waits until every job touching the buffer is done and reads it.
func (g *gpuProc) readBack(id bufID) ([]byte, error) {
	h, ok := g.handles[id]
	if !ok {
		return nil, fmt.Errorf("read buffer %d: no handle", id)
	}
	if _, err := g.dev.WaitIdle(h, true, -1); err != nil {
		return nil, fmt.Errorf("wait for buffer %d: %w", id, err)
	}
	buf := make([]byte, g.sizes[id])
	if err := g.dev.Read(h, 0, buf); err != nil {
		return nil, fmt.Errorf("read buffer %d: %w", id, err)
	}
	return buf, nil
}

// readAll reads buffers back and concatenates them.
func (g *gpuProc) readAll(ids ...bufID) ([]byte, error) {
	var out []byte
	for _, id := range ids {
		b, err := g.readBack(id)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// concat runs an executor's buffers together, the CPU twin of readAll.
func concat(ex executor, ids ...bufID) []byte {
	var out []byte
	for _, id := range ids {
		out = append(out, ex.bytes(id)...)
	}
	return out
}
