package kernelsim

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// DriverPrivateVersion is the version of the DriverPrivate blob (the
// blob of contexts, syncobjs and timelines amdgpu writes, kernelsim/amdgpu)
// this kernel writes and reads.
const DriverPrivateVersion = 1

// IO is a connection serving a file, as the checkpoint code sees it: the
// file's own socket, or a reply channel attached to it.
type IO interface {
	// Freeze stops the connection at request boundaries and captures the
	// traffic in flight on it.
	Freeze() error
	// Pending returns what Freeze captured; sock is the client's end of
	// the connection, whose receive queue tells which replies are unread.
	Pending(sock int) (*uapi.PendingIO, error)
	// Thaw undoes Freeze.
	Thaw()
	// Kill disconnects the client.
	Kill()
}

// fileIO is a connection serving a file.
type fileIO struct {
	io        IO
	clientIno uint64 // the client's end of the connection
	channel   bool   // a reply channel (else the file's own socket)
}

// attachIO records a connection that serves f. Called with k.mu held.
func (f *File) attachIO(io IO, clientIno uint64, channel bool) {
	f.ios = append(f.ios, fileIO{io: io, clientIno: clientIno, channel: channel})
	if !channel {
		f.clientIno = clientIno
	}
}

// detachIO forgets a connection that served f. Called with k.mu held.
func (f *File) detachIO(io IO) {
	f.ios = slices.DeleteFunc(f.ios, func(e fileIO) bool { return e.io == io })
}

// channelOf returns the connection of f with client inode ino. Called
// with k.mu held.
func (f *File) ioOf(ino uint64) (fileIO, bool) {
	for _, e := range f.ios {
		if e.clientIno == ino {
			return e, true
		}
	}
	return fileIO{}, false
}

// Pause stops the files' contexts taking new work (submitters wait), runs
// their queued and in-flight jobs to completion and preempts long-running
// ones, all within timeout. On failure nothing stays paused and the error
// names the process, context and what it waits on.
func (k *Kernel) Pause(fileIDs []uint64, timeout time.Duration) error {
	files, err := k.lookupFiles(fileIDs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	type result struct {
		c   *Context
		err error
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []result
	)
	for _, f := range files {
		k.mu.Lock()
		f.paused = true
		ctxs := f.contextList()
		k.mu.Unlock()
		for _, c := range ctxs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if p, ok := c.data.(Preempter); ok {
					err = p.Preempt(ctx)
				} else {
					err = c.pause(ctx)
				}
				mu.Lock()
				results = append(results, result{c, err})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	var msgs []string
	for _, r := range results {
		if r.err != nil {
			msgs = append(msgs, fmt.Sprintf("pid %d file %d context %d: %v", r.c.f.owner.PID, r.c.f.id, r.c.id, r.err))
		}
	}
	if msgs != nil {
		k.Resume(fileIDs)
		slices.Sort(msgs)
		return errnof(syscall.ETIMEDOUT, "pause did not drain within %v: %s", timeout, strings.Join(msgs, "; "))
	}
	// Drop the signalled fences from the files' BOs, so that what a
	// checkpoint sees of their reservation objects is only live work.
	k.mu.Lock()
	for _, f := range files {
		for _, h := range f.handles.ids() {
			bo, _ := f.handles.get(h)
			bo.resv.Prune()
		}
	}
	k.mu.Unlock()
	return nil
}

// Resume undoes Pause and Checkpoint: connections take requests again and
// contexts take work again. Files that are gone are skipped.
func (k *Kernel) Resume(fileIDs []uint64) {
	for _, id := range fileIDs {
		k.mu.Lock()
		f := k.files[id]
		var (
			ctxs []*Context
			ios  []fileIO
		)
		if f != nil {
			f.paused = false
			f.frozen = false
			ctxs = f.contextList()
			ios = slices.Clone(f.ios)
		}
		k.mu.Unlock()
		for _, c := range ctxs {
			if p, ok := c.data.(Preempter); ok {
				p.Resume()
			} else {
				c.resume()
			}
		}
		for _, e := range ios {
			e.io.Thaw()
		}
	}
}

func (k *Kernel) lookupFiles(ids []uint64) ([]*File, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	files := make([]*File, 0, len(ids))
	for _, id := range ids {
		f, ok := k.files[id]
		if !ok {
			return nil, errnof(syscall.ENOENT, "no drm file %d", id)
		}
		files = append(files, f)
	}
	return files, nil
}

// contextList returns the file's contexts by id. Called with k.mu held.
func (f *File) contextList() []*Context {
	ids := f.contexts.ids()
	out := make([]*Context, len(ids))
	for i, id := range ids {
		out[i], _ = f.contexts.get(id)
	}
	return out
}

// CheckpointFile captures a paused file: driver-neutral state and the
// driver blob. Every connection serving the file (its own socket and its
// reply channels) is frozen, and stays frozen until Resume; CheckpointIO
// then returns the traffic caught in flight on each.
func (k *Kernel) CheckpointFile(id uint64) (*uapi.FileCheckpoint, error) {
	k.mu.Lock()
	f, ok := k.files[id]
	if !ok {
		k.mu.Unlock()
		return nil, errnof(syscall.ENOENT, "no drm file %d", id)
	}
	if !f.paused {
		k.mu.Unlock()
		return nil, errnof(syscall.EBUSY, "drm file %d is not paused", id)
	}
	if f.frozen {
		k.mu.Unlock()
		return nil, errnof(syscall.EBUSY, "drm file %d is already frozen by a checkpoint", id)
	}
	// No channel attaches while the file is frozen (see conn.attach).
	f.frozen = true
	ios := slices.Clone(f.ios)
	k.mu.Unlock()

	for i, e := range ios {
		if err := e.io.Freeze(); err != nil {
			for _, done := range ios[:i] {
				done.io.Thaw()
			}
			k.mu.Lock()
			f.frozen = false
			k.mu.Unlock()
			return nil, fmt.Errorf("drm file %d: %w", id, err)
		}
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	var err error
	cp := &uapi.FileCheckpoint{
		FileId: f.id, Minor: f.dev.cfg.Minor, Driver: f.dev.drv.name,
		GpuId: f.dev.cfg.GPUID, OwnerPid: f.owner.PID,
	}
	bos := map[uint64]*BO{}
	for _, h := range f.handles.ids() {
		bo, _ := f.handles.get(h)
		_, prime := f.prime[h]
		real := bo.real()
		cp.Handles = append(cp.Handles, &uapi.HandleState{Handle: h, BoId: real.id, Prime: prime, Attachment: bo != real})
		bos[real.id] = real
	}
	for _, m := range f.vm {
		cp.Mappings = append(cp.Mappings, &uapi.VaMapping{Handle: m.Handle, BoOffset: m.BOOffset, Va: m.VA, Size: m.Size, Flags: m.Flags})
	}
	dcp := &DriverCheckpoint{f: f, bos: bos, jobFences: map[*dma.Fence]bool{}}
	if cp.DriverPrivate, err = f.priv.Checkpoint(dcp); err != nil {
		return nil, fmt.Errorf("drm file %d: %w", id, err)
	}
	cp.JobFences, cp.WaitsOnFences = dcp.fences, dcp.waits
	ids := make([]uint64, 0, len(bos))
	for id := range bos {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		cp.Bos = append(cp.Bos, bos[id].state())
	}
	return cp, nil
}

// CheckpointIO returns the traffic caught in flight on one connection of a
// drm file that CheckpointFile froze: requests waiting or not started, and
// replies the client has not read (with the BO of each dma-buf they
// carry). ino is the client inode of the connection and sock the client's
// end of it (criu's copy); the caller keeps sock.
func (k *Kernel) CheckpointIO(fileID, ino uint64, sock int) (*uapi.PendingIO, error) {
	k.mu.Lock()
	f, ok := k.files[fileID]
	var e fileIO
	if ok {
		e, ok = f.ioOf(ino)
	}
	frozen := f != nil && f.frozen
	k.mu.Unlock()
	switch {
	case f == nil:
		return nil, errnof(syscall.ENOENT, "no drm file %d", fileID)
	case !ok:
		return nil, errnof(syscall.ENOENT, "drm file %d has no connection with client inode %d", fileID, ino)
	case !frozen:
		return nil, errnof(syscall.EBUSY, "drm file %d is not frozen by a checkpoint", fileID)
	}
	p, err := e.io.Pending(sock)
	if err != nil {
		return nil, fmt.Errorf("drm file %d, connection inode %d: %w", fileID, ino, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range p.UnreadReplies {
		if r.DmabufInode == 0 {
			continue
		}
		db, ok := k.dmabufs[r.DmabufInode]
		if !ok {
			return nil, fmt.Errorf("drm file %d: an unread reply carries dma-buf inode %d, which is gone", fileID, r.DmabufInode)
		}
		r.Bo = db.bo.state()
	}
	return p, nil
}

// CheckpointDmaBuf describes the BO behind a dma-buf inode. It fails with
// EAGAIN while a request on the dma-buf is unanswered.
func (k *Kernel) CheckpointDmaBuf(ino uint64) (*uapi.BoState, error) {
	k.mu.Lock()
	db, ok := k.dmabufs[ino]
	k.mu.Unlock()
	if !ok {
		return nil, errnof(syscall.ENOENT, "no dma-buf with inode %d", ino)
	}
	db.reqMu.Lock()
	defer db.reqMu.Unlock()
	if err := db.checkIdle(); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return db.bo.state(), nil
}

// PagesTarget is one pages file of CheckpointBOs: the BOs to write into
// it, back to back in order from Offset on.
type PagesTarget struct {
	IDs    []uint64
	FD     int
	Offset uint64
}

// CheckpointBOs writes the contents of BOs into pages files, each
// target's BOs back to back from its offset on, and returns for each
// target the size written and the chunks that tile it, checksummed with
// alg. The targets are written side by side: a worker per CPU takes their
// chunks in turn, so each worker mostly writes a file no other worker is
// writing (writes into one file take turns on its inode lock). Jobs
// writing the BOs must have been drained by Pause. The caller keeps the
// fds.
func (k *Kernel) CheckpointBOs(targets []PagesTarget, alg uapi.Checksum) ([]*uapi.PagesExtent, error) {
	var ids []uint64
	for _, t := range targets {
		if err := regularFile(t.FD); err != nil {
			return nil, err
		}
		ids = append(ids, t.IDs...)
	}
	bos, release, err := k.getBOs(ids)
	defer release()
	if err != nil {
		return nil, err
	}
	extents := make([]*uapi.PagesExtent, len(targets))
	plans := make([][]chunkPlan, len(targets))
	var all []*Backing
	for i, t := range targets {
		mems := make([]*Backing, len(t.IDs))
		for j := range t.IDs {
			mems[j] = bos[j].mem
		}
		all = append(all, mems...)
		var size uint64
		plans[i], size = planChunks(mems, t.Offset)
		if t.Offset+size < t.Offset {
			return nil, errnof(syscall.EINVAL, "pages file %d: offset %d + %d bytes overflows", i, t.Offset, size)
		}
		extents[i] = &uapi.PagesExtent{Size: size, Chunks: make([]*uapi.ContentChunk, len(plans[i]))}
		bos = bos[len(t.IDs):]
	}
	maps, err := dataMapsOf(all)
	if err != nil {
		return nil, err
	}
	// The targets' chunks in turn: chunk 0 of each, then chunk 1 of each...
	type work struct{ target, chunk int }
	var order []work
	for c := 0; ; c++ {
		n := len(order)
		for t := range plans {
			if c < len(plans[t]) {
				order = append(order, work{t, c})
			}
		}
		if len(order) == n {
			break
		}
	}
	err = forEachChunk(context.Background(), len(order), 0, func(_ context.Context, i int, staging []byte) error {
		w := order[i]
		c := &plans[w.target][w.chunk]
		sum, err := writeChunk(targets[w.target].FD, c, staging, alg, maps)
		if err != nil {
			return fmt.Errorf("BO %d contents: %w", targets[w.target].IDs[c.segs[0].boIndex], err)
		}
		extents[w.target].Chunks[w.chunk] = &uapi.ContentChunk{Offset: c.fileOff, Length: c.length, Checksum: sum}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return extents, nil
}

// restoredJob makes a scheduler job of work a checkpoint found queued
// (preempted long-running jobs and what was queued behind them); bos are
// the job's BOs, already referenced for it. The context runs its jobs in
// order, so queueing them in checkpoint order keeps their dependencies.
// Called with k.mu held.
func (c *Context) restoredJob(js *uapi.JobState, bos []*BO, deps []*dma.Fence) (*sched.Job, error) {
	cmds := make([]gpu.Command, len(js.Commands))
	for i, uc := range js.Commands {
		cmds[i] = commandFromUAPI(uc)
	}
	putDeps := func() {
		for _, d := range deps {
			d.Put()
		}
	}
	if len(js.Bos) != len(bos) {
		putDeps()
		return nil, fmt.Errorf("job with %d BOs and %d BO ids", len(js.Bos), len(bos))
	}
	if len(js.Windows) != 0 && len(js.Windows) != len(bos) {
		putDeps()
		return nil, fmt.Errorf("job with %d BOs and %d windows", len(bos), len(js.Windows))
	}
	bufs := make([]JobBuffer, len(bos))
	for i, bo := range bos {
		bufs[i] = JobBuffer{BO: bo, Size: bo.size, Write: js.Bos[i].Write}
		if len(js.Windows) != 0 {
			w := js.Windows[i]
			if w.Size == 0 || w.Offset > bo.size || w.Size > bo.size-w.Offset {
				putDeps()
				return nil, fmt.Errorf("job window [%d, +%d) outside its %d-byte BO %d", w.Offset, w.Size, bo.size, bo.id)
			}
			bufs[i].Offset, bufs[i].Size = w.Offset, w.Size
		}
	}
	gbufs, sizes := gpuBuffers(bufs)
	if err := gpu.Validate(cmds, len(gbufs), sizes); err != nil {
		putDeps()
		return nil, fmt.Errorf("restored job commands: %w", err)
	}
	progress := gpu.Progress{Cmd: int(js.ProgressCmd), Iter: js.ProgressIter, Acc: js.ProgressAcc}
	if err := gpu.CheckProgress(cmds, progress); err != nil {
		putDeps()
		return nil, fmt.Errorf("restored job: %w", err)
	}
	payload := &gpu.JobPayload{Cmds: cmds, Bufs: gbufs, Progress: progress}
	j, err := c.entity.NewJob(deps, payload, js.LongRunning)
	if err != nil {
		return nil, err
	}
	info := &jobInfo{ctx: c, bos: bos, submit: js.Bos, cmds: js.Commands, payload: payload}
	if len(js.Windows) != 0 {
		info.windows = bufs
	}
	c.f.k.jobs[j] = info
	fin := j.Finished()
	for _, b := range bufs {
		b.BO.resv.Add(fin, c.usage(b.Write))
	}
	fin.AddCallback(func(*dma.Fence) { c.completed.Add(1) })
	return j, nil
}
