package kernelsim

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/uapi"
)

// DmaBuf is an exported BO (struct dma_buf). Its file is one end of a
// SOCK_SEQPACKET socketpair whose other end the kernel keeps: the client
// end's inode is the dma-buf's identity, and end-of-file on the kernel's
// end means every client copy of the file is closed.
//
// Like drm_prime.c, each drm file's PRIME table holds a reference to the
// dma-buf file; the kernel models that by keeping the client end open while
// any PRIME table entry refers to the dma-buf, which also lets it hand out
// the very same file on every export.
type DmaBuf struct {
	id  uint64
	bo  *BO
	ino uint64

	server *os.File // the kernel's end, in Go's netpoller
	// reqMu is held while a request on the dma-buf's socket is read and
	// answered, so that a checkpoint finds each either still queued or
	// answered. Taken before k.mu.
	reqMu sync.Mutex

	charged bool   // counted against uid's dma-bufs (see Limits)
	uid     uint32 // who exported it

	// under k.mu
	clientFD  int // the client end, held while primeRefs > 0; else -1
	primeRefs int
	released  bool
}

// Ino is the inode of the dma-buf's file.
func (db *DmaBuf) Ino() uint64 { return db.ino }

// BO returns the exported buffer.
func (db *DmaBuf) BO() *BO { return db.bo }

func unixSocketpair() ([2]int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return [2]int{-1, -1}, err
	}
	return [2]int{fds[0], fds[1]}, nil
}

func sockIno(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, errnof(syscall.EINVAL, "fd is not a socket")
	}
	return st.Ino, nil
}

// socketMaker makes the socketpair of a new dma-buf. A connection makes it
// in its client's network namespace: criu looks for the sockets of a task
// in the task's network namespace, so a dma-buf made in the daemon's would
// make a container that holds it impossible to checkpoint.
type socketMaker interface {
	socketpair() ([2]int, error)
}

// newDmaBuf exports bo, making its file where asks (nil: in the daemon's
// network namespace). The caller adds the first PRIME table entry.
// Called with k.mu held.
func (k *Kernel) newDmaBuf(bo *BO, where socketMaker) (*DmaBuf, error) {
	var fds [2]int
	var err error
	if where != nil {
		fds, err = where.socketpair()
	} else {
		fds, err = unixSocketpair()
	}
	if err != nil {
		return nil, fmt.Errorf("dma-buf socketpair: %w", err)
	}
	ino, err := sockIno(fds[1])
	if err == nil {
		// The kernel's end is waited on by the netpoller, not by a thread.
		err = unix.SetNonblock(fds[0], true)
	}
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("dma-buf socket: %w", err)
	}
	k.nextBuf++
	db := &DmaBuf{id: k.nextBuf, bo: bo, ino: ino, server: os.NewFile(uintptr(fds[0]), "dma-buf"), clientFD: fds[1]}
	bo.get()
	bo.dmabuf = db
	k.dmabufs[ino] = db
	go k.watchDmaBuf(db)
	return db, nil
}

// watchDmaBuf answers the requests on the dma-buf's socket (DMABUF_MMAP)
// and waits for the last client copy of the dma-buf to close, then
// releases it (dma_buf_release).
func (k *Kernel) watchDmaBuf(db *DmaBuf) {
	if rc, err := db.server.SyscallConn(); err == nil {
		rc.Read(func(fd uintptr) bool { return k.serveDmaBuf(db, int(fd)) })
	}
	k.mu.Lock()
	k.releaseDmaBuf(db)
	k.mu.Unlock()
	db.server.Close()
}

// serveDmaBuf answers the requests clients wrote into the kernel's end of
// a dma-buf and reports whether every client copy is closed.
func (k *Kernel) serveDmaBuf(db *DmaBuf, fd int) bool {
	var buf [512]byte
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if _, err := unix.Poll(pfd, 0); err != nil && err != unix.EINTR {
			return true
		}
		switch {
		case pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR|unix.POLLNVAL) != 0:
			return true
		case pfd[0].Revents&unix.POLLIN == 0:
			return false
		}
		db.reqMu.Lock()
		n, fds, err := uapi.RecvNonblock(fd, buf[:], 0)
		if err == nil {
			k.dmaBufRequest(db, buf[:n], fds)
		}
		db.reqMu.Unlock()
	}
}

// dmaBufRequest answers one request on a dma-buf's socket: DMABUF_MMAP,
// answered on the reply socket that comes with it. Anything else has
// nowhere to be answered and is discarded.
func (k *Kernel) dmaBufRequest(db *DmaBuf, req []byte, fds []int) {
	defer uapi.CloseFDs(fds)
	h, err := uapi.ParseHeader(req)
	if err != nil || h.Op != uapi.OpDmaBufMmap || len(fds) != 1 {
		return
	}
	replyTo := fds[0]
	if _, err := sockIno(replyTo); err != nil {
		return
	}
	// Who asks: the process that made the reply socket.
	var who Cred
	if uc, err := unix.GetsockoptUcred(replyTo, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
		who = Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}
	}
	out := uapi.Header{Op: h.Op, Seq: h.Seq}
	memfd, reply, err := k.dmaBufMmap(db, who)
	var pkt []byte
	if err == nil {
		pkt, err = uapi.Marshal(out, reply)
	}
	if err != nil {
		out.Status = -int32(ErrnoOf(err))
		pkt, _ = uapi.Marshal(out, &uapi.ErrorReply{Message: truncate(err.Error(), 4096)})
		uapi.SendNonblock(replyTo, pkt)
		return
	}
	defer unix.Close(memfd)
	// A fresh socket's queue is empty: this cannot block.
	uapi.SendNonblock(replyTo, pkt, memfd)
}

// dmaBufMmap hands out a file of a dma-buf's BO memory.
func (k *Kernel) dmaBufMmap(db *DmaBuf, who Cred) (int, *uapi.GemMmapReply, error) {
	k.mu.Lock()
	if db.released {
		k.mu.Unlock()
		return -1, nil, errnof(syscall.ENODEV, "dma-buf released")
	}
	bo := db.bo
	bo.get()
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		bo.put()
		k.mu.Unlock()
	}()
	return k.mmapFile(bo, who)
}

// checkIdle fails while a request on the dma-buf's socket is
// unanswered: a checkpoint then could not tell whether its reply would
// come. Called with db.reqMu held.
func (db *DmaBuf) checkIdle() error {
	var inq int
	var qerr error
	rc, err := db.server.SyscallConn()
	if err != nil {
		return errnof(syscall.ENODEV, "dma-buf inode %d is closed: %v", db.ino, err)
	}
	if err := rc.Control(func(fd uintptr) {
		inq, qerr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	}); err != nil {
		return errnof(syscall.ENODEV, "dma-buf inode %d is closed: %v", db.ino, err)
	}
	if qerr != nil {
		return fmt.Errorf("dma-buf inode %d: SIOCINQ: %w", db.ino, qerr)
	}
	if inq > 0 {
		return errnof(syscall.EAGAIN, "a DMABUF_MMAP request on dma-buf inode %d is in flight; retry the checkpoint", db.ino)
	}
	return nil
}

// releaseDmaBuf drops the dma-buf's reference to its BO. Called with k.mu
// held.
func (k *Kernel) releaseDmaBuf(db *DmaBuf) {
	if db.released {
		return
	}
	db.released = true
	if k.dmabufs[db.ino] == db {
		delete(k.dmabufs, db.ino)
	}
	if db.bo.dmabuf == db {
		db.bo.dmabuf = nil
	}
	if db.primeRefs > 0 {
		// The PRIME tables hold the file, so the client end cannot have
		// closed: a client shut the socket down, or the kernel shuts down.
		// Forget the entries rather than keep a dead dma-buf in them.
		for _, f := range k.files {
			for h, d := range f.prime {
				if d == db {
					f.removePrime(h)
				}
			}
		}
	}
	if db.charged {
		k.acct.unchargeDmaBuf(db.uid)
	}
	db.bo.put()
}

// addPrime records (handle, dma-buf) in f's PRIME table. fd, if >= 0, is a
// client copy of the dma-buf file received with the request; it is kept or
// closed. Called with k.mu held.
func (f *File) addPrime(handle uint32, db *DmaBuf, fd int) {
	f.prime[handle] = db
	db.primeRefs++
	if db.clientFD < 0 && fd >= 0 {
		db.clientFD = fd
		return
	}
	if fd >= 0 {
		unix.Close(fd)
	}
}

// removePrime drops handle's PRIME table entry, if any. Called with k.mu
// held.
func (f *File) removePrime(handle uint32) {
	db, ok := f.prime[handle]
	if !ok {
		return
	}
	delete(f.prime, handle)
	db.putFile()
}

// getFile and putFile count a holder of the dma-buf's file other than a
// PRIME entry (an import attachment): the kernel keeps a client copy
// open while any holder is left. Called with k.mu held.
func (db *DmaBuf) getFile() { db.primeRefs++ }

func (db *DmaBuf) putFile() {
	db.primeRefs--
	if db.primeRefs == 0 && db.clientFD >= 0 {
		unix.Close(db.clientFD)
		db.clientFD = -1
	}
}

func (f *File) primeHandle(db *DmaBuf) (uint32, bool) {
	for h, d := range f.prime {
		if d == db {
			return h, true
		}
	}
	return 0, false
}

// PrimeHandleToFD exports a handle (DRM_IOCTL_PRIME_HANDLE_TO_FD) and
// returns a new descriptor of the dma-buf's client file, the caller's to
// send and close: the kernel's own copy may go meanwhile (a concurrent
// GEM_CLOSE drops the PRIME entry holding it), as the fd an ioctl installs
// is the caller's. Exporting the same BO again returns the same file. A
// new dma-buf's file is made where says (the exporting client's network
// namespace; nil: the daemon's).
func (f *File) PrimeHandleToFD(handle uint32, where socketMaker) (fd int, db *DmaBuf, err error) {
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.closed {
		return -1, nil, errnof(syscall.EBADF, "file closed")
	}
	bo, ok := f.handles.get(handle)
	if !ok {
		return -1, nil, errnof(syscall.ENOENT, "no GEM handle %d", handle)
	}
	db = bo.dmabuf
	if db != nil && db.released {
		return -1, nil, errnof(syscall.ENODEV, "the dma-buf BO %d was imported from is gone", bo.id)
	}
	if db == nil {
		if err := k.acct.chargeDmaBuf(f.owner); err != nil {
			return -1, nil, err
		}
		if db, err = k.newDmaBuf(bo, where); err != nil {
			k.acct.unchargeDmaBuf(f.owner.UID)
			return -1, nil, err
		}
		db.charged, db.uid = true, f.owner.UID
		f.addPrime(handle, db, -1)
		return dupClientFD(db)
	}
	if _, ok := f.prime[handle]; !ok {
		f.addPrime(handle, db, -1)
	}
	if db.clientFD < 0 {
		// Every handle of a BO with a live dma-buf is in a PRIME table,
		// which holds the file; not reaching it is a kernel bug.
		return -1, nil, errnof(syscall.EBUSY, "dma-buf %d of BO %d has no file to return", db.id, bo.id)
	}
	return dupClientFD(db)
}

// dupClientFD returns a new descriptor of db's client file. Called with
// k.mu held (which keeps the kernel's copy open).
func dupClientFD(db *DmaBuf) (int, *DmaBuf, error) {
	fd, err := unix.FcntlInt(uintptr(db.clientFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, nil, errnof(syscall.EMFILE, "dma-buf %d: dup: %v", db.id, err)
	}
	return fd, db, nil
}

// PrimeFDToHandle imports a dma-buf (DRM_IOCTL_PRIME_FD_TO_HANDLE) and takes
// ownership of fd. A file that already has a handle for the dma-buf gets
// that handle back; otherwise, as drm_gem_prime_fd_to_handle does, a new
// handle refers to the exporter's GEM object itself when it is of the
// file's device, and to a new import attachment of the dma-buf on the
// file's device when it is another device's.
func (f *File) PrimeFDToHandle(fd int) (uint32, error) {
	ino, err := sockIno(fd)
	if err != nil {
		unix.Close(fd)
		return 0, errnof(syscall.EINVAL, "import: %v", err)
	}
	k := f.k
	k.mu.Lock()
	defer k.mu.Unlock()
	db, ok := k.dmabufs[ino]
	if !ok || f.closed {
		unix.Close(fd)
		if f.closed {
			return 0, errnof(syscall.EBADF, "file closed")
		}
		return 0, errnof(syscall.EINVAL, "import: socket inode %d is not a dma-buf", ino)
	}
	if h, ok := f.primeHandle(db); ok {
		unix.Close(fd)
		return h, nil
	}
	bo := db.bo
	if bo.dev == f.dev {
		bo.get()
	} else {
		bo = f.dev.importAttach(db)
	}
	h, err := f.handles.alloc(bo)
	if err != nil {
		bo.put()
		unix.Close(fd)
		return 0, errnof(syscall.ENOSPC, "import: %v", err)
	}
	f.addPrime(h, db, fd)
	return h, nil
}
