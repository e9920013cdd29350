package drmcore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// restoreState is a restore in progress.
type restoreState struct {
	token   []byte
	entries []RestoreEntry
	resumed map[int]bool
}

// Images is a checkpoint's DRM images, read and checked.
type Images struct {
	Inventory *images.Inventory
	Files     []*images.DrmFile
	DmaBufs   []*images.DmaBuf
	Bos       []*images.Bo
}

// ReadImages reads the DRM images of a checkpoint. It returns nil, nil if
// the checkpoint has no GPU state.
func ReadImages(dir *images.Dir) (*Images, error) {
	inv := &images.Inventory{}
	if err := dir.Read(images.InventoryName, inv); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			names, lerr := dir.Names()
			if lerr == nil && len(names) > 0 {
				return nil, fmt.Errorf("DRM images without %s: the dump did not finish", images.InventoryName)
			}
			return nil, nil
		}
		return nil, err
	}
	imgs := &Images{Inventory: inv}
	for _, ino := range inv.Files {
		f := &images.DrmFile{}
		if err := dir.Read(images.FileName(ino), f); err != nil {
			return nil, err
		}
		imgs.Files = append(imgs.Files, f)
	}
	for _, ino := range inv.Dmabufs {
		d := &images.DmaBuf{}
		if err := dir.Read(images.DmaBufName(ino), d); err != nil {
			return nil, err
		}
		imgs.DmaBufs = append(imgs.DmaBufs, d)
	}
	for _, id := range inv.Bos {
		b := &images.Bo{}
		if err := dir.Read(images.BoName(id), b); err != nil {
			return nil, err
		}
		if b.State == nil || b.State.BoId != id {
			return nil, fmt.Errorf("image %s does not describe BO %d", images.BoName(id), id)
		}
		imgs.Bos = append(imgs.Bos, b)
	}
	return imgs, nil
}

// initRestore reads the images, lets the sub-plugins build the kernel's
// restore requests, opens the restore session, starts streaming every
// BO's contents, and prepares what the C part needs in the restored
// tasks. All of it happens before criu forks them.
func (p *Plugin) initRestore() error {
	p.restore = &restoreState{resumed: map[int]bool{}}
	imgs, err := ReadImages(p.cfg.ImageDir)
	if err != nil {
		return fmt.Errorf("read GPU images: %w", err)
	}
	if imgs == nil {
		p.log.Infof("checkpoint has no GPU state")
		return nil
	}
	if !imgs.Inventory.Complete {
		return fmt.Errorf("the GPU state of this checkpoint is incomplete (its dump failed or missed objects); refusing to restore it")
	}
	p.connect()
	if p.ctl == nil {
		return fmt.Errorf("checkpoint has GPU state but no kernelsimd runs at %s", p.cfg.RuntimeDir)
	}
	req := &uapi.SessionOpenRequest{}
	for _, b := range imgs.Bos {
		req.Bos = append(req.Bos, b.State)
	}
	for _, f := range imgs.Files {
		drv, ok := p.drivers[f.Driver]
		if !ok {
			return fmt.Errorf("drm file inode %d: no sub-plugin for driver %q", f.Inode, f.Driver)
		}
		rf, err := drv.RestoreFile(f)
		if err != nil {
			return fmt.Errorf("%s: drm file inode %d: %w", f.Driver, f.Inode, err)
		}
		req.Files = append(req.Files, rf)
	}
	for _, d := range imgs.DmaBufs {
		rd, err := p.cfg.DmaBuf.RestoreDmaBuf(d)
		if err != nil {
			return fmt.Errorf("dma-buf inode %d: %w", d.Inode, err)
		}
		req.Dmabufs = append(req.Dmabufs, rd)
	}
	reply, err := p.ctl.OpenSession(req)
	if err != nil {
		return fmt.Errorf("open restore session: %w", err)
	}
	p.restore.token = reply.Token
	if err := p.loadContents(imgs.Bos); err != nil {
		return err
	}
	// Each restored task reconnects where it saw kernelsimd at dump: inside
	// a container, its own mount of the runtime dir.
	dirOf := map[int32]string{}
	for _, proc := range imgs.Inventory.Processes {
		dirOf[proc.Pid] = proc.RuntimeDir
	}
	socketFor := func(pid int32, daemonPath string) string {
		dir := dirOf[pid]
		if dir == "" {
			dir = p.cfg.RuntimeDir
		}
		return filepath.Join(dir, "dri", filepath.Base(daemonPath))
	}
	for i, rf := range req.Files {
		pkt, err := uapi.Marshal(uapi.Header{Op: uapi.OpClaimFile, Seq: 1}, &uapi.ClaimFileRequest{Token: reply.Token, Inode: rf.Inode})
		if err != nil {
			return err
		}
		p.restore.entries = append(p.restore.entries, RestoreEntry{Ino: rf.Inode, Kind: RestoreDRMFile, SocketPath: socketFor(imgs.Files[i].Pid, reply.FileSockets[i]), Request: pkt})
	}
	for i, rd := range req.Dmabufs {
		pkt, err := uapi.Marshal(uapi.Header{Op: uapi.OpClaimDmaBuf, Seq: 1}, &uapi.ClaimDmaBufRequest{Token: reply.Token, Inode: rd.Inode})
		if err != nil {
			return err
		}
		p.restore.entries = append(p.restore.entries, RestoreEntry{Ino: rd.Inode, Kind: RestoreDmaBuf, SocketPath: socketFor(imgs.DmaBufs[i].Pid, reply.DmabufSockets[i]), Request: pkt})
	}
	p.log.Infof("restore session open: %d drm file(s), %d dma-buf(s), %d BO(s) streaming", len(req.Files), len(req.Dmabufs), len(req.Bos))
	return nil
}

// loadContents hands every BO's pages image to the kernel, which streams
// them in the background while criu restores the tasks.
func (p *Plugin) loadContents(bos []*images.Bo) error {
	for _, b := range bos {
		f, err := p.cfg.ImageDir.Open(b.PagesFile)
		if err != nil {
			return fmt.Errorf("BO %d contents: %w", b.State.BoId, err)
		}
		if st, err := f.Stat(); err == nil && uint64(st.Size()) != b.ContentSize {
			f.Close()
			return fmt.Errorf("BO %d contents: %s has %d bytes, the image says %d", b.State.BoId, b.PagesFile, st.Size(), b.ContentSize)
		}
		err = p.ctl.LoadBO(p.restore.token, b.State.BoId, b.Sha256, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("BO %d contents: %w", b.State.BoId, err)
		}
	}
	return nil
}

// RestoreEntries is what the C part needs to recreate each socket in the
// restored tasks.
func (p *Plugin) RestoreEntries() []RestoreEntry {
	if p.restore == nil {
		return nil
	}
	return slices.Clone(p.restore.entries)
}

// ResumeDevicesLate lets a restored task's contexts run once the contents
// of its BOs are in place. pid is criu's (the host's); the kernel knows
// the task by the credentials of the connections it claimed files on. A
// task that claimed no drm file is not ours (ErrNotMine).
func (p *Plugin) ResumeDevicesLate(pid int) error {
	if p.restore == nil || p.restore.token == nil {
		return ErrNotMine
	}
	if p.restore.resumed[pid] {
		return nil
	}
	p.restore.resumed[pid] = true
	err := p.ctl.ResumeTask(p.restore.token, pid, p.cfg.ResumeTimeout)
	if errors.Is(err, syscall.ESRCH) {
		return ErrNotMine
	}
	if err != nil {
		return fmt.Errorf("resume GPU work of pid %d: %w", pid, err)
	}
	return nil
}

func (p *Plugin) finiRestore(ret int) {
	if p.restore == nil || p.restore.token == nil || p.ctl == nil {
		return
	}
	abort := ret != 0
	if err := p.ctl.CloseSession(p.restore.token, abort); err != nil {
		p.log.Errorf("close restore session: %v", err)
		return
	}
	if abort {
		p.log.Infof("restore failed (%d): destroyed the GPU objects it had created", ret)
	} else {
		p.log.Infof("restore session closed")
	}
}
