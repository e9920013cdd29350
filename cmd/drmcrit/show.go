package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// node is one line of the text tree with its children.
type node struct {
	text string
	kids []*node
}

func (n *node) add(format string, args ...any) *node {
	k := &node{text: fmt.Sprintf(format, args...)}
	n.kids = append(n.kids, k)
	return k
}

func (n *node) write(w io.Writer, prefix string, last, root bool) {
	switch {
	case root:
		fmt.Fprintln(w, n.text)
	case last:
		fmt.Fprintf(w, "%s└── %s\n", prefix, n.text)
		prefix += "    "
	default:
		fmt.Fprintf(w, "%s├── %s\n", prefix, n.text)
		prefix += "│   "
	}
	for i, k := range n.kids {
		k.write(w, prefix, i == len(n.kids)-1, false)
	}
}

// sizeStr prints a byte count in binary units when it is a whole number
// of them.
func sizeStr(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// short is where show says a BO's contents are ("?" without a record).
func short(contents string) string {
	if contents == "" {
		return "?"
	}
	return contents
}

func fdStr(fd *int32) string {
	if fd == nil {
		return "?"
	}
	return strconv.Itoa(int(*fd))
}

func holderStr(h HolderView) string {
	who := fmt.Sprintf("pid %d", h.Pid)
	if h.Comm != "" {
		who += " (" + h.Comm + ")"
	}
	fds := ""
	if len(h.Fds) > 0 {
		var s []string
		for _, fd := range h.Fds {
			s = append(s, strconv.Itoa(int(fd)))
		}
		fds = " fd " + strings.Join(s, ",")
	}
	switch h.Kind {
	case KindDmaBuf:
		return fmt.Sprintf("%s%s dma-buf ino %d", who, fds, h.Inode)
	case KindMapping:
		return fmt.Sprintf("%s CPU mapping at %s", who, h.Address)
	}
	return fmt.Sprintf("%s%s drm file ino %d handle %d", who, fds, h.Inode, h.Handle)
}

// maxShownProblems bounds the problems show lists under its verdict.
const maxShownProblems = 10

// verdict says in a few words whether the checkpoint restores.
func verdict(v *View) string {
	if len(v.Problems) == 0 {
		return "OK, restores (drmcrit verify finds no problem)"
	}
	return fmt.Sprintf("%s, restore refuses it (drmcrit verify %s lists them)", plural(len(v.Problems), "PROBLEM", "PROBLEMS"), v.Dir)
}

// writeText prints the view as a tree.
func writeText(w io.Writer, v *View) {
	nChannels := ""
	if len(v.Channels) > 0 {
		nChannels = fmt.Sprintf(", %d reply channel(s)", len(v.Channels))
	}
	root := &node{text: fmt.Sprintf("checkpoint %s: %d process(es), %d drm file(s)%s, %d dma-buf(s), %d BO(s) (image version %d, plugin %s); verdict: %s",
		v.Dir, len(v.Processes), len(v.Files), nChannels, len(v.DmaBufs), len(v.Bos), v.Inventory.Version, v.Inventory.PluginVersion, verdict(v))}
	for i, p := range v.Problems {
		if i == maxShownProblems {
			root.add("... and %d more problem(s)", len(v.Problems)-i)
			break
		}
		root.add("PROBLEM: %s", p)
	}
	if v.Source == SourceInventory {
		root.add("note: no usable CRIU images: processes come from the GPU inventory and fd numbers are shown as \"?\"")
	}
	files := map[uint64]*FileView{}
	for i := range v.Files {
		files[v.Files[i].Inode] = &v.Files[i]
	}
	dmabufs := map[uint64]*DmaBufView{}
	for i := range v.DmaBufs {
		dmabufs[v.DmaBufs[i].Inode] = &v.DmaBufs[i]
	}
	channels := map[uint64]*ChannelView{}
	for i := range v.Channels {
		channels[v.Channels[i].Inode] = &v.Channels[i]
	}
	bos := map[uint64]*BoView{}
	for i := range v.Bos {
		bos[v.Bos[i].BoID] = &v.Bos[i]
	}
	for _, p := range v.Processes {
		pn := root.add("pid %d (%s)", p.Pid, p.Comm)
		if len(p.Fds) == 0 && len(p.CPUMappings) == 0 {
			pn.text += ": no GPU files"
		}
		for _, fd := range p.Fds {
			switch fd.Kind {
			case KindDrmFile:
				addFile(pn, fd, files[fd.Inode])
			case KindDmaBuf:
				d := dmabufs[fd.Inode]
				pn.add("fd %s → dma-buf ino %d: BO %d (%s, %s, in %s)", fdStr(fd.Fd), d.Inode, d.BoID, sizeStr(d.Size), d.Domain, short(d.Contents))
			case KindChannel:
				ch := channels[fd.Inode]
				cn := pn.add("fd %s → reply channel ino %d of drm file ino %d", fdStr(fd.Fd), ch.Inode, ch.FileInode)
				addPending(cn, ch.PendingIO)
			}
		}
		for _, m := range p.CPUMappings {
			what := fmt.Sprintf("BO %d", m.BoID)
			if b := bos[m.BoID]; b != nil {
				what += fmt.Sprintf(" (%s, %s)", sizeStr(b.Size), b.Domain)
			}
			sharing := "private"
			if m.Shared {
				sharing = "shared"
			}
			pn.add("%s mapped at %s +%s (BO offset 0x%x, %s, %s, memfd ino %d)", what, m.Start, sizeStr(m.Size), m.BoOffset, m.Prot, sharing, m.MemfdInode)
		}
	}
	var flight *node
	inFlight := func(what string, iv *InFlightView) {
		if flight == nil {
			flight = root.add("in flight at the dump (held by no task; criu restores them into the socket queue):")
		}
		where := "a unix socket's queue"
		if iv.QueueInode != 0 {
			where = fmt.Sprintf("the queue of unix socket ino %d", iv.QueueInode)
			var hs []string
			for _, h := range iv.QueueFds {
				hs = append(hs, fmt.Sprintf("pid %d fd %d", h.Pid, h.Fd))
			}
			if hs != nil {
				where += " (" + strings.Join(hs, ", ") + ")"
			}
		}
		flight.add("%s, in %s", what, where)
	}
	for i := range v.Files {
		if f := &v.Files[i]; f.InFlight != nil {
			inFlight(fmt.Sprintf("drm file ino %d: %s, driver %s", f.Inode, f.Device, f.Driver), f.InFlight)
		}
	}
	for _, d := range v.DmaBufs {
		if d.InFlight != nil {
			inFlight(fmt.Sprintf("dma-buf ino %d: BO %d (%s, %s, in %s)", d.Inode, d.BoID, sizeStr(d.Size), d.Domain, short(d.Contents)), d.InFlight)
		}
	}
	for _, wmsg := range v.Warnings {
		root.add("warning: %s", wmsg)
	}
	root.write(w, "", true, true)
}

// addPending lists the traffic in flight on a connection.
func addPending(parent *node, p *PendingView) {
	if p == nil {
		return
	}
	n := parent.add("in flight: %s to replay, %s to send again", plural(len(p.Requests), "request", "requests"),
		plural(len(p.UnreadReplies), "unread reply", "unread replies"))
	for _, r := range p.Requests {
		n.add("request %s seq %d (%d bytes)", r.Op, r.Seq, r.Bytes)
	}
	for _, r := range p.UnreadReplies {
		s := fmt.Sprintf("unread reply %s seq %d (%d bytes", r.Op, r.Seq, r.Bytes)
		if r.Status < 0 {
			s += fmt.Sprintf(", error %d", r.Status)
		}
		if r.DmabufInode != 0 {
			s += fmt.Sprintf(", dma-buf ino %d of BO %d", r.DmabufInode, r.BoID)
		}
		n.add("%s)", s)
	}
}

func addFile(parent *node, fd FdView, f *FileView) {
	fn := parent.add("fd %s → drm file ino %d: %s, driver %s (blob v%d), gpu id 0x%x, file id %d",
		fdStr(fd.Fd), f.Inode, f.Device, f.Driver, f.DriverVersion, f.GpuID, f.FileID)
	for _, h := range f.Handles {
		prime := ""
		if h.Prime {
			prime = ", prime"
		}
		if h.Attachment {
			prime += ", import attachment"
		}
		hn := fn.add("BO handle %d: id %d, %s, %s, flags %s%s, in %s", h.Handle, h.BoID, sizeStr(h.Size), h.Domain, h.Flags, prime, short(h.Contents))
		for _, m := range h.Mappings {
			hn.add("VA %s +%s (BO offset 0x%x, flags %s)", m.VA, sizeStr(m.Size), m.BoOffset, m.Flags)
		}
		for _, s := range h.SharedWith {
			hn.add("shared with %s", holderStr(s))
		}
	}
	for _, c := range f.Contexts {
		extra := ""
		if c.Guilty {
			extra = ", GUILTY"
		}
		cn := fn.add("context %d: priority %d, submitted %d, completed %d%s", c.ID, c.Priority, c.Submitted, c.Completed, extra)
		for _, j := range c.Jobs {
			kind := "job"
			if j.LongRunning {
				kind = "long-running job"
			}
			progress := ""
			if j.State == "preempted" {
				progress = fmt.Sprintf(" at command %d/%d", j.ProgressCmd+1, len(j.Commands))
				if j.Iterations > 0 {
					progress += fmt.Sprintf(", iteration %d/%d", j.ProgressIter, j.Iterations)
				}
			}
			var bos []string
			for _, id := range j.BoIDs {
				bos = append(bos, strconv.FormatUint(id, 10))
			}
			waits := ""
			if len(j.WaitsOn) > 0 {
				var ids []string
				for _, id := range j.WaitsOn {
					ids = append(ids, strconv.FormatUint(id, 10))
				}
				waits = ", waits on fence " + strings.Join(ids, ",")
			}
			cn.add("%s fence %d: %s%s [%s], BOs %s%s", kind, j.FenceID, j.State, progress, strings.Join(j.Commands, " "), strings.Join(bos, ","), waits)
		}
	}
	for _, s := range f.Syncobjs {
		desc := s.Kind
		switch s.Kind {
		case "JOB":
			desc = fmt.Sprintf("fence of job %d", s.FenceID)
		case "SW_SYNC":
			desc = fmt.Sprintf("sw_sync timeline %d point %d", s.Timeline, s.Point)
		case "SIGNALED":
			desc = fmt.Sprintf("signaled (error %d)", s.Error)
		case "EMPTY":
			desc = "empty"
		}
		fn.add("syncobj %d: %s", s.Handle, desc)
	}
	for _, s := range f.SwSyncs {
		fn.add("sw_sync timeline %d: value %d", s.Timeline, s.Value)
	}
	for _, o := range f.DriverObjects {
		fn.add("%s: %s", f.Driver, o)
	}
	addPending(fn, f.PendingIO)
	if f.DriverError != "" {
		fn.add("driver state unreadable: %s", f.DriverError)
	}
}
