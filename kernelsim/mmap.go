package kernelsim

import (
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/bomem"
	"drmcr/kernelsim/uapi"
)

// CPU mappings of BOs (drm_gem_mmap, dma_buf_mmap).
//
// A client maps a BO through its drm file (GEM_MMAP) or through a dma-buf
// (DMABUF_MMAP on the dma-buf's socket). Either way the kernel moves the
// BO's memory into a memfd the first time (Backing.share) and hands the
// client a new open file description of it, which the client maps
// MAP_SHARED: the GPU and every mapping then use the same memory.
//
// As a VMA holds a reference to a GEM object on Linux, the open file
// descriptions handed out keep the BO alive after its handles and
// dma-bufs are gone: while any exists (open, mapped or in flight) the BO
// holds one reference for its mappings (cpuMaps.ref). The kernel learns
// when the last one goes from inotify, which reports the release of
// every description it handed out (IN_CLOSE_WRITE on the memfd), and
// then asks for a write lease, which Linux grants only when no other
// description that can write exists (bomem.Shared.InUse). Linux reports
// the release a moment before it stops counting the description as a
// writer, so a probe that still finds one is repeated a few times, a
// millisecond to ten seconds later (recheck).
//
// A restored BO's memory is the memfd criu made for the restored tasks'
// mappings, whose description Linux does not count or report; the
// restore names those tasks (holders), and the reference lasts until all
// of them have exited (their pidfds), or until the kernel's own probe
// finds no description once they have.

// memKey identifies a file: st_dev and st_ino.
type memKey struct{ dev, ino uint64 }

// cpuMaps is what the kernel knows of a BO's CPU mappings. Under k.mu.
type cpuMaps struct {
	mem *bomem.Shared
	key memKey
	wd  int  // inotify watch of the memfd
	ref bool // the BO holds a reference for its mappings
	// restored tasks mapping it (see above), by pid
	holders map[int32]*holder
	handed  uint64 // descriptions handed out, for the debug view
	recheck int    // probes left to repeat after the last release

	charged bool // a descriptor of uid's (see Limits.FDs)
	uid     uint32
}

// holder is a restored task that maps BOs, watched through its pidfd.
type holder struct {
	pid   int32
	bos   map[*BO]bool
	pidfd *os.File
}

// mapWatch is the kernel's watch on BO memfds and holders.
type mapWatch struct {
	inotify *os.File // non-blocking, in the netpoller
	// fd is inotify's descriptor, for adding and removing watches (its
	// File's Fd would make it blocking), valid until closed (k.mu).
	fd      int
	closed  bool
	byWD    map[int]*BO
	holders map[int32]*holder
}

// startMapWatch sets up the inotify instance, once. Called with k.mu
// held.
func (k *Kernel) startMapWatch() error {
	if k.maps != nil {
		return nil
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return errnof(syscall.EMFILE, "inotify instance for BO mappings: %v (fs.inotify.max_user_instances)", err)
	}
	w := &mapWatch{inotify: os.NewFile(uintptr(fd), "inotify"), fd: fd, byWD: map[int]*BO{}, holders: map[int32]*holder{}}
	k.maps = w
	go k.watchMaps(w)
	return nil
}

// watchMaps probes a BO whenever a description of its memfd is released.
func (k *Kernel) watchMaps(w *mapWatch) {
	rc, err := w.inotify.SyscallConn()
	if err != nil {
		return
	}
	var buf [64 * (unix.SizeofInotifyEvent + unix.NAME_MAX + 1)]byte
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf[:])
			return rerr != unix.EAGAIN
		})
		if err != nil || (rerr != nil && rerr != unix.EINTR) {
			return // closed at shutdown
		}
		k.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				for _, bo := range w.byWD {
					k.probeMaps(bo)
				}
				continue
			}
			if bo, ok := w.byWD[int(ev.Wd)]; ok {
				bo.maps.recheck = len(recheckAfter)
				k.probeMaps(bo)
			}
		}
		k.mu.Unlock()
	}
}

// stopMapWatch ends the watch at shutdown.
func (k *Kernel) stopMapWatch() {
	k.mu.Lock()
	w := k.maps
	var pidfds []*os.File
	if w != nil {
		w.closed = true
		for _, h := range w.holders {
			pidfds = append(pidfds, h.pidfd)
		}
	}
	k.mu.Unlock()
	if w == nil {
		return
	}
	w.inotify.Close()
	for _, f := range pidfds {
		f.Close() // wakes its watcher
	}
}

// probeMaps drops the reference a BO holds for its mappings once nothing
// maps it any more. Called with k.mu held.
func (k *Kernel) probeMaps(bo *BO) {
	m := bo.maps
	if m == nil || !m.ref || len(m.holders) > 0 {
		return
	}
	inUse, err := m.mem.InUse()
	if err != nil {
		// The BO stays: better kept too long than freed under a mapping.
		k.log.Printf("BO %d: cannot tell whether it is still mapped: %v", bo.id, err)
		return
	}
	if !inUse {
		m.ref = false
		bo.put()
		return
	}
	if m.recheck > 0 {
		delay := recheckAfter[len(recheckAfter)-m.recheck]
		m.recheck--
		// No reference: a BO freed meanwhile has no mapping state.
		time.AfterFunc(delay, func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			if bo.maps == m {
				k.probeMaps(bo)
			}
		})
	}
}

// recheckAfter are the delays of the probes repeated after a release.
var recheckAfter = []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second, 10 * time.Second}

// shareMemory makes bo's memory a memfd and sets up its mapping state,
// once; who is charged the kernel's descriptor for it. The caller holds
// a reference to bo and not k.mu.
func (k *Kernel) shareMemory(bo *BO, who *Cred) (*cpuMaps, error) {
	mem, err := bo.mem.share()
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.trackMapsLocked(bo, mem, who)
}

// trackMapsLocked sets up the mapping state of bo, whose memory is mem.
// Called with k.mu held.
func (k *Kernel) trackMapsLocked(bo *BO, mem *bomem.Shared, who *Cred) (*cpuMaps, error) {
	if bo.maps != nil {
		return bo.maps, nil
	}
	dev, ino := mem.Inode()
	if other, ok := k.memfds[memKey{dev, ino}]; ok {
		return nil, errnof(syscall.EBUSY, "memfd inode %d is the memory of BO %d already", ino, other.id)
	}
	if err := k.startMapWatch(); err != nil {
		return nil, err
	}
	if k.maps.closed {
		return nil, errnof(syscall.ESHUTDOWN, "the kernel is shutting down")
	}
	m := &cpuMaps{mem: mem, key: memKey{dev, ino}, wd: -1, holders: map[int32]*holder{}}
	if who != nil {
		if err := k.acct.chargeMemfd(*who); err != nil {
			return nil, err
		}
		m.charged, m.uid = true, who.UID
	}
	// IN_CLOSE_WRITE: the release of a description that can write, which
	// is every one the kernel hands out.
	wd, err := unix.InotifyAddWatch(k.maps.fd, "/proc/self/fd/"+strconv.Itoa(mem.FD()), unix.IN_CLOSE_WRITE)
	if err != nil {
		if m.charged {
			k.acct.unchargeMemfd(m.uid)
		}
		if errors.Is(err, unix.ENOSPC) {
			return nil, errnof(syscall.ENOSPC, "BO %d: no inotify watch left for its mappings (fs.inotify.max_user_watches of kernelsimd's user)", bo.id)
		}
		return nil, errnof(syscall.ENOMEM, "BO %d: watch its memfd: %v", bo.id, err)
	}
	m.wd = wd
	k.maps.byWD[wd] = bo
	k.memfds[m.key] = bo
	bo.maps = m
	return m, nil
}

// untrackMaps forgets a freed BO's mapping state. Called with k.mu held.
func (k *Kernel) untrackMaps(bo *BO) {
	m := bo.maps
	if m == nil {
		return
	}
	bo.maps = nil
	delete(k.memfds, m.key)
	if k.maps != nil && m.wd >= 0 {
		delete(k.maps.byWD, m.wd)
		if !k.maps.closed {
			unix.InotifyRmWatch(k.maps.fd, uint32(m.wd))
		}
	}
	for _, h := range m.holders {
		delete(h.bos, bo)
	}
	if m.charged {
		k.acct.unchargeMemfd(m.uid)
	}
}

// mmapFile hands out a new description of bo's memory for a mapping, and
// makes the BO hold a reference for its mappings. The caller holds a
// reference to bo and not k.mu; who is the client asking.
func (k *Kernel) mmapFile(bo *BO, who Cred) (int, *uapi.GemMmapReply, error) {
	m, err := k.shareMemory(bo, &who)
	if err != nil {
		return -1, nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	fd, err := m.mem.Open()
	if err != nil {
		return -1, nil, errnof(syscall.EMFILE, "BO %d: open its memfd for a mapping: %v", bo.id, err)
	}
	if !m.ref {
		m.ref = true
		bo.get()
	}
	m.handed++
	reply := &uapi.GemMmapReply{Size: bo.size, Domain: bo.domain, WriteCombined: bo.domain == uapi.Domain_DOMAIN_VRAM}
	return fd, reply, nil
}

// GemMmap hands the client a file of the handle's BO memory to map
// (GEM_MMAP). The caller owns the returned descriptor.
func (f *File) GemMmap(handle uint32) (int, *uapi.GemMmapReply, error) {
	k := f.k
	k.mu.Lock()
	bo, err := f.lookup(handle)
	if err != nil {
		k.mu.Unlock()
		return -1, nil, err
	}
	bo = bo.real() // an attachment maps the exporter's memory (dma_buf_mmap)
	bo.get()
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		bo.put()
		k.mu.Unlock()
	}()
	return k.mmapFile(bo, f.owner)
}

// identifyMemory tells which files are BO memory.
func (k *Kernel) identifyMemory(refs []*uapi.MemoryRef) []*uapi.IdentifiedMemory {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*uapi.IdentifiedMemory, 0, len(refs))
	for _, r := range refs {
		im := &uapi.IdentifiedMemory{Dev: r.Dev, Ino: r.Ino}
		if bo, ok := k.memfds[memKey{r.Dev, r.Ino}]; ok {
			im.Bo = bo.state()
		}
		out = append(out, im)
	}
	return out
}

// holdRestored makes bo hold a reference for the mappings of restored
// tasks pids, until they have all exited. Called with k.mu held.
func (k *Kernel) holdRestored(bo *BO, pids []int32) error {
	m := bo.maps
	for _, pid := range pids {
		h, ok := k.maps.holders[pid]
		if !ok {
			pfd, err := unix.PidfdOpen(int(pid), unix.PIDFD_NONBLOCK)
			if errors.Is(err, unix.ESRCH) {
				continue // gone already: it maps nothing
			}
			if err != nil {
				return errnof(syscall.EMFILE, "watch restored pid %d: %v", pid, err)
			}
			h = &holder{pid: pid, bos: map[*BO]bool{}, pidfd: os.NewFile(uintptr(pfd), "pidfd")}
			k.maps.holders[pid] = h
			go k.watchHolder(h)
		}
		h.bos[bo] = true
		m.holders[pid] = h
	}
	if len(m.holders) > 0 && !m.ref {
		m.ref = true
		bo.get()
	}
	return nil
}

// watchHolder waits for a restored task to exit, then probes the BOs it
// mapped.
func (k *Kernel) watchHolder(h *holder) {
	defer h.pidfd.Close()
	if rc, err := h.pidfd.SyscallConn(); err == nil {
		rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			return err != nil && err != unix.EINTR || n > 0
		})
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.maps.holders[h.pid] == h {
		delete(k.maps.holders, h.pid)
	}
	for bo := range h.bos {
		if bo.maps != nil {
			delete(bo.maps.holders, h.pid)
			k.probeMaps(bo)
		}
	}
}
