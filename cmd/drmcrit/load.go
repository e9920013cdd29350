package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/subplugins"
)

// errNoGPU and errNotCheckpoint are the two ways a directory can have
// nothing for drmcrit; both end the command with status 1.
var (
	errNoGPU         = errors.New("checkpoint has no GPU state (no " + images.InventoryName + ")")
	errNotCheckpoint = errors.New("no CRIU or DRM images")
)

// checkpoint is a checkpoint directory as read by drmcore.ReadCheckpoint,
// the validation a restore runs: images that cannot be read are left out
// and every problem is in ck.Problems, so that show and graph still print
// what is there and verify reports every problem, as a restore would
// refuse it.
type checkpoint struct {
	dir      string
	criu     *criuTree // nil when the directory has no CRIU images
	criuErr  error     // why the CRIU images could not be used
	hasCriu  bool      // CRIU images present (even if unreadable)
	ck       *drmcore.Checkpoint
	inv      *images.Inventory
	files    map[uint64]*images.DrmFile    // by inode
	channels map[uint64]*images.DrmChannel // reply channels, by inode
	dmabufs  map[uint64]*images.DmaBuf     // by inode
	bos      map[uint64]*images.Bo         // by BO id, from the index
	index    *images.Index                 // nil when unreadable
	names    []string                      // the DRM images in the directory
}

// load reads and checks a checkpoint directory. It fails when the
// directory cannot be opened, is not a checkpoint, has no GPU state, or
// its inventory cannot be read; any other problem is in c.ck.Problems.
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
	hasCriu := hasCriuImages(dir)
	ck, err := drmcore.ReadCheckpoint(d, subplugins.All())
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", dir, err)
	case ck == nil && hasCriu:
		return nil, fmt.Errorf("%s: %w%s", dir, errNoGPU, criuSummary(dir))
	case ck == nil:
		return nil, fmt.Errorf("%w in %s", errNotCheckpoint, dir)
	}
	c := &checkpoint{
		dir: dir, hasCriu: hasCriu, ck: ck, inv: ck.Inventory, names: ck.Names,
		files: ck.Files, channels: ck.Channels, dmabufs: ck.DmaBufs, bos: ck.Bos, index: ck.Index,
	}
	if c.hasCriu {
		c.criu, c.criuErr = readCriuTree(dir)
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

func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
