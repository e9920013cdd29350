package drmcore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

// This file is the one validation of a checkpoint's DRM images: the
// restore runs it before it asks the kernel for anything, and drmcrit
// verify runs the same code, so the two never disagree. Each field is
// checked by the layer that owns it: the core here (the inventory and its
// seals, the file and dma-buf images, processes, pids, runtime
// directories, devices, references between images), the driver
// sub-plugin (DriverPlugin.CheckFile: its blob), and the kernel
// (kernelsim.CheckRestore, run here against the devices the dump
// recorded: BOs, handles, VA mappings, reply channels, the traffic in
// flight, where the contents are). Every problem is reported, not only
// the first.

// Checkpoint is a checkpoint's DRM images as read, with every problem
// that makes them unfit to restore. A restore refuses them unless
// Problems is empty; drmcrit prints what is there and every problem.
type Checkpoint struct {
	Inventory *images.Inventory
	// The images that could be read, in inventory order and by inode.
	FileList    []*images.DrmFile
	ChannelList []*images.DrmChannel
	DmaBufList  []*images.DmaBuf
	Files       map[uint64]*images.DrmFile
	Channels    map[uint64]*images.DrmChannel
	DmaBufs     map[uint64]*images.DmaBuf
	Index       *images.Index         // nil when unreadable
	Bos         map[uint64]*images.Bo // the index's BO records by id
	Names       []string              // the DRM images in the directory
	// Request is the kernel's restore request the images make, in
	// FileList, ChannelList and DmaBufList order; it is only whole
	// without problems.
	Request  *uapi.SessionOpenRequest
	Problems []images.Problem
}

// ErrIncomplete is a directory with DRM images but no inventory: its dump
// did not finish.
var ErrIncomplete = errors.New("DRM images without " + images.InventoryName + ": the dump did not finish")

// SubPlugins are the sub-plugins a check or a restore uses.
type SubPlugins struct {
	Drivers []DriverPlugin
	DmaBuf  DmaBufPlugin
}

func (s SubPlugins) driver(name string) DriverPlugin {
	for _, d := range s.Drivers {
		if d.Driver() == name {
			return d
		}
	}
	return nil
}

// ReadCheckpoint reads and checks the DRM images of a checkpoint. It
// returns nil, nil for a checkpoint without GPU state, and an error only
// when nothing can be checked (the directory or the inventory cannot be
// read, or the dump did not finish); anything else is a problem of the
// result. It opens every image beneath dir, regular files only, without
// blocking.
func ReadCheckpoint(dir *images.Dir, subs SubPlugins) (*Checkpoint, error) {
	names, err := dir.Names()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(names, images.InventoryName) {
		if len(names) > 0 {
			return nil, ErrIncomplete
		}
		return nil, nil
	}
	inv, probs, err := dir.ReadInventory()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrIncomplete
		}
		return nil, err
	}
	c := &checker{
		ck: &Checkpoint{
			Inventory: inv, Names: names, Problems: probs,
			Files: map[uint64]*images.DrmFile{}, Channels: map[uint64]*images.DrmChannel{},
			DmaBufs: map[uint64]*images.DmaBuf{}, Bos: map[uint64]*images.Bo{},
		},
		dir: dir, subs: subs, seals: images.Seals(inv),
	}
	c.inventory()
	c.readImages()
	c.mappings()
	c.fences()
	c.kernel()
	return c.ck, nil
}

// Err is nil without problems, else an error giving their number and the
// first few.
func (ck *Checkpoint) Err() error {
	if len(ck.Problems) == 0 {
		return nil
	}
	const shown = 5
	var msgs []string
	for i, p := range ck.Problems {
		if i == shown {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(ck.Problems)-shown))
			break
		}
		msgs = append(msgs, p.String())
	}
	return fmt.Errorf("%d problem(s) in the GPU images: %s", len(ck.Problems), strings.Join(msgs, "; "))
}

type checker struct {
	ck    *Checkpoint
	dir   *images.Dir
	subs  SubPlugins
	seals map[string]*images.ImageSeal
	// What the inventory lists, and the processes holding each inode.
	files, channels, dmabufs, bos map[uint64]bool
	holders                       map[uint64][]int32
	devices                       map[uint32]*images.Device
}

func (c *checker) add(image, field, format string, args ...any) {
	c.ck.Problems = append(c.ck.Problems, images.Problemf(image, field, format, args...))
}

const inventory = images.InventoryName

// inventory checks the inventory's own fields: complete, lists without
// repeats, the seals, the devices, the processes' fields.
func (c *checker) inventory() {
	inv := c.ck.Inventory
	if !inv.Complete {
		c.add(inventory, "complete", "false: the dump failed or missed objects")
	}
	set := func(field string, list []uint64) map[uint64]bool {
		m := make(map[uint64]bool, len(list))
		for i, x := range list {
			switch {
			case x == 0:
				c.add(inventory, fmt.Sprintf("%s[%d]", field, i), "0 is no %s", strings.TrimSuffix(field, "s"))
			case m[x]:
				c.add(inventory, fmt.Sprintf("%s[%d]", field, i), "%d is listed twice", x)
			}
			m[x] = true
		}
		return m
	}
	c.files, c.dmabufs, c.bos = set("files", inv.Files), set("dmabufs", inv.Dmabufs), set("bos", inv.Bos)
	c.channels = set("channels", inv.Channels)

	// Seals: each of the images the inventory lists, once; nothing else.
	sealed := map[string]bool{}
	for i, s := range inv.Images {
		f := fmt.Sprintf("images[%d]", i)
		k := images.KindOf(s.Name)
		switch {
		case sealed[s.Name]:
			c.add(inventory, f, "%s is sealed twice", s.Name)
		case filepath.Base(s.Name) != s.Name || (k != images.KindFile && k != images.KindChannel && k != images.KindDmaBuf && k != images.KindIndex):
			c.add(inventory, f, "%q is not an image the inventory seals", s.Name)
		case k == images.KindFile && !c.files[inodeOf(s.Name)], k == images.KindDmaBuf && !c.dmabufs[inodeOf(s.Name)],
			k == images.KindChannel && !c.channels[inodeOf(s.Name)]:
			c.add(inventory, f, "%s is sealed, but the inventory does not list it", s.Name)
		}
		sealed[s.Name] = true
	}
	// Images of the directory the inventory leaves out.
	for _, n := range c.ck.Names {
		switch images.KindOf(n) {
		case images.KindFile:
			if !c.files[inodeOf(n)] {
				c.add(n, "", "not listed in the inventory")
			}
		case images.KindDmaBuf:
			if !c.dmabufs[inodeOf(n)] {
				c.add(n, "", "not listed in the inventory")
			}
		case images.KindChannel:
			if !c.channels[inodeOf(n)] {
				c.add(n, "", "not listed in the inventory")
			}
		}
	}

	c.devices = map[uint32]*images.Device{}
	for i, d := range inv.Devices {
		f := fmt.Sprintf("devices[%d]", i)
		switch {
		case c.devices[d.Minor] != nil:
			c.add(inventory, f+".minor", "renderD%d is listed twice", d.Minor)
		case d.Driver == "":
			c.add(inventory, f+".driver", "renderD%d has no driver", d.Minor)
		}
		c.devices[d.Minor] = d
	}

	c.holders = map[uint64][]int32{}
	pids := map[int32]bool{}
	for i, p := range inv.Processes {
		f := fmt.Sprintf("processes[%d]", i)
		switch {
		case p.Pid <= 0:
			c.add(inventory, f+".pid", "%d is not a pid", p.Pid)
		case pids[p.Pid]:
			c.add(inventory, f+".pid", "pid %d is listed twice", p.Pid)
		}
		pids[p.Pid] = true
		if len(p.Comm) > 15 {
			c.add(inventory, f+".comm", "%q is longer than a task's name (15 bytes)", p.Comm)
		}
		if msg := checkRuntimeDir(p.RuntimeDir); msg != "" {
			c.add(inventory, f+".runtime_dir", "%q %s", p.RuntimeDir, msg)
		}
		held := map[uint64]bool{}
		for j, ino := range p.Inodes {
			switch {
			case held[ino]:
				c.add(inventory, fmt.Sprintf("%s.inodes[%d]", f, j), "inode %d is listed twice", ino)
				continue
			case !c.files[ino] && !c.dmabufs[ino] && !c.channels[ino]:
				c.add(inventory, fmt.Sprintf("%s.inodes[%d]", f, j), "pid %d holds inode %d, which is neither a dumped drm file, reply channel nor dma-buf", p.Pid, ino)
			}
			held[ino] = true
			c.holders[ino] = append(c.holders[ino], p.Pid)
		}
	}
}

// maxSocketPath is what sun_path holds, its terminating NUL left out: the
// C part connects to <runtime dir>/dri/renderD<minor> in the task.
const maxSocketPath = 107

// checkRuntimeDir says what is wrong with a recorded runtime directory,
// "" if nothing (empty: the daemon's of the restore's time).
func checkRuntimeDir(dir string) string {
	switch {
	case dir == "":
		return ""
	case strings.ContainsRune(dir, 0):
		return "holds a NUL byte"
	case !filepath.IsAbs(dir) || filepath.Clean(dir) != dir:
		return "is not a clean absolute path"
	case len(filepath.Join(dir, "dri", "renderD4294967295")) > maxSocketPath:
		return fmt.Sprintf("is too long: the render nodes' socket paths in it would exceed the %d bytes of a unix socket address", maxSocketPath)
	}
	return ""
}

func inodeOf(name string) uint64 {
	base := strings.TrimSuffix(name, ".img")
	i := strings.LastIndexByte(base, '-')
	n, _ := strconv.ParseUint(base[i+1:], 10, 64)
	return n
}

// readImages reads the file and dma-buf images the inventory lists and
// the index, each against its seal, and checks the core's fields of each.
func (c *checker) readImages() {
	inv := c.ck.Inventory
	for _, ino := range inv.Files {
		name := images.FileName(ino)
		f := &images.DrmFile{}
		if !c.readSealed(name, f) {
			continue
		}
		if f.Inode != ino {
			c.add(name, "inode", "%d, the image's name says %d", f.Inode, ino)
			continue
		}
		if c.ck.Files[ino] != nil {
			continue // listed twice, reported
		}
		c.ck.Files[ino] = f
		c.ck.FileList = append(c.ck.FileList, f)
	}
	for _, ino := range inv.Channels {
		name := images.ChannelName(ino)
		ch := &images.DrmChannel{}
		if !c.readSealed(name, ch) {
			continue
		}
		if ch.Inode != ino {
			c.add(name, "inode", "%d, the image's name says %d", ch.Inode, ino)
			continue
		}
		if c.ck.Channels[ino] != nil {
			continue
		}
		c.ck.Channels[ino] = ch
		c.ck.ChannelList = append(c.ck.ChannelList, ch)
	}
	for _, ino := range inv.Dmabufs {
		name := images.DmaBufName(ino)
		d := &images.DmaBuf{}
		if !c.readSealed(name, d) {
			continue
		}
		if d.Inode != ino {
			c.add(name, "inode", "%d, the image's name says %d", d.Inode, ino)
			continue
		}
		if c.ck.DmaBufs[ino] != nil {
			continue
		}
		c.ck.DmaBufs[ino] = d
		c.ck.DmaBufList = append(c.ck.DmaBufList, d)
	}

	x, probs, err := c.dir.ReadIndexSealed(c.seals[images.IndexName])
	c.ck.Problems = append(c.ck.Problems, probs...)
	if err != nil {
		c.add(images.IndexName, "", "%v", err)
	} else {
		c.ck.Index = x
		c.ck.Problems = append(c.ck.Problems, x.Check()...)
		for _, b := range x.Bos {
			if id := b.GetState().GetBoId(); b.State != nil && id != 0 && c.ck.Bos[id] == nil {
				c.ck.Bos[id] = b
				if !c.bos[id] {
					c.add(images.IndexName, fmt.Sprintf("BO %d", id), "not listed in the inventory")
				}
			}
		}
		for _, id := range inv.Bos {
			if c.ck.Bos[id] == nil {
				c.add(inventory, "bos", "BO %d has no record in %s", id, images.IndexName)
			}
		}
		listed := map[string]bool{}
		for _, n := range x.Header.PagesFiles {
			listed[n] = true
		}
		for _, n := range c.ck.Names {
			if images.KindOf(n) == images.KindPages && !listed[n] {
				c.add(n, "", "a pages file the index does not list")
			}
		}
	}

	bo := func(id uint64) *uapi.BoState {
		if b := c.ck.Bos[id]; b != nil {
			return b.State
		}
		return nil
	}
	for _, f := range c.ck.FileList {
		c.file(f, bo)
	}
	for _, ch := range c.ck.ChannelList {
		// A channel in flight in a unix socket's queue has no holder
		// (pid 0), like a file in flight.
		c.holder(images.ChannelName(ch.Inode), ch.Inode, ch.Pid, ch.Pid == 0)
	}
	for _, d := range c.ck.DmaBufList {
		c.holder(images.DmaBufName(d.Inode), d.Inode, d.Pid, d.InFlight)
	}
}

// indexRead says whether the index could be read: without it, the BOs
// every other image refers to are unknown, and checking references to
// them would only repeat that problem.
func (c *checker) indexRead() bool { return c.ck.Index != nil }

// readSealed reads an image against its seal; false if it is unusable.
func (c *checker) readSealed(name string, m images.Versioned) bool {
	probs, err := c.dir.ReadSealed(name, c.seals[name], m)
	c.ck.Problems = append(c.ck.Problems, probs...)
	if err != nil {
		c.add(name, "", "%v", err)
		return false
	}
	return true
}

// file checks the core's fields of a drm file image, then its driver
// sub-plugin checks the blob.
func (c *checker) file(f *images.DrmFile, bo func(uint64) *uapi.BoState) {
	name := images.FileName(f.Inode)
	c.holder(name, f.Inode, f.Pid, f.InFlight)
	st := f.State
	if st == nil {
		c.add(name, "state", "missing: the image holds no kernel state")
		return
	}
	if st.Driver != f.Driver {
		c.add(name, "driver", "%q, the kernel state says %q", f.Driver, st.Driver)
	}
	// A device the dump did not record is the kernel's check's.
	if d := c.devices[st.Minor]; d != nil && d.GpuId != st.GpuId {
		c.add(name, "state.gpu_id", "%#x, the dump's renderD%d has gpu id %#x", st.GpuId, st.Minor, d.GpuId)
	}
	drv := c.subs.driver(f.Driver)
	if drv == nil {
		c.add(name, "driver", "no sub-plugin for driver %q", f.Driver)
		return
	}
	if c.indexRead() {
		c.ck.Problems = append(c.ck.Problems, drv.CheckFile(f, bo)...)
	}
}

// holder checks who held a file at the dump: the process the image names
// held it, or no process did and it was in flight in a unix socket's
// queue (criu restores it there).
func (c *checker) holder(name string, ino uint64, pid int32, inFlight bool) {
	held := c.holders[ino]
	switch {
	case inFlight && pid != 0:
		c.add(name, "pid", "%d, but the file was in flight, held by no task", pid)
	case inFlight && len(held) > 0:
		c.add(name, "in_flight", "true, but pid %d holds it", held[0])
	case !inFlight && len(held) == 0:
		c.add(name, "", "held by none of the inventory's processes, and not in flight")
	case !inFlight && !slices.Contains(held, pid):
		c.add(name, "pid", "%d does not hold it (held by pid %v)", pid, held)
	}
}

// mappings checks the processes' CPU mappings against the index: each a
// range of whole pages within a BO whose record says criu saved its
// memory (cpu_mapped), and every such BO mapped by some process: its
// memory comes back only through a mapping.
func (c *checker) mappings() {
	if !c.indexRead() {
		return
	}
	const page = 4096
	mapped := map[uint64]bool{}
	for i, p := range c.ck.Inventory.Processes {
		for j, m := range p.Mappings {
			f := fmt.Sprintf("processes[%d].mappings[%d]", i, j)
			b := c.ck.Bos[m.BoId]
			switch {
			case b == nil:
				c.add(inventory, f+".bo_id", "BO %d has no record in %s", m.BoId, images.IndexName)
			case !b.CpuMapped:
				c.add(inventory, f+".bo_id", "BO %d's record in %s says its contents are in a pages file, not criu's memory images", m.BoId, images.IndexName)
			case m.End <= m.Start || m.Start%page != 0 || m.End%page != 0:
				c.add(inventory, f, "[%#x, %#x) is not a range of whole pages", m.Start, m.End)
			case m.Offset%page != 0 || m.Offset > b.State.Size || m.End-m.Start > b.State.Size-m.Offset:
				c.add(inventory, f+".offset", "[%#x, +%#x) at offset %d does not fit in the %d bytes of BO %d", m.Start, m.End-m.Start, m.Offset, b.State.Size, m.BoId)
			case m.Prot&^7 != 0:
				c.add(inventory, f+".prot", "%#x is not a combination of PROT_READ, PROT_WRITE and PROT_EXEC", m.Prot)
			case m.MemfdInode == 0:
				c.add(inventory, f+".memfd_inode", "0: criu's images name the memory by it")
			}
			mapped[m.BoId] = true
		}
	}
	for _, id := range c.ck.Inventory.Bos {
		if b := c.ck.Bos[id]; b != nil && b.CpuMapped && !mapped[id] {
			c.add(images.IndexName, fmt.Sprintf("BO %d cpu_mapped", id), "true, but no process of the inventory maps it: its memory would not come back")
		}
	}
}

// fences checks, across files, that every fence saved work waits on is a
// saved job's, and that no two jobs have the same fence.
func (c *checker) fences() {
	provided := map[uint64]uint64{} // fence -> the inode of its file
	for _, f := range c.ck.FileList {
		for i, id := range f.State.GetJobFences() {
			if other, dup := provided[id]; dup && other != f.Inode {
				c.add(images.FileName(f.Inode), fmt.Sprintf("state.job_fences[%d]", i), "fence %d is a job's of drm file inode %d too", id, other)
			}
			provided[id] = f.Inode
		}
	}
	for _, f := range c.ck.FileList {
		for i, id := range f.State.GetWaitsOnFences() {
			if _, ok := provided[id]; !ok {
				c.add(images.FileName(f.Inode), fmt.Sprintf("state.waits_on_fences[%d]", i), "saved work waits on fence %d, which no saved job of the checkpoint provides: it could never run", id)
			}
		}
	}
}

// kernel builds the kernel's restore request and runs the kernel's
// checks on it, against the devices the dump recorded.
func (c *checker) kernel() {
	req := &uapi.SessionOpenRequest{}
	if x := c.ck.Index; x != nil {
		req.Checksum = x.Header.Checksum
		for _, b := range x.Bos {
			if b.State == nil || b.State.BoId == 0 || c.ck.Bos[b.State.BoId] != b {
				continue // reported by Check
			}
			req.Bos = append(req.Bos, b.State)
			if b.CpuMapped {
				// criu restores the memory; the kernel checks it
				// against these chunks when the plugin hands it over.
				req.Contents = append(req.Contents, &uapi.BoContents{BoId: b.State.BoId, Mapped: true, Chunks: b.MappedChunks})
				continue
			}
			req.Contents = append(req.Contents, &uapi.BoContents{BoId: b.State.BoId, PagesFile: b.PagesFile, Offset: b.Offset})
		}
		for _, name := range x.Header.PagesFiles {
			req.PagesFiles = append(req.PagesFiles, &uapi.PagesFile{Name: name})
		}
		for _, ch := range x.Chunks {
			if int(ch.PagesFile) < len(req.PagesFiles) && ch.Chunk != nil {
				pf := req.PagesFiles[ch.PagesFile]
				pf.Chunks = append(pf.Chunks, ch.Chunk)
			}
		}
	}
	for _, f := range c.ck.FileList {
		if f.State == nil {
			continue
		}
		// A file no sub-plugin restores (a problem already) still has
		// its kernel objects checked.
		rf := &uapi.RestoreFile{Inode: f.Inode, State: f.State}
		if drv := c.subs.driver(f.Driver); drv != nil {
			var err error
			if rf, err = drv.RestoreFile(f); err != nil {
				c.add(images.FileName(f.Inode), "", "%s: %v", f.Driver, err)
				rf = &uapi.RestoreFile{Inode: f.Inode, State: f.State}
			}
		}
		req.Files = append(req.Files, rf)
	}
	for _, ch := range c.ck.ChannelList {
		req.Channels = append(req.Channels, &uapi.RestoreChannel{Inode: ch.Inode, FileInode: ch.FileInode, Io: ch.Io})
	}
	for _, d := range c.ck.DmaBufList {
		if c.subs.DmaBuf == nil {
			c.add(images.DmaBufName(d.Inode), "", "no dma-buf sub-plugin")
			continue
		}
		rd, err := c.subs.DmaBuf.RestoreDmaBuf(d)
		if err != nil {
			c.add(images.DmaBufName(d.Inode), "", "%v", err)
			continue
		}
		req.Dmabufs = append(req.Dmabufs, rd)
	}
	c.ck.Request = req

	if !c.indexRead() {
		return
	}
	var devs []*uapi.DeviceInfo
	for _, d := range c.ck.Inventory.Devices {
		devs = append(devs, &uapi.DeviceInfo{Minor: d.Minor, Driver: d.Driver, GpuId: d.GpuId})
	}
	for _, p := range kernelsim.CheckRestore(req, devs) {
		c.ck.Problems = append(c.ck.Problems, c.imageOf(p, req))
	}
}

// imageOf names the image and field a kernel problem is about.
func (c *checker) imageOf(p kernelsim.RestoreProblem, req *uapi.SessionOpenRequest) images.Problem {
	join := func(a, b string) string {
		if b == "" {
			return a
		}
		return a + " " + b
	}
	switch p.Object {
	case kernelsim.ObjDevice:
		return images.Problem{Image: inventory, Field: join(fmt.Sprintf("devices (renderD%d)", p.ID), p.Field), Msg: p.Msg}
	case kernelsim.ObjBO:
		return images.Problem{Image: images.IndexName, Field: join(fmt.Sprintf("BO %d", p.ID), p.Field), Msg: p.Msg}
	case kernelsim.ObjFile:
		if p.ID == 0 {
			return images.Problem{Image: inventory, Field: "files", Msg: p.Msg}
		}
		return images.Problem{Image: images.FileName(p.ID), Field: "state." + p.Field, Msg: p.Msg}
	case kernelsim.ObjDmaBuf:
		if p.ID == 0 {
			return images.Problem{Image: inventory, Field: "dmabufs", Msg: p.Msg}
		}
		return images.Problem{Image: images.DmaBufName(p.ID), Field: p.Field, Msg: p.Msg}
	case kernelsim.ObjPages, kernelsim.ObjContents:
		return images.Problem{Image: images.IndexName, Field: p.Field, Msg: p.Msg}
	case kernelsim.ObjChannel:
		if p.ID == 0 {
			return images.Problem{Image: inventory, Field: "channels", Msg: p.Msg}
		}
		return images.Problem{Image: images.ChannelName(p.ID), Field: p.Field, Msg: p.Msg}
	}
	return images.Problem{Image: inventory, Field: p.Field, Msg: p.Msg}
}

// DeviceNeeds lists the devices of the checkpoint (the inventory's, in
// minor order) with the memory its BOs take on each.
func (ck *Checkpoint) DeviceNeeds() []DeviceNeed {
	byMinor := map[uint32]*DeviceNeed{}
	var out []DeviceNeed
	for _, d := range ck.Inventory.GetDevices() {
		if byMinor[d.Minor] == nil {
			out = append(out, DeviceNeed{Device: d})
			byMinor[d.Minor] = &DeviceNeed{}
		}
	}
	for _, b := range ck.Request.GetBos() {
		if n := byMinor[b.Minor]; n != nil {
			switch b.Domain {
			case uapi.Domain_DOMAIN_VRAM:
				n.VRAM += b.Size
			case uapi.Domain_DOMAIN_GTT:
				n.GTT += b.Size
			}
		}
	}
	for i := range out {
		n := byMinor[out[i].Device.Minor]
		out[i].VRAM, out[i].GTT = n.VRAM, n.GTT
	}
	slices.SortFunc(out, func(a, b DeviceNeed) int { return int(int64(a.Device.Minor) - int64(b.Device.Minor)) })
	return out
}

// ForDevices makes the checkpoint's restore request fit a kernel whose
// devices are devices (its DEVICES list), as a restore on another machine
// needs: it maps the checkpoint's devices onto them (MapDevices, with the
// explicit entries of DRMCR_DEVICE_MAP), rewrites ck.Request in place for
// the mapping (kernelsim.RetargetRestore: every BO, file, VA mapping,
// context and job moves with its file to the new device, gpu ids follow),
// and runs the kernel's checks on the result against those devices, as
// SESSION_OPEN runs them again before it creates anything. A device that
// cannot be mapped is an error (a *DeviceMapError naming each); the
// problems are the kernel's, with their images and fields. The checkpoint
// must be without problems (ReadCheckpoint).
func (ck *Checkpoint) ForDevices(devices []*uapi.DeviceInfo, explicit DeviceMap) (*DeviceMapping, []images.Problem, error) {
	if len(ck.Problems) > 0 {
		return nil, nil, ck.Err()
	}
	m, err := MapDevices(ck.DeviceNeeds(), devices, explicit)
	if err != nil {
		return nil, nil, err
	}
	if err := kernelsim.RetargetRestore(ck.Request, m.Targets()); err != nil {
		return nil, nil, err
	}
	c := &checker{ck: ck}
	var probs []images.Problem
	for _, p := range kernelsim.CheckRestore(ck.Request, devices) {
		probs = append(probs, c.imageOf(p, ck.Request))
	}
	return m, probs, nil
}
