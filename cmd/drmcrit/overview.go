package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"drmcr/images"
	"drmcr/internal/units"
)

// This file is `drmcrit info DIR`: a checkpoint on one screen, the way
// `crit info` and `crit x DIR ps` give a first look at CRIU's images.

// maxVerdictLines bounds the problems info lists; verify lists them all.
const maxVerdictLines = 5

// plural is "1 BO", "2 BOs".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// humanSize is sizeStr's exact form when there is one, else a size in
// the largest binary unit below it, to one decimal.
func humanSize(n uint64) string {
	if s := sizeStr(n); n < 1<<10 || !strings.HasSuffix(s, " B") {
		return s
	}
	return units.Format(n)
}

// writeInfo prints the overview of a loaded checkpoint.
func writeInfo(w io.Writer, c *checkpoint) {
	v := buildView(c)
	probs := verifyCheckpoint(c)
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-10s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "checkpoint %s\n", c.dir)

	switch {
	case c.criu != nil:
		t := c.criu
		threads := 0
		for _, p := range t.procs {
			threads += max(p.threads, 1)
		}
		s := fmt.Sprintf("%s, %s", plural(len(t.procs), "process", "processes"), plural(threads, "thread", "threads"))
		switch {
		case t.inv.err != nil:
			s += fmt.Sprintf("; inventory.img unreadable (%v)", t.inv.err)
		case t.inv.plugins == nil:
			s += fmt.Sprintf("; image format v%d; no plugin list (criu < 4.0)", t.inv.imgVersion)
		case len(t.inv.plugins) == 0:
			s += fmt.Sprintf("; image format v%d; plugins restore requires: none recorded", t.inv.imgVersion)
		default:
			s += fmt.Sprintf("; image format v%d; plugins restore requires: %s", t.inv.imgVersion, strings.Join(t.inv.plugins, ", "))
		}
		line("CRIU", "%s", s)
	case c.hasCriu:
		line("CRIU", "images unusable (%v)", c.criuErr)
	default:
		line("CRIU", "no images (the plugin's images alone: pids from its inventory, fd numbers unknown)")
	}

	state := "complete"
	if !v.Inventory.Complete {
		state = "INCOMPLETE (restore refuses it)"
	}
	line("GPU state", "%s; DRM image format v%d, written by drm_plugin %s", state, v.Inventory.Version, v.Inventory.PluginVersion)

	withGPU, drmFds, dmabufFds := 0, 0, 0
	for _, p := range v.Processes {
		if len(p.Fds) > 0 {
			withGPU++
		}
		for _, fd := range p.Fds {
			if fd.Kind == KindDrmFile {
				drmFds++
			} else {
				dmabufFds++
			}
		}
	}
	line("processes", "%d of %d hold GPU files: %s, %s", withGPU, len(v.Processes),
		plural(drmFds, "drm file fd", "drm file fds"), plural(dmabufFds, "dma-buf fd", "dma-buf fds"))

	// Devices: drm files grouped by device, driver, gpu id and blob version.
	type devKey struct {
		device, driver string
		gpuID, blob    uint32
	}
	devs := map[devKey]int{}
	var keys []devKey
	for _, f := range v.Files {
		k := devKey{f.Device, f.Driver, f.GpuID, f.DriverVersion}
		if devs[k] == 0 {
			keys = append(keys, k)
		}
		devs[k]++
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	label := "drm files"
	if len(keys) == 0 {
		line(label, "none")
	}
	for _, k := range keys {
		line(label, "%d on %s (%s, gpu id %#x, driver blob v%d)", devs[k], k.device, k.driver, k.gpuID, k.blob)
		label = ""
	}
	line("dma-bufs", "%d", len(v.DmaBufs))

	var total uint64
	byDomain := map[string]uint64{}
	shared := 0
	for _, b := range v.Bos {
		total += b.Size
		byDomain[b.Domain] += b.Size
		if b.DmabufInode != 0 {
			shared++
		}
	}
	doms := []string{fmt.Sprintf("VRAM %s", humanSize(byDomain["VRAM"])), fmt.Sprintf("GTT %s", humanSize(byDomain["GTT"]))}
	delete(byDomain, "VRAM")
	delete(byDomain, "GTT")
	others := map[string]bool{} // domains this drmcrit does not name
	for d := range byDomain {
		others[d] = true
	}
	for _, d := range sortedStrings(others) {
		doms = append(doms, fmt.Sprintf("%s %s", d, humanSize(byDomain[d])))
	}
	sums := "no index"
	if c.index != nil {
		sums = "checksummed with " + c.index.Header.Checksum
	}
	line("BOs", "%s, %s (%s); %d shared through dma-bufs; contents saved once each in pages files, %s",
		plural(len(v.Bos), "BO", "BOs"), humanSize(total), strings.Join(doms, ", "), shared, sums)

	ctxs, guilty, preempted, queued, requests, replies := 0, 0, 0, 0, 0, 0
	for _, f := range v.Files {
		ctxs += len(f.Contexts)
		for _, cx := range f.Contexts {
			if cx.Guilty {
				guilty++
			}
			for _, j := range cx.Jobs {
				if j.State == "preempted" {
					preempted++
				} else {
					queued++
				}
			}
		}
		if p := f.PendingIO; p != nil {
			requests += len(p.Requests)
			replies += len(p.UnreadReplies)
		}
	}
	for _, ch := range v.Channels {
		if p := ch.PendingIO; p != nil {
			requests += len(p.Requests)
			replies += len(p.UnreadReplies)
		}
	}
	s := fmt.Sprintf("%s; saved jobs: %d preempted, %d queued", plural(ctxs, "context", "contexts"), preempted, queued)
	if guilty > 0 {
		s += fmt.Sprintf("; %d guilty", guilty)
	}
	line("contexts", "%s", s)
	line("in flight", "%s, %s (replayed or re-sent at restore)", plural(requests, "request", "requests"), plural(replies, "unread reply", "unread replies"))
	line("disk", "%s", diskUsage(c.dir))

	switch {
	case len(probs) == 0 && len(v.Warnings) == 0:
		line("verdict", "OK: drmcrit verify finds no problem")
	case len(probs) == 0:
		line("verdict", "OK for restore (drmcrit verify finds no problem), with %s (drmcrit show lists them)", plural(len(v.Warnings), "warning", "warnings"))
	default:
		line("verdict", "%s (drmcrit verify %s lists them all):", plural(len(probs), "PROBLEM", "PROBLEMS"), c.dir)
		for i, p := range probs {
			if i == maxVerdictLines {
				fmt.Fprintf(w, "  %-10s ... and %d more\n", "", len(probs)-i)
				break
			}
			fmt.Fprintf(w, "  %-10s %s\n", "", p)
		}
	}
}

// diskUsage says how the directory's bytes split between the plugin's
// images, BO contents and everything else (criu's images, logs).
func diskUsage(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Sprintf("unreadable (%v)", err)
	}
	var meta, pages, other uint64
	var nmeta, npages int
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		n := uint64(fi.Size())
		switch images.KindOf(e.Name()) {
		case images.KindPages:
			pages += n
			npages++
		case images.KindUnknown:
			other += n
		default:
			meta += n
			nmeta++
		}
	}
	return fmt.Sprintf("%s in %s, %s in %s, %s in other files",
		humanSize(meta), plural(nmeta, "DRM image", "DRM images"), humanSize(pages), plural(npages, "pages file", "pages files"), humanSize(other))
}
