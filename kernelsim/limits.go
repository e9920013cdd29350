package kernelsim

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"syscall"

	"drmcr/kernelsim/uapi"
)

// Limits bound what one user (uid) may hold in the kernel, the way a
// cgroup does on Linux: dmem.max bounds a group's device memory in each
// region, and file limits bound its open files. A zero field means no
// limit. kernelsimd sets them from its flags; a Kernel made without them
// limits nobody.
type Limits struct {
	// Conns is the most render-node connections (drm files) one uid may
	// have open.
	Conns int
	// DmaBufs is the most dma-bufs one uid's exports may keep alive.
	DmaBufs int
	// BOMemory is the most BO memory one uid may hold in each memory
	// region (a device's VRAM or GTT), like dmem.max.
	BOMemory MemLimit
	// Waits is the most requests one uid may have waiting in the kernel
	// at once (a fence or syncobj wait, a submit to a paused context): each
	// holds a goroutine of the daemon while it waits, as each holds a
	// thread of its caller on Linux. The request over the limit fails with
	// EAGAIN instead of waiting.
	Waits int
	// FDs is the most file descriptors the daemon holds for the objects
	// of all limited users together (a connection holds one, a dma-buf
	// two, a BO a client mapped one), so that they cannot use up the
	// daemon's descriptors and lock out the exempt users.
	FDs int
	// Exempt users are not limited (kernelsimd: root and its own user).
	Exempt []uint32
}

// MemLimit is a memory limit per region: a byte count, or a percentage of
// the region's size. The zero value is no limit.
type MemLimit struct {
	Bytes   uint64
	Percent int // 1..100, used when Bytes is 0
}

func (m MemLimit) String() string {
	switch {
	case m.Bytes > 0:
		return fmt.Sprint(m.Bytes)
	case m.Percent > 0:
		return fmt.Sprintf("%d%%", m.Percent)
	}
	return "none"
}

// of returns the limit in a region of size bytes; 0 means none.
func (m MemLimit) of(size uint64) uint64 {
	if m.Bytes > 0 {
		return m.Bytes
	}
	if m.Percent > 0 {
		hi, lo := bits.Mul64(size, uint64(min(m.Percent, 100)))
		q, _ := bits.Div64(hi, lo, 100)
		return max(q, 1)
	}
	return 0
}

// Flags of kernelsimd that set each limit, named in refusals so that the
// user knows what to change.
const (
	FlagUIDMaxConns    = "-uid-max-conns"
	FlagUIDMaxDmaBufs  = "-uid-max-dmabufs"
	FlagUIDMaxBOMemory = "-uid-max-bo-memory"
	FlagReservedFDs    = "-reserved-fds"
	FlagUIDMaxWaits    = "-uid-max-waits"
)

// accounting charges users' objects against Limits. Its lock is a leaf:
// it is taken under Kernel.mu (BOs, dma-bufs) and alone (connections).
type accounting struct {
	lim    Limits
	exempt map[uint32]bool
	log    *rateLog

	mu    sync.Mutex
	users map[uint32]*usage
	fds   int // descriptors held for limited users
}

type usage struct {
	conns, dmabufs, waits int
	bo                    map[region]uint64
}

// region is a memory region in the sense of dmem: one domain of one device.
type region struct {
	minor  uint32
	domain uapi.Domain
}

func newAccounting(lim Limits, log *rateLog) *accounting {
	a := &accounting{lim: lim, exempt: map[uint32]bool{}, log: log, users: map[uint32]*usage{}}
	for _, uid := range lim.Exempt {
		a.exempt[uid] = true
	}
	return a
}

// user returns uid's usage. Called with a.mu held.
func (a *accounting) user(uid uint32) *usage {
	u, ok := a.users[uid]
	if !ok {
		u = &usage{bo: map[region]uint64{}}
		a.users[uid] = u
	}
	return u
}

// drop forgets a user who holds nothing. Called with a.mu held.
func (a *accounting) drop(uid uint32) {
	if u := a.users[uid]; u != nil && u.conns == 0 && u.dmabufs == 0 && u.waits == 0 && len(u.bo) == 0 {
		delete(a.users, uid)
	}
}

// logged logs the refusal of what to who, and returns err.
func (a *accounting) logged(who Cred, what string, err error) error {
	a.log.Printf("refused %s to pid %d uid %d: %v", what, who.PID, who.UID, err)
	return err
}

// chargeConn accounts a render-node connection of who, or refuses it (the
// server logs the refusal of the connection).
func (a *accounting) chargeConn(who Cred) error {
	if a.exempt[who.UID] {
		return nil
	}
	a.mu.Lock()
	u := a.user(who.UID)
	if a.lim.Conns > 0 && u.conns >= a.lim.Conns {
		n := u.conns
		a.drop(who.UID)
		a.mu.Unlock()
		return errnof(syscall.EMFILE, "uid %d has %d render-node connections open, its limit (kernelsimd %s)", who.UID, n, FlagUIDMaxConns)
	}
	if !a.takeFDs(1) {
		held := a.fds
		a.drop(who.UID)
		a.mu.Unlock()
		return a.refuseFDs(held)
	}
	u.conns++
	a.mu.Unlock()
	return nil
}

func (a *accounting) unchargeConn(uid uint32) {
	if a.exempt[uid] {
		return
	}
	a.mu.Lock()
	a.user(uid).conns--
	a.fds--
	a.drop(uid)
	a.mu.Unlock()
}

// chargeWait accounts a request of who that is about to wait, or refuses
// it.
func (a *accounting) chargeWait(who Cred) error {
	if a.exempt[who.UID] {
		return nil
	}
	a.mu.Lock()
	u := a.user(who.UID)
	if a.lim.Waits > 0 && u.waits >= a.lim.Waits {
		n := u.waits
		a.drop(who.UID)
		a.mu.Unlock()
		return a.logged(who, "a waiting request", errnof(syscall.EAGAIN,
			"uid %d has %d requests waiting in kernelsimd, its limit (kernelsimd %s)", who.UID, n, FlagUIDMaxWaits))
	}
	u.waits++
	a.mu.Unlock()
	return nil
}

func (a *accounting) unchargeWait(uid uint32) {
	if a.exempt[uid] {
		return
	}
	a.mu.Lock()
	a.user(uid).waits--
	a.drop(uid)
	a.mu.Unlock()
}

// takeFDs takes n descriptors of the limited users' share, reporting
// whether they were free. Called with a.mu held.
func (a *accounting) takeFDs(n int) bool {
	if a.lim.FDs > 0 && a.fds+n > a.lim.FDs {
		return false
	}
	a.fds += n
	return true
}

func (a *accounting) refuseFDs(held int) error {
	return errnof(syscall.ENFILE,
		"users other than root and kernelsimd's own hold %d of the %d file descriptors kernelsimd lets them have (kernelsimd %s keeps the rest)", held, a.lim.FDs, FlagReservedFDs)
}

// chargeDmaBuf accounts an exported dma-buf of who (two descriptors in the
// daemon), or refuses it.
func (a *accounting) chargeDmaBuf(who Cred) error {
	if a.exempt[who.UID] {
		return nil
	}
	a.mu.Lock()
	u := a.user(who.UID)
	if a.lim.DmaBufs > 0 && u.dmabufs >= a.lim.DmaBufs {
		n := u.dmabufs
		a.drop(who.UID)
		a.mu.Unlock()
		return a.logged(who, "a dma-buf export", errnof(syscall.EMFILE,
			"uid %d has %d dma-bufs exported, its limit (kernelsimd %s)", who.UID, n, FlagUIDMaxDmaBufs))
	}
	if !a.takeFDs(2) {
		held := a.fds
		a.drop(who.UID)
		a.mu.Unlock()
		return a.logged(who, "a dma-buf export", a.refuseFDs(held))
	}
	u.dmabufs++
	a.mu.Unlock()
	return nil
}

func (a *accounting) unchargeDmaBuf(uid uint32) {
	if a.exempt[uid] {
		return
	}
	a.mu.Lock()
	a.user(uid).dmabufs--
	a.fds -= 2
	a.drop(uid)
	a.mu.Unlock()
}

// chargeMemfd accounts the descriptor the daemon keeps for a BO's memory
// once a client maps it, or refuses it.
func (a *accounting) chargeMemfd(who Cred) error {
	if a.exempt[who.UID] {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.takeFDs(1) {
		return a.logged(who, "a BO mapping", a.refuseFDs(a.fds))
	}
	return nil
}

func (a *accounting) unchargeMemfd(uid uint32) {
	if a.exempt[uid] {
		return
	}
	a.mu.Lock()
	a.fds--
	a.mu.Unlock()
}

// chargeBO accounts size bytes of who in a region of regionSize bytes, or
// refuses them, as dmem's try_charge does.
func (a *accounting) chargeBO(who Cred, r region, regionSize, size uint64) error {
	if a.exempt[who.UID] {
		return nil
	}
	limit := a.lim.BOMemory.of(regionSize)
	a.mu.Lock()
	u := a.user(who.UID)
	used := u.bo[r]
	if limit > 0 && (size > limit || used > limit-size) {
		a.drop(who.UID)
		a.mu.Unlock()
		return a.logged(who, "a BO", errnof(syscall.ENOMEM,
			"uid %d holds %d bytes of %v on renderD%d: a BO of %d bytes would exceed its limit of %d bytes (kernelsimd %s %v)",
			who.UID, used, r.domain, r.minor, size, limit, FlagUIDMaxBOMemory, a.lim.BOMemory))
	}
	u.bo[r] = used + size
	a.mu.Unlock()
	return nil
}

func (a *accounting) unchargeBO(uid uint32, r region, size uint64) {
	if a.exempt[uid] {
		return
	}
	a.mu.Lock()
	u := a.user(uid)
	if u.bo[r] -= size; u.bo[r] == 0 {
		delete(u.bo, r)
	}
	a.drop(uid)
	a.mu.Unlock()
}

// UserUsage is what one user holds, as accounted against Limits.
type UserUsage struct {
	UID      uint32 `json:"uid"`
	Conns    int    `json:"connections"`
	DmaBufs  int    `json:"dmabufs"`
	Waits    int    `json:"waiting_requests"`
	BOMemory uint64 `json:"bo_memory"` // over all regions
}

// Usage returns what each limited user holds, by uid.
func (k *Kernel) Usage() []UserUsage {
	a := k.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]UserUsage, 0, len(a.users))
	for uid, u := range a.users {
		uu := UserUsage{UID: uid, Conns: u.conns, DmaBufs: u.dmabufs, Waits: u.waits}
		for _, n := range u.bo {
			uu.BOMemory += n
		}
		out = append(out, uu)
	}
	slices.SortFunc(out, func(a, b UserUsage) int { return cmp.Compare(a.UID, b.UID) })
	return out
}
