package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// This file is `drmcrit x DIR ps|fds`: CRIU's own view of the dumped
// processes, as `crit x DIR ps|fds` prints it, with the GPU files named.
// To crit (and criu) a drm file or a dma-buf is just a unix socket,
// unix[<inode> (<peer>)]; drmcrit adds what the plugin's images say it is.

// errNeedCriu is x's error for a directory without usable CRIU images.
var errNeedCriu = errors.New("drmcrit x reads CRIU's images (pstree.img, core-, ids-, fdinfo-, fs-<pid>.img, files.img)")

// gpuLabel says what the plugin's images hold under a socket inode: a
// drm file or a dma-buf, or "" for a socket that is not the plugin's.
func gpuLabel(v *View, ino uint64) string {
	for i := range v.Files {
		f := &v.Files[i]
		if f.Inode != ino {
			continue
		}
		jobs := 0
		for _, c := range f.Contexts {
			jobs += len(c.Jobs)
		}
		s := fmt.Sprintf("drm file: %s %s, gpu id %#x, %s, %s", f.Device, f.Driver, f.GpuID,
			plural(len(f.Handles), "BO handle", "BO handles"), plural(len(f.Contexts), "context", "contexts"))
		if jobs > 0 {
			s += ", " + plural(jobs, "saved job", "saved jobs")
		}
		return s
	}
	for _, d := range v.DmaBufs {
		if d.Inode == ino {
			return fmt.Sprintf("dma-buf: BO %d, %s %s", d.BoID, sizeStr(d.Size), d.Domain)
		}
	}
	return ""
}

// gpuSummary is what a process holds of the GPU state, for ps.
func gpuSummary(v *View, pid int32) string {
	for _, p := range v.Processes {
		if p.Pid != pid || len(p.Fds) == 0 {
			continue
		}
		files, dmabufs := 0, 0
		devs := map[string]bool{}
		for _, fd := range p.Fds {
			if fd.Kind == KindDmaBuf {
				dmabufs++
				continue
			}
			files++
			for _, f := range v.Files {
				if f.Inode == fd.Inode {
					devs[f.Device] = true
				}
			}
		}
		var parts []string
		if files > 0 {
			parts = append(parts, fmt.Sprintf("%s (%s)", plural(files, "drm file", "drm files"), strings.Join(sortedStrings(devs), ", ")))
		}
		if dmabufs > 0 {
			parts = append(parts, plural(dmabufs, "dma-buf", "dma-bufs"))
		}
		return "[GPU: " + strings.Join(parts, ", ") + "]"
	}
	return ""
}

// writePs prints the process tree like crit x ps, each process with what
// it holds of the GPU state.
func writePs(w io.Writer, c *checkpoint, v *View) {
	kids := map[int32][]*criuProc{}
	byPid := map[int32]bool{}
	for _, p := range c.criu.procs {
		byPid[p.pid] = true
	}
	var roots []*criuProc
	for _, p := range c.criu.procs {
		if byPid[p.ppid] && p.ppid != p.pid {
			kids[p.ppid] = append(kids[p.ppid], p)
		} else {
			roots = append(roots, p)
		}
	}
	fmt.Fprintf(w, "%7s%7s%7s   %s\n", "PID", "PGID", "SID", "COMM")
	var show func(p *criuProc, depth int)
	show = func(p *criuProc, depth int) {
		line := fmt.Sprintf("%7d%7d%7d   %s%s", p.pid, p.pgid, p.sid, strings.Repeat("    ", depth), p.comm)
		if g := gpuSummary(v, p.pid); g != "" {
			line += "  " + g
		}
		fmt.Fprintln(w, line)
		ks := kids[p.pid]
		sort.Slice(ks, func(i, j int) bool { return ks[i].pid < ks[j].pid })
		for _, k := range ks {
			show(k, depth+1)
		}
	}
	for _, r := range roots {
		show(r, 0)
	}
}

// writeFds prints every fd of every process like crit x fds, the drm
// files and dma-bufs marked with what they are.
func writeFds(w io.Writer, c *checkpoint, v *View) {
	for _, p := range c.criu.procs {
		fmt.Fprintf(w, "%d (%s)\n", p.pid, p.comm)
		for _, fd := range p.fds {
			line := fmt.Sprintf("\t%7d: %s", fd.fd, fd.desc)
			if fd.isSk {
				if g := gpuLabel(v, fd.ino); g != "" {
					line += "  [" + g + "]"
				}
			}
			fmt.Fprintln(w, line)
		}
		if p.cwd != "" {
			fmt.Fprintf(w, "\t%7s: %s\n", "cwd", p.cwd)
		}
		if p.root != "" {
			fmt.Fprintf(w, "\t%7s: %s\n", "root", p.root)
		}
	}
}
