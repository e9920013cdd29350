package main

import (
	"fmt"

	"drmcr/images"
)

// verifyChecks documents what verify checks (printed by `drmcrit help
// verify`).
const verifyChecks = `drmcrit verify DIR checks a checkpoint's GPU state and prints one line per
problem (exit status 1 if there is any, 0 otherwise). It runs the checks a
restore runs before it creates anything, with the same code
(drmcore.ReadCheckpoint), so that what verify passes the restore accepts
and what it refuses the restore refuses, and then reads every byte of the
contents as the kernel does at restore:

  - seals: the inventory is sealed (a digest of its own encoding) and seals
    every other image but the pages files with its size and digest; an
    image changed after the dump, or not sealed, is refused
    (drmcrit encode --reseal re-seals an image edited on purpose);
  - the inventory (the core's fields): complete; files, dma-bufs and BOs
    listed once, with non-zero ids; every DRM image of the directory listed;
    processes with valid, unique pids and runtime directories a socket path
    fits in, holding only dumped files; the devices of the dump;
  - drm file and dma-buf images (the core's fields): they exist, are regular
    files, decode, have this format version and the inode of their name;
    the process they name holds them, or none does and they were in flight
    in a unix socket's queue (then CRIU's sk-queues.img must hold them);
    each drm file is on a device of the dump with its gpu id and driver, and
    a sub-plugin handles the driver;
  - the driver blob (the driver sub-plugin, amdgpu): it decodes, its version
    is the image's; contexts have ids 1 to 2^31-1, each once; saved jobs use
    BOs of the checkpoint and of the file, through handles of the file on
    those BOs (or 0 when the task closed the handle), their commands are
    known and stay within their BOs, their progress is at one of their
    commands, they wait on no fence of their own or queued after them; sw_sync
    timelines and syncobjs have valid, unique ids and known kinds, and point
    at jobs and timelines the file has; the file's summary of its jobs'
    fences is the blob's;
  - across files: every fence saved work waits on is a saved job's, and no
    two jobs share a fence;
  - the kernel's objects (kernelsim.CheckRestore, against the devices the
    dump recorded): BO records valid for their device (size, domain, flags,
    alignment), once each, one BO per dma-buf inode; GEM handles 1 to
    2^31-1, each once, on BOs of the checkpoint listed by the file, PRIME
    entries on exported BOs; each file's copies of its BOs' records match
    them; VA mappings page-aligned, non-empty, inside their BO and the
    address space, not overlapping; the blob decodes for the device; a
    request caught in flight is a well-formed render-node request and an
    unread reply a well-formed reply (with the dma-buf it carries); every
    dma-buf's BO was exported as it;
  - the BO index: a known checksum algorithm, pages files named in order,
    each BO once with its contents in a pages file, every byte covered by a
    checksummed chunk of at most 4 MiB, chunks in order and not
    overlapping; every pages file of the directory listed;
  - contents: every pages file exists, is a regular file and holds every
    chunk, and every chunk's bytes match its BLAKE3 checksum;
  - CRIU's images, when present: readable (pstree, core, ids, fdinfo,
    files); every process of the inventory is in pstree.img.

Image files are opened only inside DIR, only if they are regular files and
through no symlink, and never with an open that can block.
`

// verify returns the problems of a checkpoint directory. An error means
// the directory could not be checked at all (it is then the only problem).
func verify(dir string) ([]string, error) {
	c, err := load(dir)
	if err != nil {
		return nil, err
	}
	return verifyCheckpoint(c), nil
}

// verifyCheckpoint returns the problems of a loaded checkpoint: the
// restore's checks, CRIU's images, then the contents.
func verifyCheckpoint(c *checkpoint) []string {
	var probs []string
	for _, p := range c.ck.Problems {
		probs = append(probs, p.String())
	}
	add := func(p images.Problem) { probs = append(probs, p.String()) }
	if c.hasCriu && c.criuErr != nil {
		probs = append(probs, fmt.Sprintf("CRIU images: %v", c.criuErr))
	}
	if c.criu != nil {
		for i, p := range c.inv.Processes {
			if c.criuProcOf(p.Pid) == nil {
				add(images.Problemf(images.InventoryName, fmt.Sprintf("processes[%d]", i), "pid %d (%s) is not in CRIU's pstree.img", c.shownPid(p.Pid), p.Comm))
			}
		}
		// Files dumped in flight are in a unix socket's queue in CRIU's
		// images, from where criu restores them.
		for _, ino := range sortedKeys(c.files) {
			if c.files[ino].InFlight && c.criu.inFlight[ino] == 0 {
				add(images.Problemf(images.FileName(ino), "in_flight", "true, but no unix socket's queue in CRIU's sk-queues.img holds it"))
			}
		}
		for _, ino := range sortedKeys(c.dmabufs) {
			if c.dmabufs[ino].InFlight && c.criu.inFlight[ino] == 0 {
				add(images.Problemf(images.DmaBufName(ino), "in_flight", "true, but no unix socket's queue in CRIU's sk-queues.img holds it"))
			}
		}
	}
	if c.index != nil {
		if d, err := images.OpenDir(c.dir); err != nil {
			probs = append(probs, err.Error())
		} else {
			for _, p := range d.VerifyPages(c.index) {
				add(p)
			}
			d.Close()
		}
	}
	for i := range probs {
		probs[i] = plainText(probs[i])
	}
	return probs
}
