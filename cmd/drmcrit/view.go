package main

import (
	"fmt"
	"sort"
	"strings"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/uapi"
	"drmcr/subplugins"
)

// SchemaVersion is the version of the JSON schema of `drmcrit show
// --json`. It changes only when a field is removed, renamed or changes
// meaning; new fields may appear within a version.
const SchemaVersion = 2

// The types below are the JSON schema (see jsonHelp and README.md).

// View is a checkpoint's GPU state, as `show --json` prints it.
type View struct {
	SchemaVersion int           `json:"schema_version"`
	Dir           string        `json:"dir"`
	Source        string        `json:"source"`
	Inventory     InventoryView `json:"inventory"`
	Processes     []ProcessView `json:"processes"`
	Files         []FileView    `json:"drm_files"`
	Channels      []ChannelView `json:"reply_channels"`
	DmaBufs       []DmaBufView  `json:"dma_bufs"`
	Bos           []BoView      `json:"bos"`
	Warnings      []string      `json:"warnings"`
	// Problems is drmcrit verify's verdict: every reason a restore
	// refuses the checkpoint; [] when it restores. Only show sets it.
	Problems []string `json:"problems"`
}

// Source values.
const (
	SourceCriu      = "criu"
	SourceInventory = "inventory"
)

type InventoryView struct {
	Version       uint32 `json:"version"`
	PluginVersion string `json:"plugin_version"`
	Complete      bool   `json:"complete"`
}

type ProcessView struct {
	Pid  int32    `json:"pid"`
	Ppid *int32   `json:"ppid,omitempty"`
	Comm string   `json:"comm"`
	Fds  []FdView `json:"fds"`
	// CPU mappings of BOs in the process's address space, by address.
	CPUMappings []CPUMappingView `json:"cpu_mappings"`
}

// CPUMappingView is a mapping of a BO's memory in a process (GEM_MMAP or
// a dma-buf's mmap), which criu saves and restores as memory.
type CPUMappingView struct {
	Start      string `json:"start"` // address, "0x…"
	End        string `json:"end"`
	Size       uint64 `json:"size"`
	BoOffset   uint64 `json:"bo_offset"`
	Prot       string `json:"prot"` // "rw-"
	Shared     bool   `json:"shared"`
	BoID       uint64 `json:"bo_id"`
	MemfdInode uint64 `json:"memfd_inode"`
}

// FdView is one GPU fd of a process; Fd is null when unknown.
type FdView struct {
	Fd    *int32 `json:"fd"`
	Kind  string `json:"kind"` // KindDrmFile, KindChannel or KindDmaBuf
	Inode uint64 `json:"inode"`
}

// Object kinds.
const (
	KindDrmFile = "drm_file"
	KindChannel = "reply_channel"
	KindDmaBuf  = "dma_buf"
	KindMapping = "cpu_mapping"
)

// HolderView is one holder of a BO: a drm file handle, a dma-buf or a
// CPU mapping.
type HolderView struct {
	Kind    string  `json:"kind"`
	Inode   uint64  `json:"inode"` // cpu_mapping: the memfd's
	Pid     int32   `json:"pid"`
	Comm    string  `json:"comm,omitempty"`
	Handle  uint32  `json:"handle,omitempty"`  // drm_file only
	Fds     []int32 `json:"fds,omitempty"`     // fd numbers in pid, when known
	Address string  `json:"address,omitempty"` // cpu_mapping only
}

type FileView struct {
	Inode         uint64        `json:"inode"`
	Pid           int32         `json:"pid"`
	Device        string        `json:"device"`
	Minor         uint32        `json:"minor"`
	Driver        string        `json:"driver"`
	DriverVersion uint32        `json:"driver_version"`
	GpuID         uint32        `json:"gpu_id"`
	FileID        uint64        `json:"file_id"`
	Handles       []HandleView  `json:"handles"`
	Contexts      []ContextView `json:"contexts"`
	Syncobjs      []SyncobjView `json:"syncobjs"`
	SwSyncs       []SwSyncView  `json:"sw_syncs"`
	PendingIO     *PendingView  `json:"pending_io,omitempty"`
	DriverError   string        `json:"driver_error,omitempty"`
	// DriverObjects are the driver's own objects (xe: VMs, bindings,
	// exec queues), as its sub-plugin describes them.
	DriverObjects []string      `json:"driver_objects,omitempty"`
	InFlight      *InFlightView `json:"in_flight,omitempty"`
}

// InFlightView says where a file no task held at the dump was: in flight
// in a unix socket's receive queue (SCM_RIGHTS), where criu restores it.
type InFlightView struct {
	QueueInode uint64     `json:"queue_inode,omitempty"` // the socket whose queue holds it, when CRIU's images say
	QueueFds   []HolderFd `json:"queue_fds,omitempty"`   // who holds that socket
}

// HolderFd is a task's fd.
type HolderFd struct {
	Pid int32 `json:"pid"`
	Fd  int32 `json:"fd"`
}

type HandleView struct {
	Handle uint32 `json:"handle"`
	BoID   uint64 `json:"bo_id"`
	Prime  bool   `json:"prime"`
	// Attachment: the handle is an import attachment of BO bo_id, a BO
	// of another device (its own GEM object on the file's device).
	Attachment bool          `json:"import_attachment,omitempty"`
	Size       uint64        `json:"size"`
	Domain     string        `json:"domain"`
	Flags      string        `json:"flags"`
	Contents   string        `json:"contents"`
	Mappings   []MappingView `json:"mappings"`
	SharedWith []HolderView  `json:"shared_with"`
}

type MappingView struct {
	VA       string `json:"va"`
	Size     uint64 `json:"size"`
	BoOffset uint64 `json:"bo_offset"`
	Flags    string `json:"flags"`
}

type ContextView struct {
	ID        uint32    `json:"id"`
	Priority  int32     `json:"priority"`
	Guilty    bool      `json:"guilty"`
	Submitted uint64    `json:"submitted"`
	Completed uint64    `json:"completed"`
	Jobs      []JobView `json:"jobs"`
}

type JobView struct {
	FenceID      uint64   `json:"fence_id"`
	State        string   `json:"state"` // "preempted" or "queued"
	LongRunning  bool     `json:"long_running"`
	Commands     []string `json:"commands"`
	ProgressCmd  int32    `json:"progress_cmd"`
	ProgressIter uint64   `json:"progress_iter"`
	Iterations   uint64   `json:"iterations"` // of the command at progress_cmd
	ProgressAcc  uint64   `json:"progress_acc"`
	BoIDs        []uint64 `json:"bo_ids"`
	WaitsOn      []uint64 `json:"waits_on"`
}

type SyncobjView struct {
	Handle   uint32 `json:"handle"`
	Kind     string `json:"kind"`
	Error    int32  `json:"error,omitempty"`
	FenceID  uint64 `json:"fence_id,omitempty"`
	Timeline uint32 `json:"timeline,omitempty"`
	Point    uint64 `json:"point,omitempty"`
}

type SwSyncView struct {
	Timeline uint32 `json:"timeline"`
	Value    uint64 `json:"value"`
}

// PendingView is the traffic in flight on a connection at dump: requests
// to replay and replies to send again at restore, in order. The *_bytes
// fields are totals; unread_reply_dmabuf_inode and unread_reply_bo_id
// are the first unread reply's.
type PendingView struct {
	RequestBytes           int          `json:"request_bytes"`
	UnreadReplyBytes       int          `json:"unread_reply_bytes"`
	UnreadReplyDmabufInode uint64       `json:"unread_reply_dmabuf_inode,omitempty"`
	UnreadReplyBoID        uint64       `json:"unread_reply_bo_id,omitempty"`
	Requests               []PacketView `json:"requests"`
	UnreadReplies          []PacketView `json:"unread_replies"`
}

// PacketView is one request or reply in flight.
type PacketView struct {
	Op          string `json:"op"`
	Seq         uint32 `json:"seq"`
	Status      int32  `json:"status,omitempty"` // replies: 0 or a negative errno
	Bytes       int    `json:"bytes"`
	DmabufInode uint64 `json:"dmabuf_inode,omitempty"` // a reply carrying a dma-buf
	BoID        uint64 `json:"bo_id,omitempty"`
}

// ChannelView is a reply channel: a connection a process attached to a
// drm file it shares with others, so that its replies reach it alone.
type ChannelView struct {
	Inode     uint64       `json:"inode"`
	Pid       int32        `json:"pid"`
	FileInode uint64       `json:"file_inode"`
	Fds       []int32      `json:"fds,omitempty"`
	PendingIO *PendingView `json:"pending_io,omitempty"`
}

type DmaBufView struct {
	Inode    uint64        `json:"inode"`
	Pid      int32         `json:"pid"`
	BoID     uint64        `json:"bo_id"`
	Size     uint64        `json:"size"`
	Domain   string        `json:"domain"`
	Contents string        `json:"contents"`
	Fds      []int32       `json:"fds,omitempty"`
	InFlight *InFlightView `json:"in_flight,omitempty"`
}

type BoView struct {
	BoID        uint64 `json:"bo_id"`
	Size        uint64 `json:"size"`
	Domain      string `json:"domain"`
	Flags       string `json:"flags"`
	Alignment   uint64 `json:"alignment"`
	Minor       uint32 `json:"minor"`
	DmabufInode uint64 `json:"dmabuf_inode"`
	PagesFile   string `json:"pages_file"` // "" when cpu_mapped
	Offset      uint64 `json:"offset"`
	// CPUMapped: a dumped process mapped the BO; its contents are in
	// criu's memory images, not in a pages file.
	CPUMapped bool         `json:"cpu_mapped"`
	Holders   []HolderView `json:"holders"`
}

// pagesFileOf names the pages file of a BO's contents.
func pagesFileOf(c *checkpoint, b *images.Bo) string {
	if c.index != nil && int(b.PagesFile) < len(c.index.Header.PagesFiles) {
		return c.index.Header.PagesFiles[b.PagesFile]
	}
	return fmt.Sprintf("pages file %d", b.PagesFile)
}

// contentsOf says where a BO's contents are: "drm-pages-1.img@4096", or
// criu's memory images for a mapped BO.
func contentsOf(c *checkpoint, b *images.Bo) string {
	if b.CpuMapped {
		return mappedContents
	}
	return fmt.Sprintf("%s@%d", pagesFileOf(c, b), b.Offset)
}

const mappedContents = "criu's memory images (mapped)"

// protStr prints PROT_* bits as /proc/PID/maps does.
func protStr(p uint32) string {
	b := []byte("---")
	if p&1 != 0 {
		b[0] = 'r'
	}
	if p&2 != 0 {
		b[1] = 'w'
	}
	if p&4 != 0 {
		b[2] = 'x'
	}
	return string(b)
}

func hexU64(v uint64) string { return fmt.Sprintf("0x%x", v) }

func domainName(d uapi.Domain) string {
	s := d.String()
	return strings.TrimPrefix(s, "DOMAIN_")
}

func opName(op uint32) string { return gpu.Op(op).String() }

// buildView turns a loaded checkpoint into the view show and graph print.
func buildView(c *checkpoint) *View {
	v := &View{
		SchemaVersion: SchemaVersion, Dir: c.dir,
		Inventory: InventoryView{Version: c.inv.GetVersion(), PluginVersion: c.inv.GetPluginVersion(), Complete: c.inv.GetComplete()},
		Processes: []ProcessView{}, Files: []FileView{}, Channels: []ChannelView{}, DmaBufs: []DmaBufView{}, Bos: []BoView{},
		Warnings: []string{}, Problems: []string{},
	}
	// Pids below are the ones drmcrit shows (c.shownPid).
	comms := map[int32]string{}
	for _, p := range c.inv.GetProcesses() {
		comms[c.shownPid(p.Pid)] = p.Comm
	}
	// fds[inode] = fds holding it, by pid.
	fds := map[uint64]map[int32][]int32{}
	addFd := func(ino uint64, pid, fd int32) {
		if fds[ino] == nil {
			fds[ino] = map[int32][]int32{}
		}
		fds[ino][pid] = append(fds[ino][pid], fd)
	}
	kindOf := func(ino uint64) string {
		if _, ok := c.files[ino]; ok {
			return KindDrmFile
		}
		if _, ok := c.dmabufs[ino]; ok {
			return KindDmaBuf
		}
		if _, ok := c.channels[ino]; ok {
			return KindChannel
		}
		return ""
	}
	held := map[uint64]bool{}
	if c.criu != nil {
		v.Source = SourceCriu
		for _, p := range c.criu.procs {
			comms[p.pid] = p.comm
			ppid := p.ppid
			pv := ProcessView{Pid: p.pid, Ppid: &ppid, Comm: p.comm, Fds: []FdView{}}
			for _, f := range p.fds {
				k := kindOf(f.ino)
				if !f.isSk || k == "" {
					continue
				}
				fd := f.fd
				pv.Fds = append(pv.Fds, FdView{Fd: &fd, Kind: k, Inode: f.ino})
				addFd(f.ino, p.pid, f.fd)
				held[f.ino] = true
			}
			v.Processes = append(v.Processes, pv)
		}
		for _, p := range c.inv.GetProcesses() {
			if c.criuProcOf(p.Pid) == nil {
				v.Warnings = append(v.Warnings, fmt.Sprintf("pid %d (%s) of the GPU inventory is not in CRIU's pstree.img", c.shownPid(p.Pid), p.Comm))
			}
		}
	} else {
		v.Source = SourceInventory
		if c.hasCriu && c.criuErr != nil {
			v.Warnings = append(v.Warnings, fmt.Sprintf("CRIU images unusable (%v): processes from the GPU inventory, fd numbers unknown", c.criuErr))
		}
		for _, p := range c.inv.GetProcesses() {
			pv := ProcessView{Pid: c.shownPid(p.Pid), Comm: p.Comm, Fds: []FdView{}}
			for _, ino := range p.Inodes {
				k := kindOf(ino)
				if k == "" {
					continue
				}
				pv.Fds = append(pv.Fds, FdView{Kind: k, Inode: ino})
				held[ino] = true
			}
			v.Processes = append(v.Processes, pv)
		}
	}
	mappings := map[int32][]*images.CpuMapping{} // by shown pid
	for _, p := range c.inv.GetProcesses() {
		mappings[c.shownPid(p.Pid)] = append(mappings[c.shownPid(p.Pid)], p.Mappings...)
	}
	for i := range v.Processes {
		pv := &v.Processes[i]
		pv.CPUMappings = []CPUMappingView{}
		for _, m := range mappings[pv.Pid] {
			pv.CPUMappings = append(pv.CPUMappings, CPUMappingView{Start: hexU64(m.Start), End: hexU64(m.End), Size: m.End - m.Start,
				BoOffset: m.Offset, Prot: protStr(m.Prot), Shared: m.Shared, BoID: m.BoId, MemfdInode: m.MemfdInode})
		}
	}
	sort.SliceStable(v.Processes, func(i, j int) bool { return v.Processes[i].Pid < v.Processes[j].Pid })
	for _, ino := range sortedKeys(c.files) {
		if !held[ino] && !c.files[ino].InFlight {
			v.Warnings = append(v.Warnings, fmt.Sprintf("drm file inode %d (pid %d) is in no process's fd table", ino, c.shownPid(c.files[ino].Pid)))
		}
	}
	for _, ino := range sortedKeys(c.dmabufs) {
		if !held[ino] && !c.dmabufs[ino].InFlight {
			v.Warnings = append(v.Warnings, fmt.Sprintf("dma-buf inode %d (pid %d) is in no process's fd table", ino, c.shownPid(c.dmabufs[ino].Pid)))
		}
	}
	for _, ino := range sortedKeys(c.channels) {
		if !held[ino] {
			v.Warnings = append(v.Warnings, fmt.Sprintf("reply channel inode %d (pid %d) is in no process's fd table", ino, c.shownPid(c.channels[ino].Pid)))
		}
	}
	fdsOf := func(ino uint64, recorded int32) []int32 {
		out := append([]int32(nil), fds[ino][c.shownPid(recorded)]...)
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}

	// holders[bo] = every file handle and dma-buf that holds it.
	holders := map[uint64][]HolderView{}
	for _, ino := range sortedKeys(c.files) {
		f := c.files[ino]
		for _, h := range f.State.GetHandles() {
			pid := c.shownPid(f.Pid)
			holders[h.BoId] = append(holders[h.BoId], HolderView{Kind: KindDrmFile, Inode: ino, Pid: pid, Comm: comms[pid], Handle: h.Handle, Fds: fdsOf(ino, f.Pid)})
		}
	}
	for _, ino := range sortedKeys(c.dmabufs) {
		d := c.dmabufs[ino]
		pid := c.shownPid(d.Pid)
		holders[d.BoId] = append(holders[d.BoId], HolderView{Kind: KindDmaBuf, Inode: ino, Pid: pid, Comm: comms[pid], Fds: fdsOf(ino, d.Pid)})
	}
	for _, pv := range v.Processes {
		for _, m := range pv.CPUMappings {
			holders[m.BoID] = append(holders[m.BoID], HolderView{Kind: KindMapping, Inode: m.MemfdInode, Pid: pv.Pid, Comm: pv.Comm, Address: m.Start})
		}
	}
	digest := func(id uint64) string {
		if b, ok := c.bos[id]; ok {
			return contentsOf(c, b)
		}
		return ""
	}

	for _, ino := range sortedKeys(c.files) {
		fv := fileView(c, c.files[ino], holders, digest)
		if c.files[ino].InFlight {
			fv.InFlight = c.inFlightView(ino)
		}
		v.Files = append(v.Files, fv)
	}
	for _, ino := range sortedKeys(c.channels) {
		ch := c.channels[ino]
		v.Channels = append(v.Channels, ChannelView{Inode: ino, Pid: c.shownPid(ch.Pid), FileInode: ch.FileInode,
			Fds: fdsOf(ino, ch.Pid), PendingIO: pendingView(ch.Io)})
	}
	for _, ino := range sortedKeys(c.dmabufs) {
		d := c.dmabufs[ino]
		dv := DmaBufView{Inode: ino, Pid: c.shownPid(d.Pid), BoID: d.BoId, Contents: digest(d.BoId), Fds: fdsOf(ino, d.Pid)}
		if d.InFlight {
			dv.InFlight = c.inFlightView(ino)
		}
		if b, ok := c.bos[d.BoId]; ok {
			dv.Size, dv.Domain = b.State.Size, domainName(b.State.Domain)
		}
		v.DmaBufs = append(v.DmaBufs, dv)
	}
	for _, id := range sortedKeys(c.bos) {
		b := c.bos[id]
		st := b.State
		hs := holders[id]
		if hs == nil {
			hs = []HolderView{}
		}
		v.Bos = append(v.Bos, BoView{
			BoID: id, Size: st.Size, Domain: domainName(st.Domain), Flags: hexU64(st.Flags), Alignment: st.Alignment,
			Minor: st.Minor, DmabufInode: st.DmabufInode, PagesFile: pagesFileOf(c, b), Offset: b.Offset, CPUMapped: b.CpuMapped, Holders: hs,
		})
		if b.CpuMapped {
			v.Bos[len(v.Bos)-1].PagesFile = ""
		}
	}
	for i := range v.Warnings {
		v.Warnings[i] = plainText(v.Warnings[i])
	}
	for i := range v.Files {
		v.Files[i].DriverError = plainText(v.Files[i].DriverError)
		for j := range v.Files[i].DriverObjects {
			v.Files[i].DriverObjects[j] = plainText(v.Files[i].DriverObjects[j])
		}
	}
	return v
}

// inFlightView says which socket's queue held a file in flight.
func (c *checkpoint) inFlightView(ino uint64) *InFlightView {
	v := &InFlightView{}
	if c.criu == nil {
		return v
	}
	v.QueueInode = c.criu.inFlight[ino]
	if v.QueueInode != 0 {
		for _, h := range c.criu.byIno[v.QueueInode] {
			v.QueueFds = append(v.QueueFds, HolderFd{Pid: h.pid, Fd: h.fd})
		}
	}
	return v
}

// pendingView describes the traffic in flight on a connection; nil when
// there was none. Format 2's single request and reply count as the first.
func pendingView(io *uapi.PendingIO) *PendingView {
	var reqs [][]byte
	if len(io.GetRequest()) > 0 {
		reqs = append(reqs, io.GetRequest())
	}
	for _, r := range io.GetRequests() {
		reqs = append(reqs, r.GetPacket())
	}
	replies := io.GetUnreadReplies()
	if len(io.GetUnreadReply()) > 0 {
		replies = append([]*uapi.UnreadReply{{Packet: io.UnreadReply, DmabufInode: io.UnreadReplyDmabufInode, Bo: io.UnreadReplyBo}}, replies...)
	}
	if len(reqs) == 0 && len(replies) == 0 {
		return nil
	}
	pv := &PendingView{Requests: []PacketView{}, UnreadReplies: []PacketView{}}
	for _, pkt := range reqs {
		pv.Requests = append(pv.Requests, packetView(pkt))
		pv.RequestBytes += len(pkt)
	}
	for i, r := range replies {
		p := packetView(r.GetPacket())
		p.DmabufInode, p.BoID = r.GetDmabufInode(), r.GetBo().GetBoId()
		if i == 0 {
			pv.UnreadReplyDmabufInode, pv.UnreadReplyBoID = p.DmabufInode, p.BoID
		}
		pv.UnreadReplies = append(pv.UnreadReplies, p)
		pv.UnreadReplyBytes += len(r.GetPacket())
	}
	return pv
}

// packetView names a packet by its header ("?" when it has none).
func packetView(pkt []byte) PacketView {
	p := PacketView{Op: "?", Bytes: len(pkt)}
	if h, err := uapi.ParseHeader(pkt); err == nil {
		p.Op, p.Seq, p.Status = h.Op.String(), h.Seq, h.Status
	}
	return p
}

func fileView(c *checkpoint, f *images.DrmFile, holders map[uint64][]HolderView, digest func(uint64) string) FileView {
	st := f.State
	fv := FileView{
		Inode: f.Inode, Pid: c.shownPid(f.Pid), Device: fmt.Sprintf("renderD%d", st.GetMinor()), Minor: st.GetMinor(),
		Driver: f.Driver, DriverVersion: f.DriverVersion, GpuID: st.GetGpuId(), FileID: st.GetFileId(),
		Handles: []HandleView{}, Contexts: []ContextView{}, Syncobjs: []SyncobjView{}, SwSyncs: []SwSyncView{},
	}
	boState := map[uint64]*uapi.BoState{}
	for _, b := range st.GetBos() {
		boState[b.BoId] = b
	}
	handles := append([]*uapi.HandleState(nil), st.GetHandles()...)
	sort.SliceStable(handles, func(i, j int) bool { return handles[i].Handle < handles[j].Handle })
	for _, h := range handles {
		hv := HandleView{Handle: h.Handle, BoID: h.BoId, Prime: h.Prime, Attachment: h.Attachment, Contents: digest(h.BoId), Mappings: []MappingView{}, SharedWith: []HolderView{}}
		b := boState[h.BoId]
		if rec, ok := c.bos[h.BoId]; ok && b == nil {
			b = rec.State
		}
		if b != nil {
			hv.Size, hv.Domain, hv.Flags = b.Size, domainName(b.Domain), hexU64(b.Flags)
		}
		for _, m := range st.GetMappings() {
			if m.Handle == h.Handle {
				hv.Mappings = append(hv.Mappings, MappingView{VA: hexU64(m.Va), Size: m.Size, BoOffset: m.BoOffset, Flags: hexU64(m.Flags)})
			}
		}
		for _, o := range holders[h.BoId] {
			if o.Kind == KindDrmFile && o.Inode == f.Inode && o.Handle == h.Handle {
				continue
			}
			hv.SharedWith = append(hv.SharedWith, o)
		}
		fv.Handles = append(fv.Handles, hv)
	}
	fv.PendingIO = pendingView(st.GetIo())
	ds, err := driverState(f)
	if err != nil {
		fv.DriverError = err.Error()
		return fv
	}
	fv.DriverObjects = ds.Objects
	for _, cx := range ds.Contexts {
		cv := ContextView{ID: cx.CtxId, Priority: cx.Priority, Guilty: cx.Guilty, Submitted: cx.Submitted, Completed: cx.Completed, Jobs: []JobView{}}
		for _, j := range cx.Jobs {
			jv := JobView{FenceID: j.FenceId, LongRunning: j.LongRunning, Commands: []string{},
				ProgressCmd: j.ProgressCmd, ProgressIter: j.ProgressIter, ProgressAcc: j.ProgressAcc, BoIDs: append([]uint64{}, j.BoIds...), WaitsOn: append([]uint64{}, j.DepFenceIds...)}
			for _, cmd := range j.Commands {
				jv.Commands = append(jv.Commands, opName(cmd.Op))
			}
			if j.ProgressCmd >= 0 && int(j.ProgressCmd) < len(j.Commands) {
				jv.Iterations = j.Commands[j.ProgressCmd].Iterations
			}
			jv.State = "queued"
			if j.ProgressCmd > 0 || j.ProgressIter > 0 || j.ProgressAcc > 0 {
				jv.State = "preempted"
			}
			cv.Jobs = append(cv.Jobs, jv)
		}
		fv.Contexts = append(fv.Contexts, cv)
	}
	for _, s := range ds.Syncobjs {
		fv.Syncobjs = append(fv.Syncobjs, SyncobjView{Handle: s.Handle, Kind: s.Kind.String(), Error: s.Error, FenceID: s.FenceId, Timeline: s.Timeline, Point: s.Point})
	}
	for _, s := range ds.SwSyncs {
		fv.SwSyncs = append(fv.SwSyncs, SwSyncView{Timeline: s.Timeline, Value: s.Value})
	}
	return fv
}

// driverState decodes a drm file's driver blob through its driver's
// sub-plugin.
func driverState(f *images.DrmFile) (*drmcore.DriverState, error) {
	for _, d := range subplugins.All().Drivers {
		if d.Driver() == f.Driver {
			return d.State(f)
		}
	}
	return nil, fmt.Errorf("no decoder for driver %q", f.Driver)
}
