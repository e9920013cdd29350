package kernelsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/uapi"
)

// DefaultRuntimeDir is where the daemon puts its sockets unless told
// otherwise (flag, or KERNELSIM_RUNTIME_DIR).
const DefaultRuntimeDir = "/run/kernelsim"

// RuntimeDirFromEnv returns KERNELSIM_RUNTIME_DIR or the default.
func RuntimeDirFromEnv() string {
	if d := os.Getenv("KERNELSIM_RUNTIME_DIR"); d != "" {
		return d
	}
	return DefaultRuntimeDir
}

// RenderNodePath is the socket of render node minor under dir.
func RenderNodePath(dir string, minor uint32) string {
	return filepath.Join(dir, "dri", fmt.Sprintf("renderD%d", minor))
}

// ControlPath is the privileged control socket under dir.
func ControlPath(dir string) string { return filepath.Join(dir, "control") }

// Server serves a Kernel to real processes over unix sockets.
//
// No thread waits for a client: every socket is non-blocking and waited
// on through Go's netpoller (epoll), so an idle connection costs a parked
// goroutine and its memory, and the daemon's thread count does not grow
// with its clients.
type Server struct {
	k    *Kernel
	dir  string
	diag *sockDiag
	uid  uint32 // the daemon's own user, which may use the control socket

	listeners []*listener
	wg        sync.WaitGroup
	done      chan struct{} // closed by Close

	mu     sync.Mutex
	conns  map[*conn]struct{}
	ctrls  map[*controlConn]struct{}
	closed bool
}

type listener struct {
	sock *os.File // non-blocking, in the netpoller
	path string
	dev  *Device // nil for the control socket
}

// Serve creates dir/dri/renderD<minor> for every device and dir/control,
// and serves them until Close.
func Serve(k *Kernel, dir string) (*Server, error) {
	diag, err := newSockDiag()
	if err != nil {
		return nil, err
	}
	s := &Server{k: k, dir: dir, diag: diag, uid: uint32(os.Getuid()), done: make(chan struct{}),
		conns: map[*conn]struct{}{}, ctrls: map[*controlConn]struct{}{}}
	if err := os.MkdirAll(filepath.Join(dir, "dri"), 0o755); err != nil {
		diag.close()
		return nil, fmt.Errorf("runtime dir: %w", err)
	}
	for _, d := range k.devices {
		l, err := listen(RenderNodePath(dir, d.cfg.Minor), 0o666)
		if err != nil {
			s.Close()
			return nil, err
		}
		l.dev = d
		s.listeners = append(s.listeners, l)
	}
	l, err := listen(ControlPath(dir), 0o600)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.listeners = append(s.listeners, l)
	for _, l := range s.listeners {
		s.wg.Add(1)
		go s.acceptLoop(l)
	}
	return s, nil
}

func listen(path string, mode os.FileMode) (*listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return &listener{sock: os.NewFile(uintptr(fd), path), path: path}, nil
}

// removeStaleSocket removes a socket left by a daemon that is gone, and
// refuses to steal one a live daemon is serving.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if unix.Connect(fd, &unix.SockaddrUnix{Name: path}) == nil {
		return fmt.Errorf("%s is served by a running daemon", path)
	}
	return os.Remove(path)
}

// Backoff of an accept loop while the daemon is out of file descriptors.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func (s *Server) acceptLoop(l *listener) {
	defer s.wg.Done()
	rc, err := l.sock.SyscallConn()
	if err != nil {
		return
	}
	backoff := time.Duration(0)
	for {
		var nfd int
		var aerr error
		err := rc.Read(func(fd uintptr) bool {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			return aerr != unix.EAGAIN
		})
		if err != nil {
			return // the listener was closed
		}
		switch aerr {
		case nil:
			backoff = 0
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// The connection waits in the backlog until a descriptor is
			// free; exempt users' clients get in first only if the
			// limits keep a reserve (see Limits.FDs).
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			s.k.log.Printf("%s: accept: %v; retrying in %v", l.path, aerr, backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-s.done:
				return
			}
		default:
			s.k.log.Printf("%s: accept: %v", l.path, aerr)
			return
		}
		cred, err := unix.GetsockoptUcred(nfd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			s.k.log.Printf("%s: dropped a connection: SO_PEERCRED: %v", l.path, err)
			unix.Close(nfd)
			continue
		}
		owner := Cred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
		if l.dev == nil {
			s.startControl(nfd, owner)
		} else {
			s.startConn(nfd, l.dev, owner)
		}
	}
}

// refuse answers a connection it will not serve with an error reply, so
// that the client reads why instead of a broken pipe, logs one line
// (rate-limited), and closes it.
func (s *Server) refuse(fd int, what string, owner Cred, err error) {
	s.k.log.Printf("refused %s connection of pid %d uid %d: %v", what, owner.PID, owner.UID, err)
	sendRefusal(fd, err)
	unix.Close(fd)
}

// sendRefusal sends the error reply of a refused connection on its socket
// fd. The reply answers the client's first request if that is already
// queued, else it carries sequence number 0, which clients read as the
// connection's refusal.
func sendRefusal(fd int, err error) {
	var h uapi.Header
	buf := bufs.Get().(*[]byte)
	if n, fds, rerr := uapi.RecvNonblock(fd, *buf, 0); rerr == nil {
		uapi.CloseFDs(fds)
		if rh, herr := uapi.ParseHeader((*buf)[:n]); herr == nil {
			h.Op, h.Seq = rh.Op, rh.Seq
		}
	}
	bufs.Put(buf)
	h.Status = -int32(ErrnoOf(err))
	msg := "kernelsimd refused the connection: " + err.Error()
	if pkt, merr := uapi.Marshal(h, &uapi.ErrorReply{Message: truncate(msg, 4096)}); merr == nil {
		uapi.SendNonblock(fd, pkt)
	}
}

func (s *Server) startConn(fd int, d *Device, owner Cred) {
	what := fmt.Sprintf("renderD%d", d.cfg.Minor)
	if err := s.k.acct.chargeConn(owner); err != nil {
		s.refuse(fd, what, owner, err)
		return
	}
	clientIno, diag, err := s.diag.peer(fd)
	if err != nil {
		// Without the client's inode the file could not be checkpointed
		// safely.
		s.k.acct.unchargeConn(owner.UID)
		s.refuse(fd, what, owner, prefixed("cannot identify the client's socket", err))
		return
	}
	c, err := newConn(s, fd, d, owner, clientIno, diag)
	if err != nil {
		s.diag.release(diag)
		s.k.acct.unchargeConn(owner.UID)
		s.refuse(fd, what, owner, err)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		closing := errnof(syscall.ESHUTDOWN, "kernelsimd is shutting down")
		s.k.log.Printf("refused %s connection of pid %d uid %d: %v", what, owner.PID, owner.UID, closing)
		sendRefusal(c.fd, closing)
		c.mu.Lock()
		c.dead = true
		c.mu.Unlock()
		c.release()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	c.start()
}

// connDone is called once nothing serves c any more.
func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.wg.Done()
	}
	s.mu.Unlock()
}

// spawn runs serve in a goroutine that Close waits for, registered with
// add and unregistered with remove (both under s.mu), unless the server
// is closing: then it reports false and the caller cleans up.
func (s *Server) spawn(add, remove func(), serve func()) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	add()
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		serve()
		s.mu.Lock()
		remove()
		s.mu.Unlock()
	}()
	return true
}

func (s *Server) startControl(fd int, owner Cred) {
	if owner.UID != 0 && owner.UID != s.uid {
		s.refuse(fd, "control", owner, errnof(syscall.EACCES, "the control socket is for root and kernelsimd's user (uid %d), not uid %d", s.uid, owner.UID))
		return
	}
	c, err := newControlConn(s, fd, owner)
	if err != nil {
		s.refuse(fd, "control", owner, err)
		return
	}
	if !s.spawn(func() { s.ctrls[c] = struct{}{} }, func() { delete(s.ctrls, c) }, c.serve) {
		c.rc.Control(func(fd uintptr) { sendRefusal(int(fd), errnof(syscall.ESHUTDOWN, "kernelsimd is shutting down")) })
		c.sock.Close()
	}
}

// Dir is the runtime directory.
func (s *Server) Dir() string { return s.dir }

// Close stops accepting, disconnects every client, closes their files and
// removes the sockets. It waits for every goroutine of the server.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for _, l := range s.listeners {
		l.sock.Close() // wakes its accept loop
	}
	for c := range s.conns {
		c.Kill()
	}
	for c := range s.ctrls {
		c.shutdown()
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, l := range s.listeners {
		os.Remove(l.path)
	}
	s.diag.close()
	return nil
}
