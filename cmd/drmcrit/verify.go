package main

import (
	"errors"
	"fmt"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim/ctl"
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
  - the inventory (the core's fields): complete; files, reply channels,
    dma-bufs and BOs listed once, with non-zero ids; every DRM image of the
    directory listed;
    processes with valid, unique pids and runtime directories a socket path
    fits in, holding only dumped files; the devices of the dump;
  - drm file, reply channel and dma-buf images (the core's fields): they
    exist, are regular files, decode, have this format version and the
    inode of their name;
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
    unread reply a well-formed reply (with the dma-buf it carries), on a
    drm file's socket or a reply channel, in one form (the lists of format
    4 or the single fields of format 3); every reply channel belongs to a
    drm file of the checkpoint; every dma-buf's BO was exported as it;
  - the BO index: a known checksum algorithm, pages files named in order,
    each BO once with its contents in a pages file, every byte covered by a
    checksummed chunk of at most 4 MiB, chunks in order and not
    overlapping; every pages file of the directory listed;
  - CPU mappings (the core's check of the inventory against the index):
    every mapping of a process is a range of whole pages within a BO whose
    record says criu saved its memory (cpu_mapped: then its chunks, relative
    to the BO, tile it and it is in no pages file), and every such BO is
    mapped by some process;
  - contents: every pages file exists, is a regular file and holds every
    chunk, and every chunk's bytes match its BLAKE3 checksum; when CRIU's
    images are there, the memory criu saved for each mapped BO
    (pagemap-shmem-<memfd inode>.img and its pages image, pages it did not
    save reading as zeros) matches the BO's checksums;
  - CRIU's images, when present: readable (pstree, core, ids, fdinfo,
    files); every process of the inventory is in pstree.img.

With -target RUNDIR, verify also checks the checkpoint against the devices
of the kernelsimd at RUNDIR, as a restore there would before it creates
anything (drmcore.Checkpoint.ForDevices): each device of the checkpoint is
mapped onto one of the daemon's of the same driver with enough VRAM and
GTT for what the checkpoint puts there (-device-map, default
$DRMCR_DEVICE_MAP, states a mapping as DRMCR_DEVICE_MAP does; the
plugin's config file is not read), verify prints the mapping, and the
kernel's checks run against those devices. A device that cannot be
mapped is a problem naming it and why. Nothing is created.

Image files are opened only inside DIR, only if they are regular files and
through no symlink, and never with an open that can block.
`

// verifyTarget checks a loaded checkpoint against the devices of the
// kernelsimd at runtimeDir, as a restore there would before it creates
// anything (drmcore.Checkpoint.ForDevices): the devices mapped, then the
// kernel's checks against them. It returns the mapping (for the log line)
// and the problems; an error means the daemon could not be asked.
func verifyTarget(c *checkpoint, runtimeDir string, explicit drmcore.DeviceMap) (string, []string, error) {
	if len(c.ck.Problems) > 0 {
		return "", []string{fmt.Sprintf("on %s: not checked against its devices: the checkpoint has problems", runtimeDir)}, nil
	}
	cl, err := ctl.Dial(runtimeDir)
	if err != nil {
		return "", nil, fmt.Errorf("-target: %w", err)
	}
	defer cl.Close()
	devices, err := cl.Devices()
	if err != nil {
		return "", nil, fmt.Errorf("-target %s: list its devices: %w", runtimeDir, err)
	}
	m, kprobs, err := c.ck.ForDevices(devices, explicit)
	var merr *drmcore.DeviceMapError
	if errors.As(err, &merr) {
		var probs []string
		for _, p := range merr.Problems {
			probs = append(probs, plainText(fmt.Sprintf("on %s: GPU device %v of the checkpoint: %s", runtimeDir, p.DeviceNeed, p.Reason)))
		}
		return "", probs, nil
	}
	if err != nil {
		return "", nil, err
	}
	var probs []string
	for _, p := range kprobs {
		probs = append(probs, plainText(fmt.Sprintf("on %s: %v", runtimeDir, p)))
	}
	return m.String(), probs, nil
}

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
	probs = append(probs, verifyMapped(c)...)
	for i := range probs {
		probs[i] = plainText(probs[i])
	}
	return probs
}
