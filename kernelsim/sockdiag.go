package kernelsim

import (
	"encoding/binary"
	"fmt"
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

// peerInode returns the inode of the socket connected to fd, asking the
// kernel's sock_diag interface (as ss and CRIU do). This is how the daemon
// knows the client side of each render-node connection without the
// client's help.
func peerInode(fd int) (uint64, error) {
	own, err := sockIno(fd)
	if err != nil {
		return 0, err
	}
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(nl)

	req := make([]byte, unix.NLMSG_HDRLEN+unixDiagReqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], 1)
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(r[4:], 0xffffffff) // all states
	binary.NativeEndian.PutUint32(r[8:], uint32(own))
	binary.NativeEndian.PutUint32(r[12:], udiagShowPeer)
	binary.NativeEndian.PutUint32(r[16:], 0xffffffff) // no cookie
	binary.NativeEndian.PutUint32(r[20:], 0xffffffff)
	if err := unix.Sendto(nl, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(nl, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("sock_diag reply: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return 0, fmt.Errorf("sock_diag reply: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == syscall.NLMSG_ERROR {
			if len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return 0, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
				}
			}
			continue
		}
		if len(m.Data) < unixDiagMsgLen {
			continue
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
	}
	return 0, fmt.Errorf("sock_diag: no peer for socket inode %d", own)
}
