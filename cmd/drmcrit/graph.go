package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Node ids of the DOT graph.
func procNode(pid int32) string    { return fmt.Sprintf("proc_%d", pid) }
func fileNode(ino uint64) string   { return fmt.Sprintf("file_%d", ino) }
func dmabufNode(ino uint64) string { return fmt.Sprintf("dmabuf_%d", ino) }
func boNode(id uint64) string      { return fmt.Sprintf("bo_%d", id) }

// dotQuote quotes a DOT string.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// writeDOT prints the sharing graph: processes hold drm files and
// dma-bufs by fd and map BOs, drm files hold BOs by handle, dma-bufs
// carry a BO.
func writeDOT(w io.Writer, v *View) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "digraph drm_checkpoint {\n")
	fmt.Fprintf(&b, "  label=%s;\n  labelloc=t;\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n", dotQuote("GPU state of "+v.Dir))
	nodes := map[string]bool{}
	node := func(id, label, attrs string) {
		if nodes[id] {
			return
		}
		nodes[id] = true
		fmt.Fprintf(&b, "  %s [label=%s, %s];\n", id, dotQuote(label), attrs)
	}
	edge := func(from, to, label, attrs string) {
		a := attrs
		if label != "" {
			if a != "" {
				a += ", "
			}
			a += "label=" + dotQuote(label)
		}
		if a != "" {
			a = " [" + a + "]"
		}
		fmt.Fprintf(&b, "  %s -> %s%s;\n", from, to, a)
	}
	for _, p := range v.Processes {
		node(procNode(p.Pid), fmt.Sprintf("pid %d\n%s", p.Pid, p.Comm), "shape=box, style=filled, fillcolor=lightblue")
	}
	for _, f := range v.Files {
		node(fileNode(f.Inode), fmt.Sprintf("drm file ino %d\n%s %s", f.Inode, f.Device, f.Driver), "shape=component")
	}
	for _, d := range v.DmaBufs {
		node(dmabufNode(d.Inode), fmt.Sprintf("dma-buf ino %d", d.Inode), "shape=note")
	}
	for _, bo := range v.Bos {
		extra := ""
		if bo.DmabufInode != 0 {
			extra = fmt.Sprintf("\nkey: dma-buf ino %d", bo.DmabufInode)
		}
		where := fmt.Sprintf("%s@%d", bo.PagesFile, bo.Offset)
		if bo.CPUMapped {
			where = "mapped: in criu's images"
		}
		node(boNode(bo.BoID), fmt.Sprintf("BO %d\n%s %s\n%s%s", bo.BoID, sizeStr(bo.Size), bo.Domain, where, extra), "shape=ellipse, style=filled, fillcolor=lightyellow")
	}
	for _, p := range v.Processes {
		for _, fd := range p.Fds {
			to := fileNode(fd.Inode)
			if fd.Kind == KindDmaBuf {
				to = dmabufNode(fd.Inode)
			}
			edge(procNode(p.Pid), to, "fd "+fdStr(fd.Fd), "")
		}
	}
	for _, f := range v.Files {
		for _, h := range f.Handles {
			if !nodes[boNode(h.BoID)] {
				node(boNode(h.BoID), fmt.Sprintf("BO %d\n(no record)", h.BoID), "shape=ellipse, style=dashed, color=red")
			}
			edge(fileNode(f.Inode), boNode(h.BoID), "handle "+strconv.FormatUint(uint64(h.Handle), 10), "")
		}
	}
	for _, p := range v.Processes {
		for _, m := range p.CPUMappings {
			if !nodes[boNode(m.BoID)] {
				node(boNode(m.BoID), fmt.Sprintf("BO %d\n(no record)", m.BoID), "shape=ellipse, style=dashed, color=red")
			}
			edge(procNode(p.Pid), boNode(m.BoID), "mapped at "+m.Start, "style=dotted")
		}
	}
	for _, d := range v.DmaBufs {
		if !nodes[boNode(d.BoID)] {
			node(boNode(d.BoID), fmt.Sprintf("BO %d\n(no record)", d.BoID), "shape=ellipse, style=dashed, color=red")
		}
		edge(dmabufNode(d.Inode), boNode(d.BoID), "carries", "style=dashed")
	}
	fmt.Fprintf(&b, "}\n")
	_, err := w.Write(b.Bytes())
	return err
}

// errNoDot is returned when rendering needs Graphviz and it is missing.
var errNoDot = errors.New("rendering needs Graphviz's dot, which is not installed (apt-get install graphviz), or print DOT with no -o / -o FILE.dot")

// renderGraph writes the graph to out: DOT for .dot/.gv, through dot for
// .svg and .png.
func renderGraph(v *View, out string) error {
	ext := strings.ToLower(filepath.Ext(out))
	var dot bytes.Buffer
	if err := writeDOT(&dot, v); err != nil {
		return err
	}
	switch ext {
	case ".dot", ".gv":
		if err := os.WriteFile(out, dot.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write graph: %w", err)
		}
		return nil
	case ".svg", ".png":
	default:
		return usageErrorf("graph -o %s: the output must end in .svg, .png, .dot or .gv", out)
	}
	path, err := exec.LookPath(dotBinary)
	if err != nil {
		return fmt.Errorf("graph -o %s: %w", out, errNoDot)
	}
	cmd := exec.Command(path, "-T"+ext[1:], "-o", out)
	cmd.Stdin = &dot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("graph -o %s: dot: %v: %s", out, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// dotBinary is the Graphviz program (a variable for the tests).
var dotBinary = "dot"
