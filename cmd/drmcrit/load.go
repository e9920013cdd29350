package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"drmcr/images"
)

// errNoGPU and errNotCheckpoint are the two ways a directory can have
// nothing for drmcrit; both end the command with status 1.
var (
	errNoGPU         = errors.New("checkpoint has no GPU state (no " + images.InventoryName + ")")
	errNotCheckpoint = errors.New("no CRIU or DRM images")
)

// checkpoint is a checkpoint directory as read, tolerantly: images that
// cannot be read are left out and named in problems, so that show and
// graph still print what is there and verify reports every problem.
type checkpoint struct {
	dir      string
	criu     *criuTree // nil when the directory has no CRIU images
	criuErr  error     // why the CRIU images could not be used
	hasCriu  bool      // CRIU images present (even if unreadable)
	inv      *images.Inventory
	files    map[uint64]*images.DrmFile // by inode
	dmabufs  map[uint64]*images.DmaBuf  // by inode
	bos      map[uint64]*images.Bo      // by BO id, from the index
	index    *images.Index              // nil when unreadable
	names    []string                   // the DRM images in the directory
	problems []string                   // images that could not be read
}

func (c *checkpoint) problemf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// load reads a checkpoint directory. It fails when the directory cannot
// be opened, is not a checkpoint, has no GPU state, or its inventory
// cannot be read; any other unreadable image is a problem of the result.
func load(dir string) (*checkpoint, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	d, err := images.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Names()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	c := &checkpoint{
		dir: dir, names: names, hasCriu: hasCriuImages(dir),
		files: map[uint64]*images.DrmFile{}, dmabufs: map[uint64]*images.DmaBuf{}, bos: map[uint64]*images.Bo{},
	}
	hasInv := false
	for _, n := range names {
		if n == images.InventoryName {
			hasInv = true
		}
	}
	if !hasInv {
		switch {
		case len(names) > 0:
			return nil, fmt.Errorf("%s: DRM images without %s: the dump did not finish", dir, images.InventoryName)
		case c.hasCriu:
			return nil, fmt.Errorf("%s: %w%s", dir, errNoGPU, criuSummary(dir))
		default:
			return nil, fmt.Errorf("%w in %s", errNotCheckpoint, dir)
		}
	}
	if c.hasCriu {
		c.criu, c.criuErr = readCriuTree(dir)
	}
	inv := &images.Inventory{}
	if err := d.Read(images.InventoryName, inv); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	c.inv = inv
	for _, ino := range inv.Files {
		f := &images.DrmFile{}
		if err := d.Read(images.FileName(ino), f); err != nil {
			c.problemf("%v", err)
			continue
		}
		if f.Inode != ino {
			c.problemf("image %s describes drm file inode %d", images.FileName(ino), f.Inode)
			continue
		}
		c.files[ino] = f
	}
	for _, ino := range inv.Dmabufs {
		db := &images.DmaBuf{}
		if err := d.Read(images.DmaBufName(ino), db); err != nil {
			c.problemf("%v", err)
			continue
		}
		if db.Inode != ino {
			c.problemf("image %s describes dma-buf inode %d", images.DmaBufName(ino), db.Inode)
			continue
		}
		c.dmabufs[ino] = db
	}
	if x, err := d.ReadIndex(); err != nil {
		c.problemf("%v", err)
	} else {
		c.index = x
		for _, b := range x.Bos {
			if b.State == nil {
				continue // Check reports it
			}
			if _, dup := c.bos[b.State.BoId]; !dup {
				c.bos[b.State.BoId] = b
			}
		}
	}
	return c, nil
}

// criuSummary names the processes of CRIU's images, for the message about
// a checkpoint without GPU state.
func criuSummary(dir string) string {
	t, err := readCriuTree(dir)
	if err != nil {
		return fmt.Sprintf("; CRIU images unreadable: %v", err)
	}
	var ps []string
	for _, p := range t.procs {
		ps = append(ps, fmt.Sprintf("pid %d (%s, %d fds)", p.pid, p.comm, len(p.fds)))
	}
	return "; CRIU images hold " + strings.Join(ps, ", ")
}

// sortedKeys returns a map's keys in increasing order.
func sortedKeys[V any](m map[uint64]V) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
