package kernelsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/sched"
	"drmcr/kernelsim/uapi"
)

// Session is a restore in progress: the scope in which the inodes and BO
// ids recorded at checkpoint time are valid keys.
//
// Restored tasks claim their drm files and dma-bufs concurrently and in any
// order. Whichever claim first needs a BO creates it; the others find it:
// a shared BO by the inode of the dma-buf it was exported as, a private one
// by its id. So it does not matter which task, if any, was the original
// exporter. BO contents stream in from image files as soon as the session
// opens; a task's contexts resume once the contents its files use are in.
type Session struct {
	k     *Kernel
	token string

	// under k.mu
	bos     map[uint64]*sessionBO // by dump-time BO id
	shared  map[uint64]*BO        // by dump-time dma-buf inode
	private map[uint64]*BO        // by dump-time BO id, BOs never exported
	files   map[uint64]*sessionFile
	dmabufs map[uint64]*DmaBuf             // by dump-time inode: restored dma-bufs
	claimed map[int32][]*File              // by claimer pid
	states  map[*File]*uapi.FileCheckpoint // what each claimed file came from
	created []*BO                          // the session's own references
	closed  bool

	// Restored jobs may wait on jobs of files claimed later: a wait on a
	// dump-time fence id is a proxy fence until the job that provides it
	// is restored, which then signals the proxy when it finishes.
	fences  map[uint64]*dma.Fence // dump-time id -> restored finished fence
	proxies map[uint64]*dma.Fence // dump-time id -> proxy awaiting its job
}

// fenceFor returns a referenced fence standing for the dump-time fence id:
// the restored job's finished fence, or a proxy until that job is
// restored. Called with k.mu held.
func (s *Session) fenceFor(id uint64) *dma.Fence {
	if f, ok := s.fences[id]; ok {
		return f.Get()
	}
	p, ok := s.proxies[id]
	if !ok {
		p = dma.NewFence(dma.NewContext(1), 1, "restore-wait")
		s.proxies[id] = p
	}
	return p.Get()
}

// provide records the restored finished fence of the job that had fence
// id at dump time, and hands its outcome to the proxy waiting for it.
// Called with k.mu held.
func (s *Session) provide(id uint64, fin *dma.Fence) {
	s.fences[id] = fin.Get()
	p, ok := s.proxies[id]
	if !ok {
		return
	}
	delete(s.proxies, id)
	relay := func(f *dma.Fence) {
		p.Signal(f.Err())
		p.Put()
	}
	if !fin.AddCallback(relay) {
		relay(fin)
	}
}

type sessionBO struct {
	st      *uapi.BoState
	mem     *Backing
	loading bool
	loaded  chan struct{} // closed when the contents are in (or failed)
	loadErr error
}

type sessionFile struct {
	st      *uapi.FileCheckpoint
	claimed *File
}

// OpenSession starts a restore: it records every BO, file and dma-buf of
// the checkpoint and allocates the BOs' memory, into which LoadBO streams
// contents.
func (k *Kernel) OpenSession(req *uapi.SessionOpenRequest) (*Session, error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("session token: %w", err)
	}
	s := &Session{
		k: k, token: hex.EncodeToString(tok),
		bos: map[uint64]*sessionBO{}, shared: map[uint64]*BO{}, private: map[uint64]*BO{},
		files: map[uint64]*sessionFile{}, dmabufs: map[uint64]*DmaBuf{}, claimed: map[int32][]*File{},
		states: map[*File]*uapi.FileCheckpoint{},
		fences: map[uint64]*dma.Fence{}, proxies: map[uint64]*dma.Fence{},
	}
	type domainKey struct {
		minor  uint32
		domain uapi.Domain
	}
	need := map[domainKey]uint64{}
	for _, st := range req.Bos {
		if _, dup := s.bos[st.BoId]; dup {
			return nil, errnof(syscall.EINVAL, "BO %d listed twice", st.BoId)
		}
		d := k.Device(st.Minor)
		if d == nil {
			return nil, errnof(syscall.ENODEV, "BO %d: no device renderD%d", st.BoId, st.Minor)
		}
		if _, err := d.validateCreate(st.Size, st.Domain, st.Flags, st.Alignment); err != nil {
			return nil, fmt.Errorf("BO %d: %w", st.BoId, err)
		}
		// The BOs' memory is allocated now, so refuse up front what the
		// devices could never hold rather than let the daemon balloon.
		key := domainKey{st.Minor, st.Domain}
		need[key] += st.Size
		if limit := d.domainSize(st.Domain); need[key] > limit {
			return nil, errnof(syscall.ENOMEM, "the checkpoint's %v BOs on renderD%d need %d bytes, the device has %d", st.Domain, st.Minor, need[key], limit)
		}
		s.bos[st.BoId] = &sessionBO{st: st, loaded: make(chan struct{})}
	}
	for _, rf := range req.Files {
		if rf.State == nil {
			return nil, errnof(syscall.EINVAL, "file inode %d without state", rf.Inode)
		}
		if k.Device(rf.State.Minor) == nil {
			return nil, errnof(syscall.ENODEV, "file inode %d: no device renderD%d", rf.Inode, rf.State.Minor)
		}
		for _, h := range rf.State.Handles {
			if s.bos[h.BoId] == nil {
				return nil, errnof(syscall.EINVAL, "file inode %d handle %d: BO %d not in the session", rf.Inode, h.Handle, h.BoId)
			}
		}
		if _, dup := s.files[rf.Inode]; dup {
			return nil, errnof(syscall.EINVAL, "file inode %d listed twice", rf.Inode)
		}
		s.files[rf.Inode] = &sessionFile{st: rf.State}
	}
	for _, rd := range req.Dmabufs {
		if s.bos[rd.BoId] == nil {
			return nil, errnof(syscall.EINVAL, "dma-buf inode %d: BO %d not in the session", rd.Inode, rd.BoId)
		}
	}
	for _, sb := range s.bos {
		sb.mem = newBacking(sb.st.Size)
	}
	k.mu.Lock()
	k.sessions[s.token] = s
	k.mu.Unlock()
	return s, nil
}

// Token identifies the session in claims.
func (s *Session) Token() string { return s.token }

// Session looks a session up by token.
func (k *Kernel) Session(token string) (*Session, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.sessions[token]
	if !ok {
		return nil, errnof(syscall.ENOENT, "no restore session %q", token)
	}
	return s, nil
}

// LoadBO streams a BO's contents from r in the background and checks
// their SHA-256 when they are in. It takes ownership of r.
func (s *Session) LoadBO(id uint64, r io.ReadCloser, sum []byte) error {
	k := s.k
	k.mu.Lock()
	sb, ok := s.bos[id]
	if ok && sb.loading {
		ok = false
	}
	if ok {
		sb.loading = true
	}
	k.mu.Unlock()
	if !ok {
		r.Close()
		return errnof(syscall.EINVAL, "BO %d is not in the session or already loading", id)
	}
	go func() {
		defer close(sb.loaded)
		defer r.Close()
		sb.loadErr = loadBacking(sb.mem, r, sum)
		if sb.loadErr != nil {
			sb.loadErr = fmt.Errorf("BO %d contents: %w", id, sb.loadErr)
		}
	}()
	return nil
}

func loadBacking(mem *Backing, r io.Reader, sum []byte) error {
	h := sha256.New()
	if err := mem.Fill(r, h); err != nil {
		return err
	}
	if len(sum) > 0 && !bytes.Equal(h.Sum(nil), sum) {
		return fmt.Errorf("SHA-256 mismatch")
	}
	return nil
}

// boFor returns the restored BO of a dump-time BO id, creating it if this
// is the first claim that needs it. The caller gets a reference. Called
// with k.mu held.
func (s *Session) boFor(id uint64) (*BO, error) {
	sb, ok := s.bos[id]
	if !ok {
		return nil, errnof(syscall.EINVAL, "BO %d not in the session", id)
	}
	table, key := s.private, id
	if sb.st.DmabufInode != 0 {
		table, key = s.shared, sb.st.DmabufInode
	}
	if bo, ok := table[key]; ok {
		bo.get()
		return bo, nil
	}
	d := s.k.Device(sb.st.Minor)
	bo, err := d.newBO(sb.st.Size, sb.st.Domain, sb.st.Flags, sb.st.Alignment, sb.mem)
	if err != nil {
		return nil, fmt.Errorf("BO %d: %w", id, err)
	}
	table[key] = bo
	s.created = append(s.created, bo) // the session's reference
	bo.get()
	return bo, nil
}

// dmabufFor returns the restored dma-buf of a dump-time inode. The session
// holds a PRIME-table-like reference to it until it closes, so every claim
// gets the same file. Called with k.mu held.
func (s *Session) dmabufFor(ino uint64) (*DmaBuf, error) {
	if db, ok := s.dmabufs[ino]; ok {
		return db, nil
	}
	var boID uint64
	for id, sb := range s.bos {
		if sb.st.DmabufInode == ino {
			boID = id
		}
	}
	if boID == 0 {
		return nil, errnof(syscall.EINVAL, "no BO was exported as dma-buf inode %d", ino)
	}
	bo, err := s.boFor(boID)
	if err != nil {
		return nil, err
	}
	defer bo.put()
	db := bo.dmabuf
	if db == nil {
		if db, err = s.k.newDmaBuf(bo, nil); err != nil {
			return nil, err
		}
	}
	db.primeRefs++
	s.dmabufs[ino] = db
	return db, nil
}

// ClaimDmaBuf returns the client file descriptor of a restored dma-buf; it
// stays owned by the kernel (send it, do not close it).
func (s *Session) ClaimDmaBuf(ino uint64) (int, *DmaBuf, error) {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.closed {
		return -1, nil, errnof(syscall.ESTALE, "restore session closed")
	}
	db, err := s.dmabufFor(ino)
	if err != nil {
		return -1, nil, err
	}
	return db.clientFD, db, nil
}

// ClaimFile recreates the drm file checkpointed with client inode ino on
// device d, for the task with credentials owner: the same handles, PRIME
// entries, mappings, contexts with their preempted work, syncobjs and
// timelines. The file starts paused; ResumeTask lets it run.
func (s *Session) ClaimFile(d *Device, ino uint64, owner Cred) (*File, error) {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.closed {
		return nil, errnof(syscall.ESTALE, "restore session closed")
	}
	sf, ok := s.files[ino]
	if !ok {
		return nil, errnof(syscall.ENOENT, "no file with inode %d in the session", ino)
	}
	if sf.claimed != nil {
		return nil, errnof(syscall.EBUSY, "file inode %d already claimed", ino)
	}
	if sf.st.Minor != d.cfg.Minor {
		return nil, errnof(syscall.EXDEV, "file inode %d was on renderD%d, claimed on renderD%d", ino, sf.st.Minor, d.cfg.Minor)
	}
	f := d.openLocked(owner)
	f.paused = true
	if err := s.restoreFile(f, sf.st); err != nil {
		k.mu.Unlock()
		f.Close()
		k.mu.Lock()
		return nil, fmt.Errorf("restore file inode %d: %w", ino, err)
	}
	sf.claimed = f
	s.states[f] = sf.st
	s.claimed[owner.PID] = append(s.claimed[owner.PID], f)
	return f, nil
}

// restoreFile fills a new file from its checkpoint. Called with k.mu held.
func (s *Session) restoreFile(f *File, st *uapi.FileCheckpoint) error {
	for _, h := range st.Handles {
		bo, err := s.boFor(h.BoId)
		if err != nil {
			return err
		}
		if err := f.handles.allocAt(h.Handle, bo); err != nil {
			bo.put()
			return fmt.Errorf("handle %d: %w", h.Handle, err)
		}
		if h.Prime && bo.dmabuf == nil && s.bos[h.BoId].st.DmabufInode == 0 {
			return fmt.Errorf("handle %d: in the PRIME table but BO %d was never exported", h.Handle, h.BoId)
		}
		if h.Prime {
			db, err := s.dmabufFor(s.bos[h.BoId].st.DmabufInode)
			if err != nil {
				return fmt.Errorf("handle %d: %w", h.Handle, err)
			}
			f.addPrime(h.Handle, db, -1)
		}
	}
	for _, m := range st.Mappings {
		bo, ok := f.handles.get(m.Handle)
		if !ok {
			return fmt.Errorf("mapping at %#x: no handle %d", m.Va, m.Handle)
		}
		f.vm = append(f.vm, &Mapping{Handle: m.Handle, BOOffset: m.BoOffset, VA: m.Va, Size: m.Size, Flags: m.Flags, bo: bo})
	}
	priv, err := f.dev.decodeDriverPrivate(st.DriverPrivate)
	if err != nil {
		return err
	}
	return s.restoreDriver(f, priv)
}

// restoreDriver recreates contexts, preempted jobs, timelines and
// syncobjs. Called with k.mu held.
func (s *Session) restoreDriver(f *File, priv *uapi.DriverPrivate) error {
	jobs := map[uint64]*sched.Job{} // dump-time fence id -> restored job
	for _, cs := range priv.Contexts {
		c := &Context{f: f, prio: cs.Priority, paused: true}
		c.cond = sync.NewCond(&c.mu)
		if err := f.contexts.allocAt(cs.CtxId, c); err != nil {
			return fmt.Errorf("context %d: %w", cs.CtxId, err)
		}
		c.id = cs.CtxId
		c.setup()
		c.wasGuilty.Store(cs.Guilty)
		c.submitted.Store(cs.Submitted)
		c.completed.Store(cs.Completed)
		for _, js := range cs.Jobs {
			bos := make([]*BO, 0, len(js.BoIds))
			for _, id := range js.BoIds {
				bo, err := s.boFor(id)
				if err != nil {
					for _, b := range bos {
						b.put()
					}
					return fmt.Errorf("context %d job: %w", cs.CtxId, err)
				}
				bos = append(bos, bo)
			}
			deps := make([]*dma.Fence, 0, len(js.DepFenceIds))
			for _, id := range js.DepFenceIds {
				deps = append(deps, s.fenceFor(id))
			}
			j, err := c.restoredJob(js, bos, deps)
			if err != nil {
				for _, b := range bos {
					b.put()
				}
				return fmt.Errorf("context %d job: %w", cs.CtxId, err)
			}
			c.restored = append(c.restored, j)
			jobs[js.FenceId] = j
			s.provide(js.FenceId, j.Finished())
		}
	}
	timelines := map[uint32]*dma.SwSyncTimeline{}
	for _, ts := range priv.SwSyncs {
		t := dma.NewSwSyncTimeline("sw_sync")
		if err := f.swsync.allocAt(ts.Timeline, t); err != nil {
			t.Release()
			return fmt.Errorf("sw_sync timeline %d: %w", ts.Timeline, err)
		}
		t.Inc(ts.Value)
		timelines[ts.Timeline] = t
	}
	for _, ss := range priv.Syncobjs {
		so := dma.NewSyncobj()
		if err := f.syncobjs.allocAt(ss.Handle, so); err != nil {
			so.Release()
			return fmt.Errorf("syncobj %d: %w", ss.Handle, err)
		}
		switch ss.Kind {
		case uapi.SyncobjState_EMPTY:
		case uapi.SyncobjState_SIGNALED:
			fence := dma.NewFence(dma.NewContext(1), 1, "restored")
			fence.Signal(dma.ErrFromErrno(ss.Error))
			so.Replace(fence)
			fence.Put()
		case uapi.SyncobjState_JOB:
			j, ok := jobs[ss.FenceId]
			if !ok {
				return fmt.Errorf("syncobj %d: no preempted job with fence %d", ss.Handle, ss.FenceId)
			}
			so.Replace(j.Finished())
		case uapi.SyncobjState_SW_SYNC:
			t, ok := timelines[ss.Timeline]
			if !ok {
				return fmt.Errorf("syncobj %d: no sw_sync timeline %d", ss.Handle, ss.Timeline)
			}
			fence := t.CreateFence(ss.Point)
			so.Replace(fence)
			fence.Put()
		default:
			return fmt.Errorf("syncobj %d: unknown state %v", ss.Handle, ss.Kind)
		}
	}
	return nil
}

// ResumeTask waits until the contents of every BO the task's claimed files
// use are in, then lets those files run. A pid that claimed no file gets
// ESRCH.
func (s *Session) ResumeTask(pid int32, timeout time.Duration) error {
	k := s.k
	k.mu.Lock()
	files := append([]*File(nil), s.claimed[pid]...)
	if len(files) == 0 {
		k.mu.Unlock()
		return errnof(syscall.ESRCH, "pid %d claimed no drm file of this session", pid)
	}
	var waits []*sessionBO
	for _, f := range files {
		sf := s.fileState(f)
		for _, h := range sf.Handles {
			waits = append(waits, s.bos[h.BoId])
		}
		for _, b := range sf.Bos {
			if sb := s.bos[b.BoId]; sb != nil {
				waits = append(waits, sb)
			}
		}
	}
	for _, sb := range waits {
		if !sb.loading { // read under k.mu: LoadBO may run concurrently
			k.mu.Unlock()
			return fmt.Errorf("pid %d: contents of BO %d were never loaded", pid, sb.st.BoId)
		}
	}
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, sb := range waits {
		if err := sb.wait(ctx); err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
	}
	ids := make([]uint64, len(files))
	for i, f := range files {
		ids[i] = f.id
	}
	k.Resume(ids)
	return nil
}

func (sb *sessionBO) wait(ctx context.Context) error {
	select {
	case <-sb.loaded:
		return sb.loadErr
	case <-ctx.Done():
		return fmt.Errorf("contents of BO %d not loaded in time: %w", sb.st.BoId, ctx.Err())
	}
}

// fileState returns the checkpoint a claimed file came from. Called with
// k.mu held.
func (s *Session) fileState(f *File) *uapi.FileCheckpoint {
	if st, ok := s.states[f]; ok {
		return st
	}
	return &uapi.FileCheckpoint{}
}

// Close ends the session. abort destroys everything the session created:
// claimed files are closed (their connections shut down) and the BOs and
// dma-bufs go with their last references. Otherwise claimed files that
// were not resumed yet are resumed, and what nobody claimed is dropped.
func (s *Session) Close(abort bool) error {
	k := s.k
	k.mu.Lock()
	if s.closed {
		k.mu.Unlock()
		return nil
	}
	s.closed = true
	delete(k.sessions, s.token)
	var files []*File
	for _, fs := range s.claimed {
		files = append(files, fs...)
	}
	for _, db := range s.dmabufs {
		db.primeRefs--
		if db.primeRefs == 0 && db.clientFD >= 0 {
			syscall.Close(db.clientFD)
			db.clientFD = -1
		}
	}
	for _, bo := range s.created {
		bo.put()
	}
	s.created = nil
	for _, f := range s.fences {
		f.Put()
	}
	// Waits on jobs nobody restored can never be satisfied.
	for _, p := range s.proxies {
		p.Signal(dma.ErrCanceled)
		p.Put()
	}
	s.fences, s.proxies = nil, nil
	var ios []IO
	for _, f := range files {
		if f.io != nil {
			ios = append(ios, f.io)
		}
	}
	k.mu.Unlock()

	if abort {
		for _, f := range files {
			f.Close()
		}
		for _, fio := range ios {
			if kill, ok := fio.(interface{ Kill() }); ok {
				kill.Kill()
			}
		}
	} else {
		ids := make([]uint64, len(files))
		for i, f := range files {
			ids[i] = f.id
		}
		k.Resume(ids)
	}
	return nil
}
