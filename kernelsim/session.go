package kernelsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/bomem"
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

	// Contents: set up by OpenSession and read-only after it, except what
	// loadMu guards. ctx ends when the session closes, which stops the
	// loaders.
	pages    []*sessionPages
	checksum uapi.Checksum // of every chunk
	ctx      context.Context
	cancel   context.CancelFunc
	loadMu   sync.Mutex
	verified atomic.Bool // every BO's contents are in and matched

	// Set up by OpenSession, read-only after: every BO by dump-time id,
	// and the BO exported as each dump-time dma-buf inode.
	bos       map[uint64]*sessionBO
	dmabufBOs map[uint64]uint64

	// under k.mu
	shared   map[uint64]*BO // by dump-time dma-buf inode
	private  map[uint64]*BO // by dump-time BO id, BOs never exported
	files    map[uint64]*sessionFile
	channels map[uint64]*sessionChannel // by dump-time inode
	dmabufs  map[uint64]*DmaBuf         // by dump-time inode: restored dma-bufs
	claimed  map[int32][]*File          // by claimer pid (of the file or one of its channels)
	resumed  map[*File]bool             // files ResumeTask let run
	created  []*BO                      // the session's own references
	closed   bool

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

// sessionBO is a BO of the checkpoint: its memory, filled by the loaders
// before any claim may create the BO on it.
type sessionBO struct {
	st      *uapi.BoState
	mem     *Backing
	pages   *sessionPages
	off     uint64 // where its contents start in the pages file
	adopted bool   // a BO was created on mem, which it now owns (k.mu)
	// Mapped BOs: criu restores the contents as a mapping's memory, and
	// AdoptMemory checks it against chunks (relative to the BO).
	mapped bool
	chunks []*uapi.ContentChunk

	// under Session.loadMu
	pending  int           // chunks still to load and verify
	verified bool          // every chunk is in and matched
	adopting bool          // AdoptMemory was called
	loaded   chan struct{} // closed once verified, or failed
	loadErr  error
}

// sessionPages is a pages file of the checkpoint and its chunks.
type sessionPages struct {
	name    string
	chunks  []chunkPlan
	sums    [][]byte
	bos     [][]*sessionBO // the BOs each chunk holds bytes of
	started bool           // under Session.loadMu
}

type sessionFile struct {
	st      *uapi.FileCheckpoint
	created *File // restored by the first claim of it or of a channel (k.mu)
	claimed bool  // its own socket was claimed (k.mu)
}

// sessionChannel is a reply channel of a file of the checkpoint.
type sessionChannel struct {
	st      *uapi.RestoreChannel
	claimed bool // (k.mu)
}

// OpenSession starts a restore: it checks every field of the request
// (CheckRestore) against the kernel's devices, refusing it whole, then
// records every BO, file and dma-buf of the checkpoint and allocates the
// BOs' memory, into which LoadPages loads contents.
func (k *Kernel) OpenSession(req *uapi.SessionOpenRequest) (*Session, error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("session token: %w", err)
	}
	s := &Session{
		k: k, token: hex.EncodeToString(tok),
		bos: map[uint64]*sessionBO{}, shared: map[uint64]*BO{}, private: map[uint64]*BO{}, dmabufBOs: map[uint64]uint64{},
		files: map[uint64]*sessionFile{}, channels: map[uint64]*sessionChannel{}, dmabufs: map[uint64]*DmaBuf{},
		claimed: map[int32][]*File{}, resumed: map[*File]bool{},
		fences: map[uint64]*dma.Fence{}, proxies: map[uint64]*dma.Fence{},
	}
	// Nothing is created before every field of the request checked out.
	if probs := CheckRestore(req, k.DeviceInfos()); len(probs) > 0 {
		return nil, restoreRefusal(probs)
	}
	s.checksum, _ = uapi.ParseChecksum(req.Checksum) // CheckRestore checked it
	for _, st := range req.Bos {
		s.bos[st.BoId] = &sessionBO{st: st, loaded: make(chan struct{})}
		if st.DmabufInode != 0 {
			s.dmabufBOs[st.DmabufInode] = st.BoId
		}
	}
	for _, rf := range req.Files {
		s.files[rf.Inode] = &sessionFile{st: rf.State}
	}
	for _, rc := range req.Channels {
		s.channels[rc.Inode] = &sessionChannel{st: rc}
	}
	if err := s.setupContents(req); err != nil {
		return nil, err
	}
	for _, sb := range s.bos {
		if sb.mapped {
			sb.mem = newPendingBacking(sb.st.Size) // criu restores it
			continue
		}
		mem, err := newBacking(sb.st.Size)
		if err != nil {
			s.releaseMemory()
			return nil, fmt.Errorf("BO %d: %w", sb.st.BoId, err)
		}
		sb.mem = mem
	}
	s.planLoads()
	s.ctx, s.cancel = context.WithCancel(context.Background())
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

// setupContents records where each BO's contents are and which chunks
// hold them. A structurally bad request (a BO without contents, a chunk
// out of order or too large) is refused; a BO whose bytes a chunk with a
// bad checksum holds, or no chunk covers, fails now and makes every claim
// that needs it fail, naming it.
func (s *Session) setupContents(req *uapi.SessionOpenRequest) error {
	for i, pf := range req.PagesFiles {
		sp := &sessionPages{name: pf.Name}
		if sp.name == "" {
			sp.name = fmt.Sprintf("pages file %d", i)
		}
		var end uint64
		for j, c := range pf.Chunks {
			switch {
			case c.Length == 0 || c.Length > contentChunk:
				return errnof(syscall.EINVAL, "%s: chunk %d has %d bytes (1 to %d)", sp.name, j, c.Length, contentChunk)
			case c.Offset+c.Length < c.Offset:
				return errnof(syscall.EINVAL, "%s: chunk %d at offset %d overflows", sp.name, j, c.Offset)
			case j > 0 && c.Offset < end:
				return errnof(syscall.EINVAL, "%s: chunk %d at offset %d overlaps or precedes the one before (ending at %d)", sp.name, j, c.Offset, end)
			}
			end = c.Offset + c.Length
			sp.chunks = append(sp.chunks, chunkPlan{fileOff: c.Offset, length: c.Length})
			sp.sums = append(sp.sums, c.Checksum)
		}
		sp.bos = make([][]*sessionBO, len(sp.chunks))
		s.pages = append(s.pages, sp)
	}
	for _, bc := range req.Contents {
		sb, ok := s.bos[bc.BoId]
		switch {
		case !ok:
			return errnof(syscall.EINVAL, "contents of BO %d, which is not in the session", bc.BoId)
		case sb.pages != nil || sb.mapped:
			return errnof(syscall.EINVAL, "contents of BO %d listed twice", bc.BoId)
		case bc.Mapped:
			// CheckRestore checked its chunks.
			sb.mapped, sb.chunks, sb.pending = true, bc.Chunks, len(bc.Chunks)
			continue
		case int(bc.PagesFile) >= len(s.pages):
			return errnof(syscall.EINVAL, "BO %d: pages file %d of %d", bc.BoId, bc.PagesFile, len(s.pages))
		case bc.Offset+sb.st.Size < bc.Offset:
			return errnof(syscall.EINVAL, "BO %d: offset %d overflows", bc.BoId, bc.Offset)
		}
		sb.pages, sb.off = s.pages[bc.PagesFile], bc.Offset
	}
	for id, sb := range s.bos {
		if sb.pages == nil && !sb.mapped {
			return errnof(syscall.EINVAL, "BO %d: no contents listed", id)
		}
	}
	return nil
}

// planLoads splits each chunk into the pieces of BO memory it holds and
// counts, for each BO, the chunks it waits for.
func (s *Session) planLoads() {
	for _, sb := range s.bos {
		if sb.mapped {
			continue // AdoptMemory checks it
		}
		sp := sb.pages
		cs := sp.chunks
		start, end := sb.off, sb.off+sb.st.Size
		i := sort.Search(len(cs), func(i int) bool { return cs[i].fileOff+cs[i].length > start })
		pos := start
		for ; pos < end && i < len(cs) && cs[i].fileOff <= pos; i++ {
			c := &cs[i]
			cend := min(end, c.fileOff+c.length)
			c.segs = append(c.segs, segment{mem: sb.mem, off: pos - start, n: cend - pos, at: pos - c.fileOff})
			sp.bos[i] = append(sp.bos[i], sb)
			sb.pending++
			if len(sp.sums[i]) != s.checksum.Size() {
				s.fail(sb, fmt.Errorf("chunk [%d, %d) has no valid checksum (%d bytes recorded)", c.fileOff, c.fileOff+c.length, len(sp.sums[i])))
			}
			pos = cend
		}
		if pos < end {
			next := end
			if i < len(cs) {
				next = min(end, cs[i].fileOff)
			}
			s.fail(sb, fmt.Errorf("its bytes [%d, %d) are covered by no checksummed chunk", pos-start, next-start))
		}
		if sb.pending == 0 && sb.loadErr == nil {
			// No chunk: a BO of size 0, which no device creates.
			sb.verified = true
			close(sb.loaded)
		}
	}
}

// describe names a BO and where its contents are, for messages.
func (sb *sessionBO) describe() string {
	if sb.mapped {
		return fmt.Sprintf("BO %d (%d bytes, the memory of a restored mapping, in criu's images)", sb.st.BoId, sb.st.Size)
	}
	return fmt.Sprintf("BO %d (%d bytes at offset %d of %s)", sb.st.BoId, sb.st.Size, sb.off, sb.pages.name)
}

// fail records why a BO's contents cannot be used, unless they are in
// already; the first reason wins.
func (s *Session) fail(sb *sessionBO, err error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	s.failLocked(sb, err)
}

func (s *Session) failLocked(sb *sessionBO, err error) {
	if sb.loadErr != nil || sb.readyLocked() {
		return
	}
	sb.loadErr = fmt.Errorf("contents of %s: %w", sb.describe(), err)
	select {
	case <-sb.loaded:
	default:
		close(sb.loaded)
	}
}

// chunkDone accounts for a chunk loaded (err nil) or failed.
func (s *Session) chunkDone(sp *sessionPages, i int, err error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	c := &sp.chunks[i]
	for _, sb := range sp.bos[i] {
		if err != nil {
			s.failLocked(sb, fmt.Errorf("chunk [%d, %d): %w", c.fileOff, c.fileOff+c.length, err))
			continue
		}
		sb.pending--
		if sb.pending == 0 && sb.loadErr == nil {
			sb.verified = true
			close(sb.loaded)
		}
	}
}

// LoadPages starts loading, in the background, every chunk of pages file
// i from fd, which it takes over. A BO is ready for claims once all its
// chunks are in and match their checksums.
func (s *Session) LoadPages(i uint32, fd int) error {
	if err := regularFile(fd); err != nil {
		unix.Close(fd)
		return err
	}
	s.loadMu.Lock()
	if int(i) >= len(s.pages) || s.pages[i].started {
		s.loadMu.Unlock()
		unix.Close(fd)
		return errnof(syscall.EINVAL, "pages file %d is not in the session or already loading", i)
	}
	sp := s.pages[i]
	sp.started = true
	s.loadMu.Unlock()
	go func() {
		defer unix.Close(fd)
		// The pages files load side by side, their workers sharing the
		// CPUs.
		workers := max(1, runtime.GOMAXPROCS(0)/len(s.pages))
		forEachChunk(s.ctx, len(sp.chunks), workers, func(ctx context.Context, j int, staging []byte) error {
			if len(sp.bos[j]) == 0 {
				return nil // holds no BO's bytes
			}
			err := loadChunk(fd, &sp.chunks[j], sp.sums[j], staging, s.checksum)
			s.chunkDone(sp, j, err)
			return nil
		})
		// Chunks left when the session closed never load.
		for j := range sp.chunks {
			for _, sb := range sp.bos[j] {
				s.fail(sb, errnof(syscall.ESTALE, "not loaded: the restore session closed"))
			}
		}
	}()
	return nil
}

// checkContents fails, without waiting, for a BO of ids whose contents
// are known to be unusable: found damaged already, or in a pages file
// nobody asked to load (the plugin hands every pages file over before
// criu forks the tasks that claim).
func (s *Session) checkContents(ids []uint64) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	for _, id := range ids {
		sb, ok := s.bos[id]
		switch {
		case !ok:
			return errnof(syscall.EINVAL, "BO %d not in the session", id)
		case sb.loadErr != nil:
			return errnof(syscall.EIO, "%v", sb.loadErr)
		case sb.mapped:
		case !sb.pages.started && !sb.verified:
			return errnof(syscall.EIO, "contents of %s were never loaded: the restore did not pass that pages file", sb.describe())
		}
	}
	return nil
}

// waitContents waits until the contents of every BO of the session are
// loaded and verified, and returns the first failure otherwise, naming
// the BO and its pages file (in BO id order, so the same damage always
// gives the same message). ctx bounds the wait.
func (s *Session) waitContents(ctx context.Context) error {
	if s.verified.Load() {
		return nil
	}
	ids := make([]uint64, 0, len(s.bos))
	for id := range s.bos {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if err := s.checkContents(ids); err != nil {
		return err
	}
	for _, id := range ids {
		sb := s.bos[id]
		select {
		case <-sb.loaded:
		case <-s.ctx.Done():
			return errnof(syscall.ESTALE, "restore session closed")
		case <-ctx.Done():
			return errnof(syscall.ETIMEDOUT, "contents of %s still loading: %v", sb.describe(), ctx.Err())
		}
	}
	// Report the first failure by id, whichever chunk failed first.
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	for _, id := range ids {
		if err := s.bos[id].loadErr; err != nil {
			return errnof(syscall.EIO, "%v", err)
		}
	}
	s.verified.Store(true)
	return nil
}

// Verify waits until the contents of every BO of the session are loaded
// and match their checksums, or timeout passes; the error names the first
// BO that does not, and its pages file.
func (s *Session) Verify(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.waitContents(ctx)
}

// allVerified reports whether every BO's contents are in and verified.
func (s *Session) allVerified() bool {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	for _, sb := range s.bos {
		if !sb.verified {
			return false
		}
	}
	return true
}

func (sb *sessionBO) readyLocked() bool { return sb.verified }

// releaseMemory gives back the memory of BOs no claim created.
func (s *Session) releaseMemory() {
	for _, sb := range s.bos {
		if !sb.adopted && sb.mem != nil {
			sb.mem.release()
		}
	}
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
	// The BO is created on memory its contents may still be loading
	// into: its file stays frozen and its contexts paused until every
	// byte of the checkpoint is verified (ResumeTask).
	if err := s.checkContents([]uint64{id}); err != nil {
		return nil, err
	}
	d := s.k.Device(sb.st.Minor)
	bo, err := d.newBO(sb.st.Size, sb.st.Domain, sb.st.Flags, sb.st.Alignment, sb.mem)
	if err != nil {
		return nil, fmt.Errorf("BO %d: %w", id, err)
	}
	sb.adopted = true
	table[key] = bo
	s.created = append(s.created, bo) // the session's reference
	bo.get()
	return bo, nil
}

// dmabufFor returns the restored dma-buf of a dump-time inode. The session
// holds a PRIME-table-like reference to it until it closes, so every claim
// gets the same file. Called with k.mu held.
func (s *Session) dmabufFor(ino uint64, where socketMaker) (*DmaBuf, error) {
	if db, ok := s.dmabufs[ino]; ok {
		return db, nil
	}
	boID, ok := s.dmabufBOs[ino]
	if !ok {
		return nil, errnof(syscall.EINVAL, "no BO was exported as dma-buf inode %d", ino)
	}
	bo, err := s.boFor(boID)
	if err != nil {
		return nil, err
	}
	defer bo.put()
	db := bo.dmabuf
	if db == nil {
		if db, err = s.k.newDmaBuf(bo, where); err != nil {
			return nil, err
		}
	}
	db.primeRefs++
	s.dmabufs[ino] = db
	return db, nil
}

// ClaimDmaBuf returns a new descriptor of the client file of a restored
// dma-buf, the caller's to send and close.
func (s *Session) ClaimDmaBuf(ino uint64, where socketMaker) (int, *DmaBuf, error) {
	if id, ok := s.dmabufBOs[ino]; ok {
		if err := s.checkContents([]uint64{id}); err != nil {
			return -1, nil, fmt.Errorf("claim dma-buf inode %d: %w", ino, err)
		}
	}
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.closed {
		return -1, nil, errnof(syscall.ESTALE, "restore session closed")
	}
	db, err := s.dmabufFor(ino, where)
	if err != nil {
		return -1, nil, err
	}
	return dupClientFD(db)
}

// ClaimFile recreates the drm file checkpointed with client inode ino on
// device d, for the task with credentials owner, and returns it with the
// traffic that was in flight on its socket: the same handles, PRIME
// entries, mappings, contexts with their preempted work, syncobjs and
// timelines. The file starts paused; ResumeTask lets it run. A reply
// channel of the file claimed first has created it already.
//
// The claim does not wait for the BOs' contents, which load in the
// background meanwhile, so that they load while criu restores the tasks'
// memory (after their files); the file stays frozen until ResumeTask has
// seen every byte verified. Contents already known to be unusable fail
// the claim at once, naming the BO and its pages file.
func (s *Session) ClaimFile(d *Device, ino uint64, owner Cred, where socketMaker) (*File, *uapi.PendingIO, error) {
	// s.files is set up by OpenSession and read-only after.
	sf, ok := s.files[ino]
	if !ok {
		return nil, nil, errnof(syscall.ENOENT, "no file with inode %d in the session", ino)
	}
	if err := s.checkContents(fileBOs(sf.st)); err != nil {
		return nil, nil, fmt.Errorf("claim drm file inode %d: %w", ino, err)
	}
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if sf.claimed {
		return nil, nil, errnof(syscall.EBUSY, "file inode %d already claimed", ino)
	}
	f, err := s.fileFor(ino, sf, d, owner, where)
	if err != nil {
		return nil, nil, err
	}
	sf.claimed = true
	return f, sf.st.GetIo(), nil
}

// ClaimChannel recreates reply channel ino of a checkpointed drm file: it
// returns the file, restored by whichever claim of it or of its channels
// comes first, and the traffic that was in flight on the channel.
func (s *Session) ClaimChannel(d *Device, ino uint64, owner Cred, where socketMaker) (*File, *uapi.PendingIO, error) {
	// s.channels and s.files are read-only after OpenSession.
	sc, ok := s.channels[ino]
	if !ok {
		return nil, nil, errnof(syscall.ENOENT, "no reply channel with inode %d in the session", ino)
	}
	sf := s.files[sc.st.FileInode]
	ids := fileBOs(sf.st)
	for _, r := range sc.st.GetIo().GetUnreadReplies() {
		if r.Bo != nil {
			ids = append(ids, r.Bo.BoId)
		}
	}
	if err := s.checkContents(ids); err != nil {
		return nil, nil, fmt.Errorf("claim reply channel inode %d: %w", ino, err)
	}
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if sc.claimed {
		return nil, nil, errnof(syscall.EBUSY, "reply channel inode %d already claimed", ino)
	}
	f, err := s.fileFor(sc.st.FileInode, sf, d, owner, where)
	if err != nil {
		return nil, nil, fmt.Errorf("reply channel inode %d: %w", ino, err)
	}
	sc.claimed = true
	return f, sc.st.GetIo(), nil
}

// fileFor returns the restored file of dump-time inode ino, restoring it
// if this is the first claim that needs it; the claimer owner is recorded
// as one of the file's tasks either way. Called with k.mu held.
func (s *Session) fileFor(ino uint64, sf *sessionFile, d *Device, owner Cred, where socketMaker) (*File, error) {
	k := s.k
	if s.closed {
		return nil, errnof(syscall.ESTALE, "restore session closed")
	}
	if sf.st.Minor != d.cfg.Minor {
		return nil, errnof(syscall.EXDEV, "file inode %d was on renderD%d, claimed on renderD%d", ino, sf.st.Minor, d.cfg.Minor)
	}
	f := sf.created
	if f == nil {
		f = d.openLocked(owner)
		f.paused = true
		if err := s.restoreFile(f, sf.st, where); err != nil {
			k.mu.Unlock()
			f.Close()
			k.mu.Lock()
			return nil, fmt.Errorf("restore file inode %d: %w", ino, err)
		}
		sf.created = f
	}
	if !slices.Contains(s.claimed[owner.PID], f) {
		s.claimed[owner.PID] = append(s.claimed[owner.PID], f)
	}
	return f, nil
}

// fileBOs lists the BOs a file's checkpoint refers to: its handles', the
// BOs of its queued jobs (which the kernel lists in Bos) and those the
// replies unread on its socket carry.
func fileBOs(st *uapi.FileCheckpoint) []uint64 {
	ids := make([]uint64, 0, len(st.Handles)+len(st.Bos)+1)
	for _, h := range st.Handles {
		ids = append(ids, h.BoId)
	}
	for _, b := range st.Bos {
		ids = append(ids, b.BoId)
	}
	if b := st.GetIo().GetUnreadReplyBo(); b != nil {
		ids = append(ids, b.BoId)
	}
	for _, r := range st.GetIo().GetUnreadReplies() {
		if r.Bo != nil {
			ids = append(ids, r.Bo.BoId)
		}
	}
	return ids
}

// restoreFile fills a new file from its checkpoint. Called with k.mu held.
func (s *Session) restoreFile(f *File, st *uapi.FileCheckpoint, where socketMaker) error {
	for _, h := range st.Handles {
		bo, err := s.boFor(h.BoId)
		if err != nil {
			return err
		}
		if h.Attachment {
			// A new import attachment of the exporter's dma-buf, the BO
			// itself made on its own device whatever claim came first.
			db, err := s.dmabufFor(s.bos[h.BoId].st.DmabufInode, where)
			if err != nil {
				bo.put()
				return fmt.Errorf("handle %d: %w", h.Handle, err)
			}
			att := f.dev.importAttach(db)
			bo.put()
			bo = att
		}
		if err := f.handles.allocAt(h.Handle, bo); err != nil {
			bo.put()
			return fmt.Errorf("handle %d: %w", h.Handle, err)
		}
		if h.Prime && bo.dmabuf == nil && s.bos[h.BoId].st.DmabufInode == 0 {
			return fmt.Errorf("handle %d: in the PRIME table but BO %d was never exported", h.Handle, h.BoId)
		}
		if h.Prime {
			db, err := s.dmabufFor(s.bos[h.BoId].st.DmabufInode, where)
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
	return f.priv.Restore(&DriverRestore{s: s, f: f, jobs: map[uint64]*sched.Job{}}, st.DriverPrivate)
}

// ResumeTask lets the files a task claimed run, once the contents of
// every BO of the checkpoint, not only the task's, are loaded and match
// the checksums recorded at dump: no GPU context of a restore resumes
// unless all of it is intact. It fails, naming the first damaged BO and
// its pages file, or when timeout passes first; the files then stay
// frozen (a restore that fails is aborted, which destroys them). A pid
// that claimed no file gets ESRCH, once the contents are verified too:
// criu asks for the root task of the tree first, whatever it holds, and
// the plugin fails the restore there (see drmcore.ResumeDevicesLate).
func (s *Session) ResumeTask(pid int32, timeout time.Duration) error {
	k := s.k
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.waitContents(ctx); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	k.mu.Lock()
	if len(s.claimed[pid]) == 0 {
		k.mu.Unlock()
		return errnof(syscall.ESRCH, "pid %d claimed no drm file of this session", pid)
	}
	files := append([]*File(nil), s.claimed[pid]...)
	ids := make([]uint64, len(files))
	for i, f := range files {
		ids[i] = f.id
		s.resumed[f] = true
	}
	k.mu.Unlock()
	k.Resume(ids)
	return nil
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
	// Whether all contents are in decides, for a successful close, if
	// files no task resumed may run (never on damaged contents).
	verified := !abort && s.allVerified()
	resumed := maps.Clone(s.resumed)
	s.cancel()
	var files []*File
	for _, fs := range s.claimed {
		for _, f := range fs {
			if !slices.Contains(files, f) {
				files = append(files, f)
			}
		}
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
	// The memory of BOs nobody claimed goes back now; loaders still at it
	// find it gone and stop.
	s.releaseMemory()
	for _, f := range s.fences {
		f.Put()
	}
	// Waits on jobs nobody restored can never be satisfied.
	for _, p := range s.proxies {
		p.Signal(dma.ErrCanceled)
		p.Put()
	}
	s.fences, s.proxies = nil, nil
	ios := map[*File][]IO{}
	for _, f := range files {
		for _, e := range f.ios {
			ios[f] = append(ios[f], e.io)
		}
	}
	k.mu.Unlock()

	// destroy closes a claimed file and disconnects its tasks.
	destroy := func(f *File) {
		f.Close()
		for _, io := range ios[f] {
			io.Kill()
		}
	}
	if abort {
		for _, f := range files {
			destroy(f)
		}
	} else {
		// Files no ResumeTask let run yet run now, if all contents are
		// in; files on damaged contents never run.
		var ids []uint64
		for _, f := range files {
			if !resumed[f] {
				ids = append(ids, f.id)
			}
		}
		if len(ids) > 0 && !verified {
			for _, f := range files {
				if !resumed[f] {
					destroy(f)
				}
			}
			return errnof(syscall.EIO, "restore session closed with BO contents unverified: %d drm file(s) destroyed", len(ids))
		}
		k.Resume(ids)
	}
	return nil
}

// AdoptMemory makes fd, the memfd criu restored as the memory of a mapped
// BO (one the restored tasks map), that BO's memory once its bytes match
// the checksums recorded at dump, creating the BO if no claim did (a BO
// only mappings referred to at dump). holders are the restored tasks
// that map it: the BO lives on while any of them does. fd is taken over.
// A failure also fails the BO's contents, so that ResumeTask refuses to
// let the restore run.
func (s *Session) AdoptMemory(id uint64, fd int, holders []int32) error {
	sb, ok := s.bos[id]
	if !ok || !sb.mapped {
		unix.Close(fd)
		return errnof(syscall.EINVAL, "BO %d is not a mapped BO of the session", id)
	}
	for _, pid := range holders {
		if pid <= 0 {
			unix.Close(fd)
			return errnof(syscall.EINVAL, "BO %d: holder pid %d is no process", id, pid)
		}
	}
	s.loadMu.Lock()
	busy := sb.adopting || sb.loadErr != nil
	sb.adopting = true
	s.loadMu.Unlock()
	if busy {
		unix.Close(fd)
		return errnof(syscall.EBUSY, "the memory of BO %d was handed over already", id)
	}
	mem, err := bomem.AdoptShared(fd, sb.st.Size)
	if err != nil {
		return s.failAdopt(sb, errnof(syscall.EINVAL, "%v", err))
	}
	k := s.k
	dev, ino := mem.Inode()
	k.mu.Lock()
	other, taken := k.memfds[memKey{dev, ino}]
	k.mu.Unlock()
	if taken {
		mem.Free()
		return s.failAdopt(sb, errnof(syscall.EBUSY, "memfd inode %d is the memory of BO %d already", ino, other.id))
	}
	if err := s.verifyMapped(sb, mem); err != nil {
		mem.Free()
		return s.failAdopt(sb, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.closed {
		mem.Free()
		return errnof(syscall.ESTALE, "restore session closed")
	}
	if err := sb.mem.adopt(mem); err != nil {
		mem.Free()
		return err
	}
	bo, err := s.boFor(id)
	if err == nil {
		if _, err = k.trackMapsLocked(bo, mem, nil); err == nil {
			err = k.holdRestored(bo, holders)
		}
		bo.put()
	}
	if err != nil {
		return s.failAdopt(sb, err)
	}
	s.loadMu.Lock()
	sb.pending, sb.verified = 0, true
	close(sb.loaded)
	s.loadMu.Unlock()
	return nil
}

// failAdopt fails a mapped BO's contents and returns why, naming it.
func (s *Session) failAdopt(sb *sessionBO, err error) error {
	errno := ErrnoOf(err)
	if e, ok := err.(*Error); ok {
		err = errors.New(e.Msg) // the errno goes on the result, once
	}
	s.fail(sb, err)
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	return &Error{Errno: errno, Msg: sb.loadErr.Error()}
}

// verifyMapped checks restored memory against a mapped BO's chunks, a
// worker per CPU (sharedChecksum). Holes (pages criu did not restore:
// never written) are checked as zeros without being touched.
func (s *Session) verifyMapped(sb *sessionBO, mem *bomem.Shared) error {
	dm, err := mem.DataMap()
	if err != nil {
		return err
	}
	return forEachChunk(s.ctx, len(sb.chunks), 0, func(_ context.Context, i int, staging []byte) error {
		c := sb.chunks[i]
		sum, err := sharedChecksum(mem, dm, c.Offset, c.Length, s.checksum)
		if err != nil {
			return fmt.Errorf("chunk [%d, %d): %w", c.Offset, c.Offset+c.Length, err)
		}
		if !bytes.Equal(sum, c.Checksum) {
			return errnof(syscall.EIO, "chunk [%d, %d): %v", c.Offset, c.Offset+c.Length, errChecksum)
		}
		return nil
	})
}
