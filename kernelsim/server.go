package kernelsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
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
type Server struct {
	k   *Kernel
	dir string

	listeners []*listener
	wg        sync.WaitGroup

	mu     sync.Mutex
	conns  map[*conn]struct{}
	ctrls  map[*controlConn]struct{}
	closed bool
}

type listener struct {
	fd   int
	path string
	dev  *Device // nil for the control socket
}

// Serve creates dir/dri/renderD<minor> for every device and dir/control,
// and serves them until Close.
func Serve(k *Kernel, dir string) (*Server, error) {
	s := &Server{k: k, dir: dir, conns: map[*conn]struct{}{}, ctrls: map[*controlConn]struct{}{}}
	if err := os.MkdirAll(filepath.Join(dir, "dri"), 0o755); err != nil {
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
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
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
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return &listener{fd: fd, path: path}, nil
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

func (s *Server) acceptLoop(l *listener) {
	defer s.wg.Done()
	for {
		nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return // the listener was shut down
		}
		cred, err := unix.GetsockoptUcred(nfd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
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

func (s *Server) startConn(fd int, d *Device, owner Cred) {
	clientIno, err := peerInode(fd)
	if err != nil {
		// The client is already gone, or sock_diag is missing: without
		// the client inode the file could not be checkpointed safely.
		unix.Close(fd)
		return
	}
	c, err := newConn(s, fd, d, owner, clientIno)
	if err != nil {
		unix.Close(fd)
		return
	}
	if !s.spawn(func() { s.conns[c] = struct{}{} }, func() { delete(s.conns, c) }, c.serve) {
		unix.Close(fd)
		unix.Close(c.wake)
		c.f.Close()
	}
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
	if owner.UID != 0 && owner.UID != uint32(os.Getuid()) {
		unix.Close(fd)
		return
	}
	c := &controlConn{s: s, fd: fd, owner: owner, paused: map[uint64]bool{}, sessions: map[string]*Session{}}
	if !s.spawn(func() { s.ctrls[c] = struct{}{} }, func() { delete(s.ctrls, c) }, c.serve) {
		unix.Close(fd)
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
	for _, l := range s.listeners {
		unix.Shutdown(l.fd, unix.SHUT_RDWR)
	}
	for c := range s.conns {
		c.Kill()
	}
	for c := range s.ctrls {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, l := range s.listeners {
		unix.Close(l.fd)
		os.Remove(l.path)
	}
	return nil
}
