package drmcore

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"drmcr/images"
	"drmcr/internal/units"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/uapi"
)

// dumpState is the object graph of the checkpoint being written: every
// process and kernelsim file found, what has been dumped, and what refers
// to what.
type dumpState struct {
	procs   []*images.Process
	owner   map[uint64]int32                  // inode -> pid holding it
	ident   map[uint64]*uapi.IdentifiedObject // inode -> what it is
	paused  []uint64                          // file ids paused by us
	frozen  map[uint64]*uapi.FileCheckpoint   // checkpointed files, by id
	files   map[uint64]*images.DrmFile        // dumped, by inode
	chans   map[uint64]*images.DrmChannel     // reply channels dumped, by inode
	dmabufs map[uint64]*images.DmaBuf         // dumped, by inode
	bos     map[uint64]*images.Bo             // written, by BO id
	seals   []*images.ImageSeal               // of the images written
	minors  map[uint32]bool                   // devices of the files and BOs
	failed  error                             // first dump error
	// Every task criu paused (its pids), whose BO mappings are scanned
	// once the tree is frozen (mappings.go), and the BOs they map.
	pids        []int
	mapsScanned bool
	mapped      map[uint64]*uapi.BoState
	mappedBytes uint64
	// BO contents go into a few pages files, indexed in drm-bo-index.img
	// (all created with the first BO), each BO whole into the file with
	// the fewest bytes so far.
	pages    []*os.File
	pagesEnd []uint64
	index    *images.IndexWriter
}

func newDumpState() *dumpState {
	return &dumpState{
		owner: map[uint64]int32{}, ident: map[uint64]*uapi.IdentifiedObject{}, frozen: map[uint64]*uapi.FileCheckpoint{},
		files: map[uint64]*images.DrmFile{}, chans: map[uint64]*images.DrmChannel{},
		dmabufs: map[uint64]*images.DmaBuf{}, bos: map[uint64]*images.Bo{},
		minors: map[uint32]bool{},
		mapped: map[uint64]*uapi.BoState{},
	}
}

// PauseDevices finds the task's kernelsim files and pauses their contexts:
// new submissions wait, queued and running jobs drain, long-running jobs
// are preempted. It fails, naming the process, context and what it waits
// on, if that takes longer than the pause timeout. A task that holds no
// kernelsim file is not ours (ErrNotMine).
//
// pid is criu's: in criu's pid namespace (the host's). The images record
// the pid inside the task's own namespace, as criu's images do.
func (p *Plugin) PauseDevices(pid int) error {
	if p.ctl == nil {
		return ErrNotMine
	}
	// Any task may map a BO, with or without a kernelsim file: its
	// mappings are read once the tree is frozen.
	if !slices.Contains(p.dump.pids, pid) {
		p.dump.pids = append(p.dump.pids, pid)
	}
	inodes, err := socketInodes(pid)
	if err != nil {
		return err
	}
	if len(inodes) == 0 {
		return ErrNotMine
	}
	objs, err := p.ctl.Identify(inodes)
	if err != nil {
		return fmt.Errorf("identify sockets of pid %d: %w", pid, err)
	}
	var mine []*uapi.IdentifiedObject
	for _, o := range objs {
		if o.Kind != uapi.ObjectKind_OBJECT_UNKNOWN {
			mine = append(mine, o)
		}
	}
	if len(mine) == 0 {
		return ErrNotMine
	}
	vpid, err := nsPid(pid)
	if err != nil {
		return err
	}
	proc := &images.Process{Pid: vpid, Comm: comm(pid)}
	if proc.RuntimeDir, err = runtimeDirSeenBy(pid, p.cfg.RuntimeDir); err != nil {
		return err
	}
	name := fmt.Sprintf("pid %d (%s)", vpid, proc.Comm)
	if int(vpid) != pid {
		name = fmt.Sprintf("pid %d (%s, host pid %d)", vpid, proc.Comm, pid)
	}
	var files []uint64
	for _, o := range mine {
		proc.Inodes = append(proc.Inodes, o.Inode)
		p.dump.ident[o.Inode] = o
		if _, seen := p.dump.owner[o.Inode]; !seen {
			p.dump.owner[o.Inode] = vpid
		}
		isFile := o.Kind == uapi.ObjectKind_OBJECT_DRM_FILE || o.Kind == uapi.ObjectKind_OBJECT_DRM_CHANNEL
		if isFile && !slices.Contains(p.dump.paused, o.FileId) && !slices.Contains(files, o.FileId) {
			files = append(files, o.FileId)
		}
	}
	p.dump.procs = append(p.dump.procs, proc)
	if len(files) == 0 {
		kinds := map[uapi.ObjectKind]int{}
		for _, o := range mine {
			kinds[o.Kind]++
		}
		p.log.Infof("%s: %d drm file(s), %d reply channel(s), %d dma-buf(s); nothing more to pause", name,
			kinds[uapi.ObjectKind_OBJECT_DRM_FILE], kinds[uapi.ObjectKind_OBJECT_DRM_CHANNEL], kinds[uapi.ObjectKind_OBJECT_DMA_BUF])
		return nil
	}
	p.log.Infof("%s: pausing %d drm file(s) (timeout %v)", name, len(files), p.cfg.PauseTimeout)
	if err := p.ctl.Pause(files, p.cfg.PauseTimeout); err != nil {
		return fmt.Errorf("pause GPU work of %s: %w", name, err)
	}
	p.dump.paused = append(p.dump.paused, files...)
	return nil
}

// DumpUnixSk checkpoints one kernelsim file: a drm file through its
// driver's sub-plugin, a reply channel of a drm file with it, a dma-buf
// through the dma-buf sub-plugin. fd is criu's copy of the socket: the
// kernel reads from its receive queue which replies the task has not read
// yet (without reading them). Sockets that are not kernelsim's get
// ErrNotMine.
func (p *Plugin) DumpUnixSk(fd int, ino uint64) error {
	if p.ctl == nil {
		return ErrNotMine
	}
	obj, ok := p.dump.ident[ino]
	if !ok {
		objs, err := p.ctl.Identify([]uint64{ino})
		if err != nil {
			return fmt.Errorf("identify socket inode %d: %w", ino, err)
		}
		if len(objs) != 1 || objs[0].Kind == uapi.ObjectKind_OBJECT_UNKNOWN {
			return ErrNotMine
		}
		obj = objs[0]
		p.dump.ident[ino] = obj
	}
	// criu asks for sockets once every task is frozen: the mappings are
	// final, and their BOs must be known before any BO is saved.
	err := p.scanMappings()
	switch {
	case err != nil:
	case obj.Kind == uapi.ObjectKind_OBJECT_DRM_FILE:
		err = p.dumpFile(obj, fd)
	case obj.Kind == uapi.ObjectKind_OBJECT_DRM_CHANNEL:
		err = p.dumpChannel(obj, fd)
	case obj.Kind == uapi.ObjectKind_OBJECT_DMA_BUF:
		err = p.dumpDmaBuf(obj)
	default:
		return ErrNotMine
	}
	if err == nil && p.dump.allDumped() {
		// criu asks for external sockets after it has collected the whole
		// tree, so once every kernelsim file found in it is dumped the
		// graph is final: check it while the dump can still fail.
		err = p.dump.checkGraph()
	}
	if err != nil && p.dump.failed == nil {
		p.dump.failed = err
	}
	return err
}

// allDumped reports whether every kernelsim file found in the tasks has
// been dumped.
func (d *dumpState) allDumped() bool {
	for ino := range d.ident {
		if !d.dumped(ino) {
			return false
		}
	}
	return true
}

// dumped reports whether the kernelsim file of socket inode ino is dumped.
func (d *dumpState) dumped(ino uint64) bool {
	_, f := d.files[ino]
	_, c := d.chans[ino]
	_, b := d.dmabufs[ino]
	return f || c || b
}

func (p *Plugin) dumpFile(obj *uapi.IdentifiedObject, fd int) error {
	ino := obj.Inode
	if _, done := p.dump.files[ino]; done {
		return nil
	}
	drv, ok := p.drivers[obj.Driver]
	if !ok {
		return fmt.Errorf("drm file inode %d (pid %d) is on a %s device, which no sub-plugin handles", ino, p.dump.owner[ino], obj.Driver)
	}
	cp, err := p.checkpointFile(obj)
	if err != nil {
		return err
	}
	io, err := p.checkpointIO(obj, fd)
	if err != nil {
		return err
	}
	cp.Io = io
	owner, held := p.dump.owner[ino]
	img, err := drv.DumpFile(ino, owner, cp)
	if err != nil {
		return fmt.Errorf("%s: drm file inode %d: %w", drv.Driver(), ino, err)
	}
	// No task had it in its fd table when criu paused them: criu is
	// dumping it in flight, in a unix socket's queue.
	img.InFlight = !held
	p.dump.minors[cp.Minor] = true
	if err := p.dumpBOs(append(slices.Clone(cp.Bos), unreadBOs(io)...)); err != nil {
		return fmt.Errorf("drm file inode %d: %w", ino, err)
	}
	if err := p.writeImage(images.FileName(ino), img); err != nil {
		return err
	}
	p.dump.files[ino] = img
	p.log.Infof("dumped drm file inode %d (%s renderD%d, pid %d): %d handles, %d BOs%s", ino, obj.Driver, obj.Minor, img.Pid, len(cp.Handles), len(cp.Bos), inFlight(io))
	return nil
}

// dumpChannel saves a reply channel of a drm file: the traffic in flight
// on it. Its file is checkpointed with it if it was not yet; the file's
// own socket is dumped by whichever task criu finds it in.
func (p *Plugin) dumpChannel(obj *uapi.IdentifiedObject, fd int) error {
	ino := obj.Inode
	if _, done := p.dump.chans[ino]; done {
		return nil
	}
	if _, err := p.checkpointFile(obj); err != nil {
		return err
	}
	io, err := p.checkpointIO(obj, fd)
	if err != nil {
		return err
	}
	if err := p.dumpBOs(unreadBOs(io)); err != nil {
		return fmt.Errorf("reply channel inode %d: %w", ino, err)
	}
	img := &images.DrmChannel{Version: images.Version, Inode: ino, FileInode: obj.FileInode, Pid: p.dump.owner[ino], Io: io}
	if err := p.writeImage(images.ChannelName(ino), img); err != nil {
		return err
	}
	p.dump.chans[ino] = img
	p.log.Infof("dumped reply channel inode %d of drm file inode %d (pid %d)%s", ino, obj.FileInode, img.Pid, inFlight(io))
	return nil
}

// checkpointFile pauses (if criu did not) and checkpoints the drm file of
// a socket, once per file: the kernel freezes all the file's connections
// at once.
func (p *Plugin) checkpointFile(obj *uapi.IdentifiedObject) (*uapi.FileCheckpoint, error) {
	if cp, ok := p.dump.frozen[obj.FileId]; ok {
		return cp, nil
	}
	if !slices.Contains(p.dump.paused, obj.FileId) {
		// criu did not run PAUSE_DEVICES for the holder (it may have
		// received the fd meanwhile): pause the file now.
		if err := p.ctl.Pause([]uint64{obj.FileId}, p.cfg.PauseTimeout); err != nil {
			return nil, fmt.Errorf("pause drm file of socket inode %d: %w", obj.Inode, err)
		}
		p.dump.paused = append(p.dump.paused, obj.FileId)
	}
	cp, err := p.ctl.CheckpointFile(obj.FileId)
	if err != nil {
		return nil, fmt.Errorf("checkpoint drm file of socket inode %d: %w", obj.Inode, err)
	}
	p.dump.frozen[obj.FileId] = cp
	return cp, nil
}

// checkpointIO returns the traffic in flight on the connection of socket
// fd (criu's copy).
func (p *Plugin) checkpointIO(obj *uapi.IdentifiedObject, fd int) (*uapi.PendingIO, error) {
	if fd < 0 {
		return nil, fmt.Errorf("socket inode %d: no descriptor of it to tell which replies are unread", obj.Inode)
	}
	io, err := p.ctl.CheckpointIO(obj.FileId, obj.Inode, fd)
	if err != nil {
		return nil, fmt.Errorf("requests in flight on socket inode %d (pid %d): %w", obj.Inode, p.dump.owner[obj.Inode], err)
	}
	return io, nil
}

// unreadBOs lists the BOs behind the dma-bufs that unread replies carry.
func unreadBOs(io *uapi.PendingIO) []*uapi.BoState {
	var bos []*uapi.BoState
	for _, r := range io.GetUnreadReplies() {
		if r.Bo != nil {
			bos = append(bos, r.Bo)
		}
	}
	return bos
}

// inFlight describes the traffic in flight for a log line.
func inFlight(io *uapi.PendingIO) string {
	n, m := len(io.GetRequests()), len(io.GetUnreadReplies())
	if n == 0 && m == 0 {
		return ""
	}
	return fmt.Sprintf(", %d request(s) in flight, %d reply(ies) unread", n, m)
}

func (p *Plugin) dumpDmaBuf(obj *uapi.IdentifiedObject) error {
	ino := obj.Inode
	if _, done := p.dump.dmabufs[ino]; done {
		return nil
	}
	if p.cfg.DmaBuf == nil {
		return fmt.Errorf("dma-buf inode %d: no dma-buf sub-plugin", ino)
	}
	st, err := p.ctl.CheckpointDmaBuf(ino)
	if err != nil {
		return fmt.Errorf("checkpoint dma-buf inode %d: %w", ino, err)
	}
	owner, held := p.dump.owner[ino]
	img, err := p.cfg.DmaBuf.DumpDmaBuf(ino, owner, st)
	if err != nil {
		return fmt.Errorf("dma-buf inode %d: %w", ino, err)
	}
	img.InFlight = !held
	if err := p.dumpBOs([]*uapi.BoState{st}); err != nil {
		return fmt.Errorf("dma-buf inode %d: %w", ino, err)
	}
	if err := p.writeImage(images.DmaBufName(ino), img); err != nil {
		return err
	}
	p.dump.dmabufs[ino] = img
	p.log.Infof("dumped dma-buf inode %d of BO %d (%d bytes)", ino, st.BoId, st.Size)
	return nil
}

// dumpBOs saves BOs, each once however many files and processes share
// it: the kernel streams the contents of all that are new in one request
// straight into the pages files, back to back in each, and returns
// checksums of the chunks it wrote; the index records where each BO is
// and the chunks.
func (p *Plugin) dumpBOs(states []*uapi.BoState) error {
	seen := map[uint64]bool{}
	var todo []*uapi.BoState
	for _, st := range states {
		if _, done := p.dump.bos[st.BoId]; done || seen[st.BoId] {
			continue
		}
		seen[st.BoId] = true
		todo = append(todo, st)
	}
	if len(todo) == 0 {
		return nil
	}
	if err := p.openContents(); err != nil {
		return err
	}
	d := p.dump
	// Each BO goes whole into the file that ends first: the files fill
	// evenly, and the kernel writes them side by side.
	targets := make([]ctl.PagesTarget, len(d.pages))
	ends := slices.Clone(d.pagesEnd)
	place := make([]*images.Bo, len(todo))
	for i, st := range todo {
		f := 0
		for j := range ends {
			if ends[j] < ends[f] {
				f = j
			}
		}
		targets[f].IDs = append(targets[f].IDs, st.BoId)
		place[i] = &images.Bo{Version: images.Version, State: st, PagesFile: uint32(f), Offset: ends[f]}
		ends[f] += st.Size
	}
	var used []ctl.PagesTarget
	var files []int
	for f := range targets {
		if len(targets[f].IDs) > 0 {
			targets[f].File, targets[f].Offset = d.pages[f], d.pagesEnd[f]
			used, files = append(used, targets[f]), append(files, f)
		}
	}
	extents, err := p.ctl.CheckpointBOs(used, p.cfg.Checksum)
	if err != nil {
		return fmt.Errorf("save contents of %d BO(s): %w", len(todo), err)
	}
	var chunks int
	for i, x := range extents {
		f := files[i]
		if want := ends[f] - d.pagesEnd[f]; x.Size != want {
			return fmt.Errorf("save contents of %d BO(s): the kernel wrote %d bytes into %s, its BOs hold %d", len(used[i].IDs), x.Size, images.PagesName(f+1), want)
		}
		for _, c := range x.Chunks {
			if err := d.index.AddChunk(&images.PagesChunk{Version: images.Version, PagesFile: uint32(f), Chunk: c}); err != nil {
				return err
			}
		}
		chunks += len(x.Chunks)
	}
	for i, b := range place {
		if err := d.index.AddBo(b); err != nil {
			return err
		}
		d.bos[todo[i].BoId] = b
		d.minors[todo[i].Minor] = true
	}
	written := sumOf(ends) - sumOf(d.pagesEnd)
	copy(d.pagesEnd, ends)
	p.log.Debugf("saved %d BO(s): %d bytes in %d chunk(s) over %d pages file(s)", len(todo), written, chunks, len(used))
	return nil
}

// MaxPagesFiles bounds the pages files of a dump. One file takes no more
// than one CPU's copy (writes into it take turns on its inode lock), so a
// dump writes one per CPU; past a few the copies run at memory speed.
const MaxPagesFiles = 8

// openContents creates the pages files and the index, once per dump.
func (p *Plugin) openContents() error {
	d := p.dump
	if d.index != nil {
		return nil
	}
	n := p.cfg.PagesFiles
	names := make([]string, n)
	for i := range names {
		names[i] = images.PagesName(i + 1)
		f, err := p.cfg.ImageDir.Create(names[i])
		if err != nil {
			closeAll(d.pages)
			d.pages = nil
			return err
		}
		d.pages = append(d.pages, f)
	}
	x, err := p.cfg.ImageDir.CreateIndex(&images.BoIndex{Version: images.Version, Checksum: p.cfg.Checksum.String(), PagesFiles: names})
	if err != nil {
		closeAll(d.pages)
		d.pages = nil
		return err
	}
	d.pagesEnd, d.index = make([]uint64, n), x
	return nil
}

func sumOf(xs []uint64) uint64 {
	var n uint64
	for _, x := range xs {
		n += x
	}
	return n
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// closeContents finishes the pages files and the index.
func (p *Plugin) closeContents() error {
	d := p.dump
	if d.index == nil {
		if err := p.openContents(); err != nil { // a dump without BOs has an empty index
			return err
		}
	}
	err := d.index.Close()
	if err == nil {
		d.seals = append(d.seals, d.index.Seal())
	}
	for i, f := range d.pages {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", images.PagesName(i+1), cerr)
		}
	}
	d.index, d.pages = nil, nil
	return err
}

// writeImage writes an image and keeps its seal for the inventory.
func (p *Plugin) writeImage(name string, m images.Versioned) error {
	seal, err := p.cfg.ImageDir.WriteImage(name, m)
	if err != nil {
		return err
	}
	p.dump.seals = append(p.dump.seals, seal)
	return nil
}

// devices describes the devices the dump's files and BOs are on.
func (p *Plugin) devices() ([]*images.Device, error) {
	if len(p.dump.minors) == 0 {
		return nil, nil
	}
	all, err := p.ctl.Devices()
	if err != nil {
		return nil, fmt.Errorf("list the kernel's devices: %w", err)
	}
	var out []*images.Device
	for _, d := range all {
		if p.dump.minors[d.Minor] {
			out = append(out, &images.Device{Minor: d.Minor, Driver: d.Driver, GpuId: d.GpuId})
			delete(p.dump.minors, d.Minor)
		}
	}
	for m := range p.dump.minors {
		return nil, fmt.Errorf("the kernel no longer has device renderD%d", m)
	}
	return out, nil
}

// checkGraph reports every reference to an object the dump does not hold:
// kernelsim files found in the tasks that criu never asked to dump, and
// BOs that files, jobs or dma-bufs use without a saved record.
func (d *dumpState) checkGraph() error {
	var problems []string
	for ino, obj := range d.ident {
		if !d.dumped(ino) {
			problems = append(problems, fmt.Sprintf("%v inode %d of pid %d was never dumped", obj.Kind, ino, d.owner[ino]))
		}
	}
	need := func(what string, id uint64) {
		if _, ok := d.bos[id]; !ok {
			problems = append(problems, fmt.Sprintf("%s refers to BO %d, which has no record", what, id))
		}
	}
	for ino, f := range d.files {
		for _, h := range f.State.GetHandles() {
			need(fmt.Sprintf("drm file inode %d handle %d", ino, h.Handle), h.BoId)
		}
		for _, b := range unreadBOs(f.State.GetIo()) {
			need(fmt.Sprintf("an unread reply on drm file inode %d", ino), b.BoId)
		}
	}
	for ino, db := range d.dmabufs {
		need(fmt.Sprintf("dma-buf inode %d", ino), db.BoId)
	}
	for ino, c := range d.chans {
		if _, ok := d.files[c.FileInode]; !ok {
			problems = append(problems, fmt.Sprintf("reply channel inode %d of pid %d belongs to drm file inode %d, which no dumped task holds", ino, c.Pid, c.FileInode))
		}
		for _, b := range unreadBOs(c.Io) {
			need(fmt.Sprintf("an unread reply on reply channel inode %d", ino), b.BoId)
		}
	}
	d.checkMappings(need)
	// Queued work may wait on paused work of other files: the files that
	// will restore that work must be in the dump too.
	provided := map[uint64]bool{}
	for _, f := range d.files {
		for _, id := range f.State.GetJobFences() {
			provided[id] = true
		}
	}
	for ino, f := range d.files {
		for _, id := range f.State.GetWaitsOnFences() {
			if !provided[id] {
				problems = append(problems, fmt.Sprintf("drm file inode %d of pid %d has work waiting on fence %d, which no dumped file's job provides", ino, f.Pid, id))
			}
		}
	}
	if problems == nil {
		return nil
	}
	slices.Sort(problems)
	return errors.New("incomplete GPU object graph: " + strings.Join(problems, "; "))
}

func (p *Plugin) finiDump(ret int) {
	if p.dump == nil {
		return
	}
	if ret == 0 && p.stage == StageDump && p.dump.failed == nil {
		// A tree without kernelsim files may still map BOs; the tasks
		// are still frozen here, and the GPU still paused.
		if err := p.scanMappings(); err != nil {
			p.dump.failed = err
			p.log.Errorf("CPU mappings of BOs: %v: restore will refuse this dump", err)
		}
	}
	if p.ctl != nil && len(p.dump.paused) > 0 {
		if err := p.ctl.Resume(p.dump.paused); err != nil {
			p.log.Errorf("resume GPU work after dump: %v", err)
		} else {
			p.log.Infof("resumed %d drm file(s)", len(p.dump.paused))
		}
	}
	if len(p.dump.procs) == 0 || p.stage == StagePreDump {
		return // nothing of ours in this dump, or a pre-dump: no images
	}
	inv := &images.Inventory{Version: images.Version, Processes: p.dump.procs, PluginVersion: Version}
	for ino := range p.dump.files {
		inv.Files = append(inv.Files, ino)
	}
	for ino := range p.dump.dmabufs {
		inv.Dmabufs = append(inv.Dmabufs, ino)
	}
	for ino := range p.dump.chans {
		inv.Channels = append(inv.Channels, ino)
	}
	slices.Sort(inv.Channels)
	for id := range p.dump.bos {
		inv.Bos = append(inv.Bos, id)
	}
	slices.Sort(inv.Files)
	slices.Sort(inv.Dmabufs)
	slices.Sort(inv.Bos)
	graphErr := p.dump.checkGraph()
	contentsErr := p.closeContents()
	if contentsErr != nil {
		p.log.Errorf("BO contents: %v: restore will refuse this dump", contentsErr)
	}
	var devErr error
	if p.ctl != nil {
		if inv.Devices, devErr = p.devices(); devErr != nil {
			p.log.Errorf("%v: restore will refuse this dump", devErr)
		}
	}
	inv.Images = p.dump.seals
	slices.SortFunc(inv.Images, func(a, b *images.ImageSeal) int { return strings.Compare(a.Name, b.Name) })
	inv.Complete = ret == 0 && graphErr == nil && contentsErr == nil && devErr == nil && p.dump.failed == nil
	if graphErr != nil {
		p.log.Errorf("%v: restore will refuse this dump", graphErr)
	}
	if ret != 0 {
		p.log.Infof("dump failed (%d): inventory marked incomplete", ret)
	}
	if err := p.cfg.ImageDir.WriteInventory(inv); err != nil {
		p.log.Errorf("write inventory: %v", err)
		return
	}
	state := "complete"
	if !inv.Complete {
		state = "INCOMPLETE: restore will refuse it"
	}
	mapped := ""
	if n := len(p.dump.mapped); n > 0 {
		mapped = fmt.Sprintf(" (%d mapped: %s of memory in criu's images)", n, units.Format(p.dump.mappedBytes))
	}
	p.log.Summaryf("GPU state dumped: %d process(es), %d drm file(s)%s, %d dma-buf(s), %d BO(s)%s, %s of contents, in %v; %s",
		len(inv.Processes), len(inv.Files), channelCount(len(inv.Channels)), len(inv.Dmabufs), len(inv.Bos), mapped, units.Format(sumOf(p.dump.pagesEnd)),
		time.Since(p.started).Round(time.Millisecond), state)
}
