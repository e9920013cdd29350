package kernelsim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Constants of linux/sock_diag.h and linux/unix_diag.h.
const (
	sockDiagByFamily = 20
	udiagShowPeer    = 0x4
	unixDiagPeer     = 2
	unixDiagReqLen   = 24
	unixDiagMsgLen   = 16
)

// sockDiag finds the client end of accepted render-node connections with
// the kernel's sock_diag interface (as ss and CRIU do), which is how the
// daemon knows each client's socket inode without the client's help.
//
// sock_diag only sees the sockets of the network namespace its netlink
// socket was created in, and the socket that accept returns lives in the
// client's network namespace (Linux creates it in the connecting socket's
// namespace). So each connection is asked about in its own namespace:
// SIOCGSKNS on the accepted socket opens that namespace, and a netlink
// socket is created inside it by a thread that enters it with setns and
// comes back (a socket stays in the namespace it was created in). Such
// sockets are cached per namespace while connections from it are served:
// those connections' own sockets keep the namespace alive anyway, and the
// cached socket is closed with the last of them, so nothing pins a dead
// namespace. The daemon's own namespace has a socket for its whole life.
type sockDiag struct {
	home *diagSock // the daemon's own network namespace
	self int       // fd of the daemon's network namespace, to come back to

	mu    sync.Mutex
	socks map[nsID]*diagSock
}

// nsID identifies a namespace by its nsfs inode. Cached sockets keep their
// namespace alive, so an id in the cache cannot be reused by another one.
type nsID struct{ dev, ino uint64 }

// diagSock is a NETLINK_SOCK_DIAG socket in one network namespace.
type diagSock struct {
	id   nsID
	refs int // under sockDiag.mu: connections served from the namespace

	mu  sync.Mutex // one request at a time
	fd  int
	seq uint32
}

func newSockDiag() (*sockDiag, error) {
	self, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("own network namespace: %w", err)
	}
	id, err := nsIDOf(self)
	if err != nil {
		unix.Close(self)
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		unix.Close(self)
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	home := &diagSock{id: id, refs: 1, fd: fd}
	return &sockDiag{home: home, self: self, socks: map[nsID]*diagSock{id: home}}, nil
}

func (sd *sockDiag) close() {
	unix.Close(sd.home.fd)
	unix.Close(sd.self)
}

func nsIDOf(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, fmt.Errorf("network namespace: %w", err)
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// peer returns the inode of the client end of the accepted socket fd and
// the namespace's sock_diag socket, which the caller releases when the
// connection ends. The error says why the client could not be identified.
func (sd *sockDiag) peer(fd int) (uint64, *diagSock, error) {
	own, err := sockIno(fd)
	if err != nil {
		return 0, nil, fmt.Errorf("accepted socket: %w", err)
	}
	ds, guess, err := sd.socketFor(fd)
	if err != nil {
		return 0, nil, err
	}
	ino, err := ds.peer(own)
	if err != nil {
		sd.release(ds)
		if guess != nil && errors.Is(err, syscall.ENOENT) {
			// The socket is not in the daemon's namespace, and the
			// daemon may not look into the client's.
			return 0, nil, errnof(syscall.EPERM, "the client is in another network namespace, which kernelsimd cannot inspect (SIOCGSKNS: %v; run kernelsimd as root)", guess)
		}
		return 0, nil, err
	}
	return ino, ds, nil
}

// socketFor returns the sock_diag socket of fd's network namespace with a
// reference. Without the privilege to open the namespace (CAP_NET_ADMIN
// over it) it falls back to the daemon's own and returns why in guess.
func (sd *sockDiag) socketFor(fd int) (ds *diagSock, guess error, err error) {
	ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		sd.mu.Lock()
		sd.home.refs++
		sd.mu.Unlock()
		return sd.home, err, nil
	}
	defer unix.Close(ns)
	id, err := nsIDOf(ns)
	if err != nil {
		return nil, nil, err
	}
	sd.mu.Lock()
	if ds, ok := sd.socks[id]; ok {
		ds.refs++
		sd.mu.Unlock()
		return ds, nil, nil
	}
	sd.mu.Unlock()
	nl, err := socketIn(ns, sd.self)
	if err != nil {
		return nil, nil, fmt.Errorf("sock_diag in the client's network namespace: %w", err)
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if ds, ok := sd.socks[id]; ok { // another accept was quicker
		unix.Close(nl)
		ds.refs++
		return ds, nil, nil
	}
	ds = &diagSock{id: id, refs: 1, fd: nl}
	sd.socks[id] = ds
	return ds, nil, nil
}

// release drops a connection's reference; the last one closes a foreign
// namespace's socket.
func (sd *sockDiag) release(ds *diagSock) {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if ds.refs--; ds.refs == 0 {
		delete(sd.socks, ds.id)
		unix.Close(ds.fd)
	}
}

// socketIn creates a NETLINK_SOCK_DIAG socket in the network namespace ns
// and returns to the namespace home.
func socketIn(ns, home int) (int, error) {
	fds, err := inNetNS(ns, home, func() ([]int, error) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return nil, fmt.Errorf("socket: %w", err)
		}
		return []int{fd}, nil
	})
	if err != nil {
		return -1, err
	}
	return fds[0], nil
}

// inNetNS runs mk, which creates sockets, in the network namespace ns, and
// returns to the namespace home. mk runs on a thread of its own: if that
// thread cannot come back home it must never run anything else, so its
// goroutine then ends with the thread locked, which retires it, and mk's
// sockets are closed.
func inNetNS(ns, home int, mk func() ([]int, error)) ([]int, error) {
	type result struct {
		fds []int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		fds, err := mk()
		if herr := unix.Setns(home, unix.CLONE_NEWNET); herr != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			done <- result{nil, fmt.Errorf("setns back to the daemon's namespace: %w", herr)}
			return // the thread stays locked and is retired
		}
		runtime.UnlockOSThread()
		done <- result{fds, err}
	}()
	r := <-done
	return r.fds, r.err
}

// socketpairLike makes a SOCK_SEQPACKET socketpair in the network
// namespace of the socket fd (the daemon's own when it cannot tell or
// enter it).
func (sd *sockDiag) socketpairLike(fd int) ([2]int, error) {
	pair := func() ([]int, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socketpair: %w", err)
		}
		return fds[:], nil
	}
	var fds []int
	ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err == nil {
		defer unix.Close(ns)
	}
	if id, idErr := nsIDOf(ns); err != nil || idErr != nil || id == sd.home.id {
		fds, err = pair()
	} else {
		fds, err = inNetNS(ns, sd.self, pair)
	}
	if err != nil {
		return [2]int{-1, -1}, err
	}
	return [2]int{fds[0], fds[1]}, nil
}

// peer asks for the peer of the socket with inode own in the socket's
// namespace.
func (ds *diagSock) peer(own uint64) (uint64, error) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	ds.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+unixDiagReqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], ds.seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(r[4:], 0xffffffff) // all states
	binary.NativeEndian.PutUint32(r[8:], uint32(own))
	binary.NativeEndian.PutUint32(r[12:], udiagShowPeer)
	binary.NativeEndian.PutUint32(r[16:], 0xffffffff) // no cookie
	binary.NativeEndian.PutUint32(r[20:], 0xffffffff)
	if err := unix.Sendto(ds.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	// The kernel answers within sendto: the reply is already queued, and
	// waiting for it must not hold a thread if it is not.
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(ds.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return 0, fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != ds.seq {
				continue // a reply to an earlier request that failed midway
			}
			return parsePeer(m, own)
		}
	}
}

func parsePeer(m syscall.NetlinkMessage, own uint64) (uint64, error) {
	if m.Header.Type == syscall.NLMSG_ERROR {
		if len(m.Data) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return 0, fmt.Errorf("sock_diag of socket inode %d: %w", own, unix.Errno(-e))
			}
		}
		return 0, fmt.Errorf("sock_diag of socket inode %d: empty error", own)
	}
	if len(m.Data) < unixDiagMsgLen {
		return 0, fmt.Errorf("sock_diag of socket inode %d: short reply", own)
	}
	attrs := m.Data[unixDiagMsgLen:]
	for len(attrs) >= 4 {
		alen := int(binary.NativeEndian.Uint16(attrs[0:]))
		atype := binary.NativeEndian.Uint16(attrs[2:])
		if alen < 4 || alen > len(attrs) {
			break
		}
		if atype == unixDiagPeer && alen >= 8 {
			return uint64(binary.NativeEndian.Uint32(attrs[4:])), nil
		}
		attrs = attrs[min((alen+3)&^3, len(attrs)):]
	}
	return 0, fmt.Errorf("sock_diag: socket inode %d has no peer: %w", own, syscall.ECONNRESET)
}
