package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// A mapped BO's contents are in criu's own images: criu saves the memory
// of a memfd mapping once per memfd, as shmem pages indexed by
// pagemap-shmem-<memfd inode>.img (the inode the plugin records with each
// mapping) in a pages-<n>.img, pages it did not save (never written)
// reading as zeros. verifyMapped checks them against the BO's checksums,
// the check a restore makes of the restored memory.

// pagemap entry flags (criu's images/pagemap.proto).
const (
	pePresent = 1 << 2
	peParent  = 1 << 0
	peLazy    = 1 << 1
)

// shmemExtent is a run of pages of a shmem object saved in a pages image.
type shmemExtent struct {
	off, n  uint64 // in the object
	fileOff uint64 // in the pages image
}

// readShmemPages reads pagemap-shmem-<ino>.img: where each saved page of
// the memfd is, and the pages image.
func readShmemPages(dir string, ino uint64) (string, []shmemExtent, error) {
	name := fmt.Sprintf("pagemap-shmem-%d.img", ino)
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() > maxCriuImage {
		return "", nil, fmt.Errorf("%s: too large or unreadable", name)
	}
	img, err := crit.New(f, nil, dir, false, false).Decode(&pagemap.PagemapEntry{})
	if err != nil {
		return "", nil, fmt.Errorf("decode %s: %w", name, err)
	}
	if len(img.Entries) == 0 {
		return "", nil, fmt.Errorf("%s: no pagemap head", name)
	}
	head, ok := img.Entries[0].Message.(*pagemap.PagemapHead)
	if !ok {
		return "", nil, fmt.Errorf("%s: first entry is %T, not a pagemap head", name, img.Entries[0].Message)
	}
	pages := fmt.Sprintf("pages-%d.img", head.GetPagesId())
	var out []shmemExtent
	var pos uint64
	for _, e := range img.Entries[1:] {
		pe, ok := e.Message.(*pagemap.PagemapEntry)
		if !ok {
			return "", nil, fmt.Errorf("%s: entry %T", name, e.Message)
		}
		flags := pe.GetFlags()
		if flags&(peParent|peLazy) != 0 {
			return "", nil, fmt.Errorf("%s: pages at %#x are in a parent image or lazy: not checked", name, pe.GetVaddr())
		}
		if flags&pePresent == 0 {
			continue
		}
		n := uint64(pe.GetNrPages()) * 4096
		out = append(out, shmemExtent{off: pe.GetVaddr(), n: n, fileOff: pos})
		pos += n
	}
	sort.Slice(out, func(i, j int) bool { return out[i].off < out[j].off })
	return pages, out, nil
}

// verifyMapped checks the contents of every mapped BO in criu's images.
func verifyMapped(c *checkpoint) []string {
	if c.index == nil || !c.hasCriu {
		return nil
	}
	alg, err := c.index.Checksum()
	if err != nil {
		return nil // the index's Check reports it
	}
	memfd := map[uint64]uint64{} // BO -> memfd inode at dump
	for _, p := range c.inv.GetProcesses() {
		for _, m := range p.Mappings {
			memfd[m.BoId] = m.MemfdInode
		}
	}
	var probs []string
	for _, b := range c.index.Bos {
		if !b.CpuMapped || b.State == nil {
			continue
		}
		ino, ok := memfd[b.State.BoId]
		if !ok {
			continue // CheckMappings reports it
		}
		if err := verifyMappedBO(c.dir, b, ino, alg); err != nil {
			probs = append(probs, fmt.Sprintf("mapped BO %d (memfd inode %d): %v", b.State.BoId, ino, err))
		}
	}
	return probs
}

func verifyMappedBO(dir string, b *images.Bo, ino uint64, alg uapi.Checksum) error {
	pagesName, exts, err := readShmemPages(dir, ino)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("criu's images hold no memory of it (pagemap-shmem-%d.img missing)", ino)
	}
	if err != nil {
		return err
	}
	pages, err := os.Open(filepath.Join(dir, pagesName))
	if err != nil {
		return fmt.Errorf("its pages: %w", err)
	}
	defer pages.Close()
	buf := make([]byte, 0, 4<<20)
	for _, cc := range b.MappedChunks {
		if cc.Length > 4<<20 {
			return fmt.Errorf("a chunk of %d bytes (at most 4 MiB)", cc.Length)
		}
		buf = buf[:0]
		buf = append(buf, make([]byte, cc.Length)...)
		end := cc.Offset + cc.Length
		for _, e := range exts {
			lo, hi := max(e.off, cc.Offset), min(e.off+e.n, end)
			if lo >= hi {
				continue
			}
			if _, err := pages.ReadAt(buf[lo-cc.Offset:hi-cc.Offset], int64(e.fileOff+lo-e.off)); err != nil {
				if err == io.EOF {
					return fmt.Errorf("%s ends before the pages of [%d, %d)", pagesName, lo, hi)
				}
				return fmt.Errorf("%s: %w", pagesName, err)
			}
		}
		if !bytes.Equal(alg.Sum(buf), cc.Checksum) {
			return fmt.Errorf("bytes [%d, %d) in %s do not match their %v checksum", cc.Offset, end, pagesName, alg)
		}
	}
	return nil
}
