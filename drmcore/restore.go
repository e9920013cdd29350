package drmcore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"drmcr/images"
	"drmcr/internal/units"
	"drmcr/kernelsim/uapi"
)

// restoreState is a restore in progress.
type restoreState struct {
	token   []byte
	entries []RestoreEntry
	resumed map[int]bool
	// for the summary
	files, dmabufs, bos int
	bytes               uint64
}

// Images is a checkpoint's DRM images, read and checked.
type Images struct {
	Inventory *images.Inventory
	Files     []*images.DrmFile
	DmaBufs   []*images.DmaBuf
	Index     *images.Index
}

// ReadImages reads the DRM images of a checkpoint. It returns nil, nil if
// the checkpoint has no GPU state. The BO index must be consistent and
// list exactly the inventory's BOs; the pages files are not read here
// (the kernel checks every byte as it loads them).
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
	x, err := dir.ReadIndex()
	if err != nil {
		return nil, err
	}
	if problems := x.Check(); len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	listed := make(map[uint64]bool, len(inv.Bos))
	for _, id := range inv.Bos {
		listed[id] = true
	}
	for _, b := range x.Bos {
		if !listed[b.State.BoId] {
			return nil, fmt.Errorf("%s lists BO %d, which %s does not", images.IndexName, b.State.BoId, images.InventoryName)
		}
		delete(listed, b.State.BoId)
	}
	for id := range listed {
		return nil, fmt.Errorf("%s lists BO %d, which %s does not", images.InventoryName, id, images.IndexName)
	}
	imgs.Index = x
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
	for _, b := range imgs.Index.Bos {
		req.Bos = append(req.Bos, b.State)
		req.Contents = append(req.Contents, &uapi.BoContents{BoId: b.State.BoId, PagesFile: b.PagesFile, Offset: b.Offset})
	}
	for _, name := range imgs.Index.Header.PagesFiles {
		req.PagesFiles = append(req.PagesFiles, &uapi.PagesFile{Name: name})
	}
	for _, c := range imgs.Index.Chunks {
		pf := req.PagesFiles[c.PagesFile]
		pf.Chunks = append(pf.Chunks, c.Chunk)
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
	if err := p.loadContents(req.PagesFiles); err != nil {
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
	p.restore.files, p.restore.dmabufs, p.restore.bos = len(req.Files), len(req.Dmabufs), len(req.Bos)
	for _, b := range req.Bos {
		p.restore.bytes += b.Size
	}
	p.log.Infof("restore session open: %d drm file(s), %d dma-buf(s), %d BO(s) loading from %d pages file(s)", len(req.Files), len(req.Dmabufs), len(req.Bos), len(req.PagesFiles))
	return nil
}

// loadContents hands the pages files to the kernel, which loads and
// checks them in the background while criu forks the tasks and restores
// their memory; a claim waits for the contents of its BOs. A pages file
// too short for its chunks fails the restore here, before any task is
// forked.
func (p *Plugin) loadContents(files []*uapi.PagesFile) error {
	for i, pf := range files {
		f, err := p.cfg.ImageDir.OpenRegular(pf.Name)
		if err != nil {
			return fmt.Errorf("BO contents: %w", err)
		}
		var need uint64
		for _, c := range pf.Chunks {
			need = max(need, c.Offset+c.Length)
		}
		if st, err := f.Stat(); err != nil || uint64(st.Size()) < need {
			f.Close()
			if err != nil {
				return fmt.Errorf("BO contents: %w", err)
			}
			return fmt.Errorf("BO contents: %s has %d bytes, its chunks need %d: the image is truncated", pf.Name, st.Size(), need)
		}
		err = p.ctl.LoadPages(p.restore.token, uint32(i), f)
		f.Close()
		if err != nil {
			return fmt.Errorf("BO contents: %s: %w", pf.Name, err)
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
// of every BO of the checkpoint are loaded and verified (they load in the
// background from restore init on, while criu restores the tasks'
// memory, which it does after their files). pid is criu's (the host's);
// the kernel knows the task by the credentials of the connections it
// claimed files on. A task that claimed no drm file is not ours
// (ErrNotMine).
//
// When the contents fail (a BO whose bytes do not match the checksum
// recorded at dump, a pages file cut short, the resume timeout), the task
// must not run: criu 4.x ignores this hook's result, so the plugin kills
// the task. criu is still attached to every task here and fails the
// restore when it cannot set the dead task's registers
// (finalize_restore_detach), killing the rest of the tree, before any
// task runs again.
func (p *Plugin) ResumeDevicesLate(pid int) error {
	if p.restore == nil || p.restore.token == nil {
		return ErrNotMine
	}
	if p.restore.resumed[pid] {
		return nil
	}
	p.restore.resumed[pid] = true
	// Every task gets here, GPU or not, each one once, the root task of
	// the tree first; the kernel settles the checksums of the whole
	// checkpoint before it answers any of them. Killing the root on
	// damage makes criu fail the restore when it goes to release the
	// root, the first task it releases: no task ever runs.
	err := p.ctl.ResumeTask(p.restore.token, pid, p.cfg.ResumeTimeout)
	if errors.Is(err, syscall.ESRCH) {
		return ErrNotMine
	}
	if err != nil {
		err = fmt.Errorf("resume GPU work of pid %d: %w", pid, err)
		if kerr := p.cfg.KillTask(pid); kerr != nil {
			return fmt.Errorf("%w; and killing the task to fail the restore failed: %v", err, kerr)
		}
		return fmt.Errorf("%w: killed pid %d so that criu fails the restore before any task resumes", err, pid)
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
		return
	}
	r := p.restore
	p.log.Summaryf("GPU state restored: %d drm file(s), %d dma-buf(s), %d BO(s), %s of contents, in %v",
		r.files, r.dmabufs, r.bos, units.Format(r.bytes), time.Since(p.started).Round(time.Millisecond))
}
