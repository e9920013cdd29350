package main

import (
	"fmt"
	"sort"

	"drmcr/amdgpu"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// verifyChecks documents what verify checks (printed by `drmcrit help
// verify`).
const verifyChecks = `drmcrit verify DIR checks a checkpoint's GPU state and prints one line per
problem (exit status 1 if there is any, 0 otherwise):

  - DIR is a checkpoint (CRIU or DRM images) with GPU state: drm-inventory.img
    is present, readable, of a supported version and marked complete;
  - every image the inventory lists exists, decodes, has a supported version
    and describes the object its name says; no DRM image is left out of the
    inventory and the inventory lists nothing twice;
  - every shared key (a BO's dma-buf inode) has exactly one BO record, and a
    dma-buf's image and its BO's record agree on it;
  - per drm file: handles are non-zero and unique, every handle, VA mapping,
    job and pending reply refers to a dumped BO (and mappings to a handle of
    the file), mappings fit in their BO, VA ranges do not overlap, the file's
    copy of each BO's state matches the BO record;
  - every dma-buf refers to a dumped BO;
  - queued work that waits on another file's job has that job in the dump;
  - the BO index (drm-bo-index.img) lists exactly the inventory's BOs, each
    once; its checksummed chunks cover every byte of every BO without
    overlapping; every pages file exists, holds every chunk, and every
    chunk's bytes match its BLAKE3 checksum (the check a restore makes);
  - driver blobs decode (amdgpu.Decode) and their version is the image's;
  - the processes of the inventory hold exactly the files it lists and, when
    CRIU's images are there, are processes of its pstree.img; CRIU's images
    (pstree, core, ids, fdinfo, files) are readable.
`

// verify returns the problems of a checkpoint directory, sorted within
// each group of checks. An error means the directory could not be
// checked at all (it is then the only problem).
func verify(dir string) ([]string, error) {
	c, err := load(dir)
	if err != nil {
		return nil, err
	}
	return verifyCheckpoint(c), nil
}

// verifyCheckpoint returns the problems of a loaded checkpoint.
func verifyCheckpoint(c *checkpoint) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	probs = append(probs, c.problems...)

	inv := c.inv
	if !inv.Complete {
		add("inventory: marked incomplete (the dump failed or missed objects): restore will refuse it")
	}
	dup := func(what string, list []uint64) map[uint64]bool {
		seen := map[uint64]bool{}
		for _, x := range list {
			if seen[x] {
				add("inventory: %s %d listed twice", what, x)
			}
			seen[x] = true
		}
		return seen
	}
	listedFiles := dup("drm file", inv.Files)
	listedDmabufs := dup("dma-buf", inv.Dmabufs)
	listedBos := dup("BO", inv.Bos)

	// Images in the directory that the inventory leaves out.
	pages := map[string]bool{}
	for _, n := range c.names {
		var listed bool
		switch images.KindOf(n) {
		case images.KindInventory, images.KindIndex:
			continue
		case images.KindFile:
			listed = anyMatch(listedFiles, images.FileName, n)
		case images.KindDmaBuf:
			listed = anyMatch(listedDmabufs, images.DmaBufName, n)
		case images.KindPages:
			pages[n] = true
			continue
		}
		if !listed {
			add("%s: not listed in the inventory", n)
		}
	}
	if c.index != nil {
		for _, b := range c.index.Bos {
			if id := b.GetState().GetBoId(); !listedBos[id] {
				add("%s: BO %d is not listed in the inventory", images.IndexName, id)
			}
		}
		for _, id := range sortedKeys(listedBos) {
			if _, ok := c.bos[id]; !ok {
				add("inventory: BO %d has no record in %s", id, images.IndexName)
			}
		}
	}

	// Shared keys: one BO record per dma-buf inode.
	byKey := map[uint64][]uint64{}
	for _, id := range sortedKeys(c.bos) {
		if k := c.bos[id].State.DmabufInode; k != 0 {
			byKey[k] = append(byKey[k], id)
		}
	}
	for _, k := range sortedKeys(byKey) {
		if ids := byKey[k]; len(ids) > 1 {
			add("shared key: dma-buf inode %d has %d BO records (BOs %v); restore needs exactly one", k, len(ids), ids)
		}
	}
	for _, ino := range sortedKeys(c.dmabufs) {
		d := c.dmabufs[ino]
		b, ok := c.bos[d.BoId]
		if !ok {
			add("dma-buf inode %d: BO %d was not dumped (no record)", ino, d.BoId)
			continue
		}
		if b.State.DmabufInode != ino {
			add("dma-buf inode %d: its BO %d records dma-buf inode %d", ino, d.BoId, b.State.DmabufInode)
		}
	}

	for _, ino := range sortedKeys(c.files) {
		probs = append(probs, verifyFile(c, c.files[ino])...)
	}

	// Contents: the index's consistency, then every byte, as a restore
	// checks it.
	if c.index != nil {
		probs = append(probs, c.index.Check()...)
		for _, n := range c.index.Header.PagesFiles {
			delete(pages, n)
		}
		if d, err := images.OpenDir(c.dir); err != nil {
			add("%v", err)
		} else {
			probs = append(probs, d.VerifyPages(c.index)...)
			d.Close()
		}
	}
	for _, n := range sortedStrings(pages) {
		add("%s: a pages file the index does not list", n)
	}

	// Queued work waiting on other files' jobs: those jobs must be in the
	// dump, or restore could never run the work.
	provided := map[uint64]bool{}
	for _, f := range c.files {
		for _, id := range f.State.GetJobFences() {
			provided[id] = true
		}
	}
	for _, ino := range inv.Files {
		f := c.files[ino]
		if f == nil {
			continue
		}
		for _, id := range f.State.GetWaitsOnFences() {
			if !provided[id] {
				add("drm file inode %d: queued work waits on fence %d, which no dumped job provides", ino, id)
			}
		}
	}

	// Processes.
	owned := map[uint64]bool{}
	for _, p := range inv.Processes {
		for _, ino := range p.Inodes {
			owned[ino] = true
			if !listedFiles[ino] && !listedDmabufs[ino] {
				add("inventory: pid %d holds inode %d, which is neither a dumped drm file nor a dma-buf", c.shownPid(p.Pid), ino)
			}
		}
	}
	for _, ino := range inv.Files {
		if !owned[ino] {
			add("inventory: drm file inode %d is held by none of its processes", ino)
		}
	}
	for _, ino := range inv.Dmabufs {
		if !owned[ino] {
			add("inventory: dma-buf inode %d is held by none of its processes", ino)
		}
	}
	if c.hasCriu && c.criuErr != nil {
		add("CRIU images: %v", c.criuErr)
	}
	if c.criu != nil {
		for _, p := range inv.Processes {
			if c.criuProcOf(p.Pid) == nil {
				add("inventory: pid %d (%s) is not in CRIU's pstree.img", c.shownPid(p.Pid), p.Comm)
			}
		}
	}
	for i := range probs {
		probs[i] = plainText(probs[i])
	}
	return probs
}

func anyMatch(set map[uint64]bool, name func(uint64) string, n string) bool {
	for k := range set {
		if name(k) == n {
			return true
		}
	}
	return false
}

func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// verifyFile checks one drm file image.
func verifyFile(c *checkpoint, f *images.DrmFile) []string {
	var probs []string
	what := fmt.Sprintf("drm file inode %d", f.Inode)
	add := func(format string, args ...any) {
		probs = append(probs, what+": "+fmt.Sprintf(format, args...))
	}
	st := f.State
	if st == nil {
		add("no kernel state")
		return probs
	}
	if f.Driver != st.Driver {
		add("image says driver %q, kernel state says %q", f.Driver, st.Driver)
	}
	fileBos := map[uint64]*uapi.BoState{}
	for _, b := range st.Bos {
		if _, dup := fileBos[b.BoId]; dup {
			add("BO %d listed twice in the file's state", b.BoId)
		}
		fileBos[b.BoId] = b
		rec, ok := c.bos[b.BoId]
		if !ok {
			add("BO %d of the file's state was not dumped (no record)", b.BoId)
			continue
		}
		if r := rec.State; r.Size != b.Size || r.Domain != b.Domain || r.Flags != b.Flags || r.Minor != b.Minor {
			add("BO %d: the file's state (%d bytes, %s, flags 0x%x, minor %d) differs from its record (%d bytes, %s, flags 0x%x, minor %d)",
				b.BoId, b.Size, domainName(b.Domain), b.Flags, b.Minor, r.Size, domainName(r.Domain), r.Flags, r.Minor)
		}
	}
	handles := map[uint32]*uapi.HandleState{}
	for _, h := range st.Handles {
		if h.Handle == 0 {
			add("handle 0 (BO %d) is not a valid GEM handle", h.BoId)
		}
		if prev, dup := handles[h.Handle]; dup {
			add("handle %d is used twice (BOs %d and %d)", h.Handle, prev.BoId, h.BoId)
		}
		handles[h.Handle] = h
		if _, ok := c.bos[h.BoId]; !ok {
			add("handle %d refers to BO %d, which was not dumped (no record)", h.Handle, h.BoId)
		}
	}
	maps := append([]*uapi.VaMapping(nil), st.Mappings...)
	sort.SliceStable(maps, func(i, j int) bool { return maps[i].Va < maps[j].Va })
	for i, m := range maps {
		if m.Size == 0 {
			add("VA mapping at 0x%x has size 0", m.Va)
		}
		if m.Va+m.Size < m.Va {
			add("VA mapping 0x%x+0x%x wraps around the address space", m.Va, m.Size)
		}
		h, ok := handles[m.Handle]
		if !ok {
			add("VA mapping at 0x%x refers to handle %d, which the file does not have", m.Va, m.Handle)
		} else if rec, ok := c.bos[h.BoId]; ok && (m.BoOffset > rec.State.Size || m.Size > rec.State.Size-m.BoOffset) {
			add("VA mapping at 0x%x (BO offset 0x%x, size 0x%x) does not fit in BO %d (0x%x bytes)", m.Va, m.BoOffset, m.Size, h.BoId, rec.State.Size)
		}
		if i > 0 {
			p := maps[i-1]
			if p.Va+p.Size > m.Va {
				add("VA ranges overlap: [0x%x, 0x%x) of handle %d and [0x%x, 0x%x) of handle %d", p.Va, p.Va+p.Size, p.Handle, m.Va, m.Va+m.Size, m.Handle)
			}
		}
	}
	if io := st.Io; io != nil && io.UnreadReplyBo != nil {
		if _, ok := c.bos[io.UnreadReplyBo.BoId]; !ok {
			add("pending reply carries BO %d, which was not dumped (no record)", io.UnreadReplyBo.BoId)
		}
	}
	if f.Driver != amdgpu.Driver {
		add("no decoder for driver %q", f.Driver)
		return probs
	}
	priv, err := amdgpu.Decode(st.DriverPrivate)
	if err != nil {
		add("%v", err)
		return probs
	}
	if priv.Version != f.DriverVersion {
		add("driver blob version %d, image says %d", priv.Version, f.DriverVersion)
	}
	for _, cx := range priv.Contexts {
		for _, j := range cx.Jobs {
			for _, id := range j.BoIds {
				if _, ok := c.bos[id]; !ok {
					add("context %d job %d refers to BO %d, which was not dumped (no record)", cx.CtxId, j.FenceId, id)
				}
			}
			if j.ProgressCmd < 0 || (len(j.Commands) > 0 && int(j.ProgressCmd) >= len(j.Commands)) {
				add("context %d job %d: progress at command %d of %d", cx.CtxId, j.FenceId, j.ProgressCmd, len(j.Commands))
			}
		}
	}
	return probs
}
