package kernelsim

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"

	"drmcr/kernelsim/uapi"
)

// The kernel's checks of a restore request: every field of the objects it
// would create (devices, BOs, GEM handles, PRIME entries, VA mappings,
// dma-bufs, reply channels, the requests and replies caught in flight,
// where the contents are) is checked before anything is created. They are pure functions of
// the request and a table of devices: SESSION_OPEN runs them against the
// kernel's own devices, and the plugin and drmcrit run them offline
// against the devices the dump recorded, so that an image the kernel
// would refuse is refused before criu forks anything.
//
// The driver blob's contents (contexts, jobs, syncobjs) are the driver
// sub-plugin's to check (see amdgpu.CheckFile); here it only has to
// decode for its device, and the claim refuses what does not restore.

// RestoreObject is what a RestoreProblem is about.
type RestoreObject int

const (
	ObjDevice   RestoreObject = iota // ID: the minor
	ObjBO                            // ID: the dump-time BO id
	ObjFile                          // ID: the drm file's dump-time inode
	ObjDmaBuf                        // ID: the dma-buf's dump-time inode
	ObjPages                         // ID: the pages file's index
	ObjChannel                       // ID: the reply channel's dump-time inode
	ObjContents                      // ID: 0; the request's fields about all contents
)

// RestoreProblem is one reason the kernel refuses a restore request.
type RestoreProblem struct {
	Object RestoreObject
	ID     uint64
	// Field is the field of the object's message: for a file, a path
	// into its FileCheckpoint ("mappings[2].va"); for a pages file, the
	// chunk.
	Field string
	Msg   string
	// Errno is what SESSION_OPEN fails with when this is its first
	// problem: ENODEV for a device the kernel lacks, ENOMEM for BOs more
	// than a device holds, EINVAL for anything else.
	Errno syscall.Errno
}

func (p RestoreProblem) Error() string {
	var what string
	switch p.Object {
	case ObjDevice:
		what = fmt.Sprintf("device renderD%d", p.ID)
	case ObjBO:
		what = fmt.Sprintf("BO %d", p.ID)
	case ObjFile:
		what = fmt.Sprintf("drm file inode %d", p.ID)
	case ObjDmaBuf:
		what = fmt.Sprintf("dma-buf inode %d", p.ID)
	case ObjPages:
		what = fmt.Sprintf("pages file %d", p.ID)
	case ObjChannel:
		what = fmt.Sprintf("reply channel inode %d", p.ID)
	case ObjContents:
		what = "contents"
	}
	if p.Field != "" {
		what += " " + p.Field
	}
	return what + ": " + p.Msg
}

// restoreChecker accumulates problems.
type restoreChecker struct {
	out []RestoreProblem
}

func (c *restoreChecker) add(obj RestoreObject, id uint64, field, format string, args ...any) {
	c.addErrno(syscall.EINVAL, obj, id, field, format, args...)
}

func (c *restoreChecker) addErrno(errno syscall.Errno, obj RestoreObject, id uint64, field, format string, args ...any) {
	c.out = append(c.out, RestoreProblem{Object: obj, ID: id, Field: field, Msg: fmt.Sprintf(format, args...), Errno: errno})
}

// CheckRestore checks a restore request against a kernel's devices and
// returns every problem, creating nothing. A device's VRAM and GTT sizes
// of 0 mean unknown (a check offline, against the devices a dump
// recorded): the BOs' total is then not checked against them. Its memory
// grows with the number of objects of the request, not with the values of
// their ids.
func CheckRestore(req *uapi.SessionOpenRequest, devices []*uapi.DeviceInfo) []RestoreProblem {
	c := &restoreChecker{}
	devs := map[uint32]*uapi.DeviceInfo{}
	for _, d := range devices {
		if _, dup := devs[d.Minor]; dup {
			c.add(ObjDevice, uint64(d.Minor), "", "listed twice")
		}
		if _, ok := drivers[d.Driver]; !ok {
			c.add(ObjDevice, uint64(d.Minor), "driver", "%q is not a driver of this kernel (%s)", d.Driver, strings.Join(Drivers(), ", "))
			continue
		}
		devs[d.Minor] = d
	}
	minors := func() string {
		var ms []string
		for _, d := range devices {
			ms = append(ms, fmt.Sprintf("renderD%d %s", d.Minor, d.Driver))
		}
		if ms == nil {
			return "none"
		}
		return strings.Join(ms, ", ")
	}
	device := func(obj RestoreObject, id uint64, field string, minor uint32) (*uapi.DeviceInfo, *driver) {
		d, ok := devs[minor]
		if !ok {
			c.addErrno(syscall.ENODEV, obj, id, field, "renderD%d is not one of the devices (%s)", minor, minors())
			return nil, nil
		}
		drv, ok := lookupDriver(d.Driver)
		if !ok {
			c.addErrno(syscall.ENODEV, obj, id, field, "renderD%d has driver %q, which this kernel does not have", minor, d.Driver)
			return nil, nil
		}
		return d, &drv
	}

	bos := c.checkBOs(req, device)
	files := map[uint64]bool{}
	for i, rf := range req.Files {
		c.checkFile(i, rf, files, bos, device)
	}
	channels := map[uint64]bool{}
	for i, rc := range req.Channels {
		id := rc.Inode
		switch {
		case rc.Inode == 0:
			c.add(ObjChannel, 0, fmt.Sprintf("(channel %d of the request)", i), "inode 0 is no socket")
		case channels[rc.Inode] || files[rc.Inode]:
			c.add(ObjChannel, id, "", "listed twice")
		}
		channels[rc.Inode] = true
		if !files[rc.FileInode] {
			c.add(ObjChannel, id, "file_inode", "%d is not a drm file of the checkpoint", rc.FileInode)
		}
		if rc.Io != nil {
			c.checkIO(ObjChannel, id, rc.Io, bos)
		}
	}
	dmabufs := map[uint64]bool{}
	for i, rd := range req.Dmabufs {
		id := rd.Inode
		switch {
		case rd.Inode == 0:
			c.add(ObjDmaBuf, 0, fmt.Sprintf("(dma-buf %d of the request)", i), "inode 0 is no dma-buf")
		case dmabufs[rd.Inode]:
			c.add(ObjDmaBuf, id, "", "listed twice")
		}
		dmabufs[rd.Inode] = true
		bo, ok := bos[rd.BoId]
		switch {
		case !ok:
			c.add(ObjDmaBuf, id, "bo_id", "BO %d is not a BO of the checkpoint", rd.BoId)
		case bo.DmabufInode != rd.Inode:
			c.add(ObjDmaBuf, id, "bo_id", "BO %d was exported as dma-buf inode %d, not this one", rd.BoId, bo.DmabufInode)
		}
	}
	c.checkContents(req, bos)
	return c.out
}

// checkBOs checks the BO records and returns them by id.
func (c *restoreChecker) checkBOs(req *uapi.SessionOpenRequest, device func(RestoreObject, uint64, string, uint32) (*uapi.DeviceInfo, *driver)) map[uint64]*uapi.BoState {
	type region struct {
		minor  uint32
		domain uapi.Domain
	}
	bos := make(map[uint64]*uapi.BoState, len(req.Bos))
	exported := map[uint64]uint64{}
	need := map[region]uint64{}
	for _, st := range req.Bos {
		id := st.BoId
		if id == 0 {
			c.add(ObjBO, 0, "bo_id", "0 is no BO id")
			continue
		}
		if _, dup := bos[id]; dup {
			c.add(ObjBO, id, "", "listed twice")
			continue
		}
		bos[id] = st
		if st.DmabufInode != 0 {
			if other, dup := exported[st.DmabufInode]; dup {
				c.add(ObjBO, id, "dmabuf_inode", "%d, the dma-buf of BO %d too: a dma-buf has one BO", st.DmabufInode, other)
			}
			exported[st.DmabufInode] = id
		}
		d, drv := device(ObjBO, id, "minor", st.Minor)
		if d == nil {
			continue
		}
		if _, err := drv.validateCreate(st.Size, st.Domain, st.Flags, st.Alignment); err != nil {
			c.add(ObjBO, id, "", "%s cannot create it: %s", d.Driver, errMsg(err))
			continue
		}
		r := region{st.Minor, st.Domain}
		need[r] += st.Size
		limit := d.VramSize
		if st.Domain == uapi.Domain_DOMAIN_GTT {
			limit = d.GttSize
		}
		if limit != 0 && need[r] > limit && need[r]-st.Size <= limit {
			c.addErrno(syscall.ENOMEM, ObjBO, id, "size", "the checkpoint's %v BOs on renderD%d need more than its %d bytes", st.Domain, st.Minor, limit)
		}
	}
	return bos
}

// errMsg is an error's text without its errno.
func errMsg(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Msg
	}
	return err.Error()
}

// checkFile checks one drm file: its device, handles, the copies of its
// BOs' records, VA mappings, that its driver blob decodes, and the
// traffic caught in flight.
func (c *restoreChecker) checkFile(i int, rf *uapi.RestoreFile, files map[uint64]bool, bos map[uint64]*uapi.BoState, device func(RestoreObject, uint64, string, uint32) (*uapi.DeviceInfo, *driver)) {
	id := rf.Inode
	add := func(field, format string, args ...any) { c.add(ObjFile, id, field, format, args...) }
	switch {
	case id == 0:
		c.add(ObjFile, 0, fmt.Sprintf("(file %d of the request)", i), "inode 0 is no drm file")
	case files[id]:
		add("", "listed twice")
		return
	}
	files[id] = true
	st := rf.State
	if st == nil {
		add("", "no state")
		return
	}
	d, drv := device(ObjFile, id, "minor", st.Minor)
	if d != nil && st.Driver != d.Driver {
		add("driver", "%q, but renderD%d is %s", st.Driver, st.Minor, d.Driver)
	}

	// The file's copies of its BOs' records agree with the records.
	// Field names are made only for problems: files list every BO.
	listed := make(map[uint64]bool, len(st.Bos))
	for j, b := range st.Bos {
		rec, ok := bos[b.BoId]
		switch {
		case listed[b.BoId]:
			add(fmt.Sprintf("bos[%d]", j), "BO %d listed twice", b.BoId)
		case !ok:
			add(fmt.Sprintf("bos[%d]", j), "BO %d is not a BO of the checkpoint", b.BoId)
		case !sameBO(rec, b):
			add(fmt.Sprintf("bos[%d]", j), "BO %d (%s) differs from its record (%s)", b.BoId, boDesc(b), boDesc(rec))
		}
		listed[b.BoId] = true
	}

	// GEM handles: ids the kernel's idr takes, each once, on a BO of the
	// file's.
	handles := make(map[uint32]*uapi.BoState, len(st.Handles))
	for j, h := range st.Handles {
		f := func() string { return fmt.Sprintf("handles[%d]", j) }
		if h.Handle == 0 || h.Handle > uapi.MaxID {
			add(f()+".handle", "%d is not a GEM handle (1 to %d)", h.Handle, uapi.MaxID)
			continue
		}
		if _, dup := handles[h.Handle]; dup {
			add(f()+".handle", "%d is used twice", h.Handle)
			continue
		}
		bo, ok := bos[h.BoId]
		switch {
		case !ok:
			add(f()+".bo_id", "BO %d is not a BO of the checkpoint", h.BoId)
			continue
		case !listed[h.BoId]:
			add(f()+".bo_id", "BO %d is not in the file's bos", h.BoId)
		}
		if h.Prime && bo.DmabufInode == 0 {
			add(f()+".prime", "handle %d is in the PRIME table, but BO %d was never exported", h.Handle, h.BoId)
		}
		if h.Attachment {
			// drm_gem_prime_fd_to_handle: an import of the file's own
			// device's dma-buf is the BO itself, of another's an
			// attachment, which is in the PRIME table.
			switch {
			case !h.Prime:
				add(f()+".attachment", "handle %d is an import attachment but not in the PRIME table", h.Handle)
			case bo.Minor == st.Minor:
				add(f()+".attachment", "handle %d: BO %d is of the file's own device renderD%d, whose import is the BO itself, not an attachment", h.Handle, h.BoId, st.Minor)
			}
		}
		handles[h.Handle] = bo
	}

	if drv != nil {
		c.checkMappings(id, st.Mappings, handles, drv)
		if err := drv.impl.CheckBlob(st.DriverPrivate, d.Minor); err != nil {
			add("driver_private", "%v", err)
		}
	}
	if io := st.Io; io != nil {
		c.checkIO(ObjFile, id, io, bos)
	}
}

// sameBO compares two records of a BO field by field (proto.Equal
// reflects, and files list every one of their BOs).
func sameBO(a, b *uapi.BoState) bool {
	return a.BoId == b.BoId && a.Size == b.Size && a.Domain == b.Domain && a.Flags == b.Flags &&
		a.Alignment == b.Alignment && a.DmabufInode == b.DmabufInode && a.Minor == b.Minor
}

func boDesc(b *uapi.BoState) string {
	s := fmt.Sprintf("%d bytes %v flags %#x alignment %d on renderD%d", b.Size, b.Domain, b.Flags, b.Alignment, b.Minor)
	if b.DmabufInode != 0 {
		s += fmt.Sprintf(", dma-buf inode %d", b.DmabufInode)
	}
	return s
}

// checkMappings checks VA mappings as VM_MAP would: a handle of the file,
// page-aligned and non-empty, inside the BO and the address space, and no
// two overlapping.
func (c *restoreChecker) checkMappings(id uint64, maps []*uapi.VaMapping, handles map[uint32]*uapi.BoState, drv *driver) {
	add := func(field, format string, args ...any) { c.add(ObjFile, id, field, format, args...) }
	page := uint64(1) << drv.pageShift
	type span struct {
		i       int
		va, end uint64
	}
	var spans []span
	for j, m := range maps {
		f := func() string { return fmt.Sprintf("mappings[%d]", j) }
		bo, ok := handles[m.Handle]
		if !ok {
			add(f()+".handle", "%d is not a handle of the file", m.Handle)
		}
		switch {
		case m.Size == 0:
			add(f()+".size", "0: an empty mapping")
		case m.Va%page != 0:
			add(f()+".va", "%#x is not aligned to the %d-byte page", m.Va, page)
		case m.BoOffset%page != 0:
			add(f()+".bo_offset", "%#x is not aligned to the %d-byte page", m.BoOffset, page)
		case m.Size%page != 0:
			add(f()+".size", "%#x is not a multiple of the %d-byte page", m.Size, page)
		case ok && m.BoOffset >= bo.Size:
			add(f()+".bo_offset", "%#x is past the end of BO %d (%#x bytes)", m.BoOffset, bo.BoId, bo.Size)
		case ok && m.Size > bo.Size-m.BoOffset:
			add(f()+".size", "%#x bytes from offset %#x do not fit in BO %d (%#x bytes)", m.Size, m.BoOffset, bo.BoId, bo.Size)
		case m.Va > drv.vaMax || m.Size > drv.vaMax-m.Va:
			add(f(), "[%#x, +%#x) is outside the %s address space (%#x bytes)", m.Va, m.Size, drv.name, drv.vaMax)
		}
		if m.Size != 0 && m.Va+m.Size > m.Va { // a wrap is reported above
			spans = append(spans, span{j, m.Va, m.Va + m.Size})
		}
	}
	sort.Slice(spans, func(a, b int) bool { return spans[a].va < spans[b].va })
	var reach span // of those before, the one reaching furthest
	for k, s := range spans {
		if k > 0 && s.va < reach.end {
			add(fmt.Sprintf("mappings[%d]", s.i), "[%#x, %#x) overlaps mappings[%d] [%#x, %#x)", s.va, s.end, reach.i, reach.va, reach.end)
		}
		if k == 0 || s.end > reach.end {
			reach = s
		}
	}
}

// checkIO checks the traffic a checkpoint caught in flight on a
// connection (a drm file's own socket, obj ObjFile, or a reply channel):
// the requests are replayed into the restored file and the replies
// re-sent to the task, so each must be a packet this kernel would have
// read or sent, and a reply carrying a dma-buf must name the BO exported
// as it. Format 3 images hold at most one of each in the single fields;
// format 4 lists them; an image holds one form or the other.
func (c *restoreChecker) checkIO(obj RestoreObject, id uint64, io *uapi.PendingIO, bos map[uint64]*uapi.BoState) {
	add := func(field, format string, args ...any) { c.add(obj, id, field, format, args...) }
	single := len(io.Request) > 0 || len(io.UnreadReply) > 0 || io.UnreadReplyDmabufInode != 0 || io.UnreadReplyBo != nil
	if single && (len(io.Requests) > 0 || len(io.UnreadReplies) > 0) {
		add("io", "holds both the single request and reply of format 3 and the lists of format 4")
	}
	if len(io.Request) > 0 {
		if err := CheckRequestPacket(io.Request); err != nil {
			add("io.request", "%v", err)
		}
	}
	for i, r := range io.Requests {
		if err := CheckRequestPacket(r.GetPacket()); err != nil {
			add(fmt.Sprintf("io.requests[%d]", i), "%v", err)
		}
	}
	if len(io.UnreadReply) > 0 || io.UnreadReplyDmabufInode != 0 || io.UnreadReplyBo != nil {
		c.checkReply(add, "io.unread_reply", "io.unread_reply_dmabuf_inode", "io.unread_reply_bo",
			io.UnreadReply, io.UnreadReplyDmabufInode, io.UnreadReplyBo, bos)
	}
	for i, r := range io.UnreadReplies {
		f := fmt.Sprintf("io.unread_replies[%d]", i)
		c.checkReply(add, f+".packet", f+".dmabuf_inode", f+".bo", r.GetPacket(), r.GetDmabufInode(), r.GetBo(), bos)
	}
}

// checkReply checks one unread reply: its packet, and the dma-buf (inode
// ino of BO bo) it carries, if any.
func (c *restoreChecker) checkReply(add func(field, format string, args ...any), fPkt, fIno, fBO string,
	pkt []byte, ino uint64, bo *uapi.BoState, bos map[uint64]*uapi.BoState) {
	replyOp := uapi.Op(0)
	if len(pkt) > 0 {
		op, err := CheckReplyPacket(pkt)
		if err != nil {
			add(fPkt, "%v", err)
		}
		replyOp = op
	}
	switch {
	case ino == 0 && bo != nil:
		add(fBO, "set, but the reply carries no dma-buf")
	case len(pkt) == 0 && ino != 0:
		add(fIno, "%d, but there is no unread reply to carry it", ino)
	case len(pkt) == 0:
		add(fPkt, "empty: no reply to send again")
	case ino == 0:
	case replyOp != 0 && replyOp != uapi.OpPrimeHandleToFd:
		add(fIno, "%d, but a %v reply carries no dma-buf", ino, replyOp)
	case bo == nil:
		add(fBO, "missing: the reply carries dma-buf inode %d, of no known BO", ino)
	default:
		rec, ok := bos[bo.BoId]
		switch {
		case !ok:
			add(fBO, "BO %d is not a BO of the checkpoint", bo.BoId)
		case rec.DmabufInode != ino:
			add(fIno, "%d, but BO %d was exported as dma-buf inode %d", ino, bo.BoId, rec.DmabufInode)
		}
	}
}

// checkContents checks where the BOs' contents are: every BO once, in a
// pages file of the request, its every byte covered by a chunk with a
// checksum; chunks in file order, non-empty, at most a chunk's size and
// not overlapping; checksums of the request's algorithm. A mapped BO's
// contents (criu restores them) have chunks of their own, relative to the
// BO, that tile it.
func (c *restoreChecker) checkContents(req *uapi.SessionOpenRequest, bos map[uint64]*uapi.BoState) {
	alg, err := uapi.ParseChecksum(req.Checksum)
	if err != nil {
		c.add(ObjContents, 0, "checksum", "%v", err)
	}
	type extent struct{ off, end uint64 }
	files := make([][]extent, len(req.PagesFiles))
	for i, pf := range req.PagesFiles {
		var end uint64
		for j, ch := range pf.Chunks {
			where := fmt.Sprintf("%s chunk [%d, %d)", pf.Name, ch.Offset, ch.Offset+ch.Length)
			switch {
			case ch.Length == 0 || ch.Length > uapi.MaxContentChunk:
				c.add(ObjPages, uint64(i), where, "%d bytes: a chunk has 1 to %d", ch.Length, uapi.MaxContentChunk)
				continue
			case ch.Offset+ch.Length < ch.Offset:
				c.add(ObjPages, uint64(i), where, "overflows the file offset")
				continue
			case j > 0 && ch.Offset < end:
				c.add(ObjPages, uint64(i), where, "overlaps or precedes the chunk before it, which ends at %d", end)
				continue
			case alg != 0 && len(ch.Checksum) != alg.Size():
				c.add(ObjPages, uint64(i), where, "a checksum of %d bytes, want %d (%v): its bytes could not be checked", len(ch.Checksum), alg.Size(), alg)
			}
			end = ch.Offset + ch.Length
			files[i] = append(files[i], extent{ch.Offset, end})
		}
	}
	type placement struct{ off, end, id uint64 }
	at := make([][]placement, len(req.PagesFiles))
	placed := make(map[uint64]bool, len(req.Contents))
	for _, bc := range req.Contents {
		st, ok := bos[bc.BoId]
		switch {
		case !ok:
			c.add(ObjBO, bc.BoId, "contents", "of a BO that is not in the checkpoint")
			continue
		case placed[bc.BoId]:
			c.add(ObjBO, bc.BoId, "contents", "listed twice")
			continue
		case bc.Mapped:
			// criu restores the memory; its chunks must tile the BO.
			placed[bc.BoId] = true
			if msg := mappedChunksProblem(st, bc.Chunks, alg); msg != "" {
				c.add(ObjBO, bc.BoId, "contents.chunks", "%s", msg)
			}
			continue
		case len(bc.Chunks) > 0:
			c.add(ObjBO, bc.BoId, "contents.chunks", "set, but the BO's contents are in a pages file (mapped is false)")
			continue
		case int(bc.PagesFile) >= len(req.PagesFiles):
			c.add(ObjBO, bc.BoId, "pages_file", "%d, there are %d pages file(s)", bc.PagesFile, len(req.PagesFiles))
			continue
		case bc.Offset+st.Size < bc.Offset:
			c.add(ObjBO, bc.BoId, "offset", "%d + %d bytes overflows", bc.Offset, st.Size)
			continue
		}
		placed[bc.BoId] = true
		at[bc.PagesFile] = append(at[bc.PagesFile], placement{bc.Offset, bc.Offset + st.Size, bc.BoId})
		cs := files[bc.PagesFile]
		pos, end := bc.Offset, bc.Offset+st.Size
		k := sort.Search(len(cs), func(k int) bool { return cs[k].end > pos })
		for ; pos < end && k < len(cs) && cs[k].off <= pos; k++ {
			pos = cs[k].end
		}
		if pos < end {
			next := end
			if k < len(cs) {
				next = min(end, cs[k].off)
			}
			c.add(ObjBO, bc.BoId, "contents", "bytes [%d, %d) of its %d are covered by no checksummed chunk of %s", pos-bc.Offset, next-bc.Offset, st.Size, req.PagesFiles[bc.PagesFile].Name)
		}
	}
	// Each BO is saved once: no two share bytes of a pages file.
	for i, ps := range at {
		sort.Slice(ps, func(a, b int) bool { return ps[a].off < ps[b].off })
		var reach placement
		for k, p := range ps {
			if k > 0 && p.off < reach.end {
				c.add(ObjBO, p.id, "offset", "bytes [%d, %d) of %s are BO %d's too", p.off, min(p.end, reach.end), req.PagesFiles[i].Name, reach.id)
			}
			if k == 0 || p.end > reach.end {
				reach = p
			}
		}
	}
	ids := make([]uint64, 0, len(bos))
	for id := range bos {
		if !placed[id] {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		c.add(ObjBO, id, "contents", "not in any pages file")
	}
}

// mappedChunksProblem says what is wrong with the chunks of a mapped BO
// (relative to the BO: of that BO, tiling it in order, each of 1 to
// MaxContentChunk bytes with a checksum of alg, unless alg is 0: unknown,
// and said so), "" if nothing.
func mappedChunksProblem(st *uapi.BoState, chunks []*uapi.ContentChunk, alg uapi.Checksum) string {
	var pos uint64
	for i, ch := range chunks {
		switch {
		case ch.BoId != st.BoId:
			return fmt.Sprintf("chunk %d is of BO %d", i, ch.BoId)
		case ch.Offset != pos || ch.Length == 0 || ch.Length > uapi.MaxContentChunk || ch.Length > st.Size-pos:
			return fmt.Sprintf("chunk %d [%d, +%d) does not follow the one before (ending at %d) within the BO's %d bytes, in chunks of 1 to %d", i, ch.Offset, ch.Length, pos, st.Size, uapi.MaxContentChunk)
		case alg != 0 && len(ch.Checksum) != alg.Size():
			return fmt.Sprintf("chunk %d has a checksum of %d bytes, want %d (%v): its bytes could not be checked", i, len(ch.Checksum), alg.Size(), alg)
		}
		pos += ch.Length
	}
	if pos != st.Size {
		return fmt.Sprintf("bytes [%d, %d) of the BO are covered by no checksummed chunk", pos, st.Size)
	}
	return ""
}

// restoreRefusal turns the problems of a request into SESSION_OPEN's
// error: the first few, and how many there are.
func restoreRefusal(probs []RestoreProblem) error {
	const shown = 8
	var msgs []string
	for i, p := range probs {
		if i == shown {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(probs)-shown))
			break
		}
		msgs = append(msgs, p.Error())
	}
	return errnof(probs[0].Errno, "restore refused, %d problem(s): %s", len(probs), strings.Join(msgs, "; "))
}
