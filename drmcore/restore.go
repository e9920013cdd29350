package drmcore

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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
	// CPU mappings by pid (as the images name tasks) and the mapped BOs,
	// whose memory criu restores: adopted at the first
	// RESUME_DEVICES_LATE (adoptMappings).
	mappings map[int32][]*images.CpuMapping
	mapped   map[uint64]bool
	adopted  bool
	// for the summary
	files, channels, dmabufs, bos int
	bytes                         uint64
}

// subPlugins are the plugin's sub-plugins.
func (p *Plugin) subPlugins() SubPlugins {
	return SubPlugins{Drivers: p.cfg.Drivers, DmaBuf: p.cfg.DmaBuf}
}

// maxLoggedProblems bounds the problems a refused restore writes into
// criu's log, one line each (drmcrit verify lists them all).
const maxLoggedProblems = 50

// initRestore reads the images and checks every field of them, lets the
// sub-plugins build the kernel's restore requests, opens the restore
// session, starts streaming every BO's contents, and prepares what the C
// part needs in the restored tasks. All of it happens before criu forks
// them; nothing is asked of the kernel before every check passed.
func (p *Plugin) initRestore() error {
	p.restore = &restoreState{resumed: map[int]bool{}, mappings: map[int32][]*images.CpuMapping{}, mapped: map[uint64]bool{}}
	ck, err := ReadCheckpoint(p.cfg.ImageDir, p.subPlugins())
	if err != nil {
		return fmt.Errorf("read GPU images: %w", err)
	}
	if ck == nil {
		p.log.Infof("checkpoint has no GPU state")
		return nil
	}
	if len(ck.Problems) > 0 {
		for i, pr := range ck.Problems {
			if i == maxLoggedProblems {
				p.log.Errorf("... and %d more problem(s) (drmcrit verify lists them all)", len(ck.Problems)-i)
				break
			}
			p.log.Errorf("GPU image %v", pr)
		}
		return fmt.Errorf("refusing to restore the GPU state: %w", ck.Err())
	}
	p.connect()
	if p.ctl == nil {
		return fmt.Errorf("checkpoint has GPU state but no kernelsimd runs at %s", p.cfg.RuntimeDir)
	}
	if err := p.mapDevices(ck); err != nil {
		return err
	}
	req := ck.Request
	for _, bc := range req.Contents {
		if bc.Mapped {
			p.restore.mapped[bc.BoId] = true
		}
	}
	for _, proc := range ck.Inventory.Processes {
		if len(proc.Mappings) > 0 {
			p.restore.mappings[proc.Pid] = proc.Mappings
		}
	}
	reply, err := p.ctl.OpenSession(req)
	if err != nil {
		return fmt.Errorf("open restore session: %w", err)
	}
	if len(reply.FileSockets) != len(req.Files) || len(reply.DmabufSockets) != len(req.Dmabufs) || len(reply.ChannelSockets) != len(req.Channels) {
		return fmt.Errorf("open restore session: %d file, %d reply channel and %d dma-buf socket(s) for %d, %d and %d",
			len(reply.FileSockets), len(reply.ChannelSockets), len(reply.DmabufSockets), len(req.Files), len(req.Channels), len(req.Dmabufs))
	}
	p.restore.token = reply.Token
	if err := p.loadContents(req.PagesFiles); err != nil {
		return err
	}
	// Each restored task reconnects where it saw kernelsimd at dump: inside
	// a container, its own mount of the runtime dir.
	dirOf := map[int32]string{}
	for _, proc := range ck.Inventory.Processes {
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
		p.restore.entries = append(p.restore.entries, RestoreEntry{Ino: rf.Inode, Kind: RestoreDRMFile, SocketPath: socketFor(ck.FileList[i].Pid, reply.FileSockets[i]), Request: pkt})
	}
	for i, rc := range req.Channels {
		pkt, err := uapi.Marshal(uapi.Header{Op: uapi.OpClaimChannel, Seq: 1}, &uapi.ClaimChannelRequest{Token: reply.Token, Inode: rc.Inode})
		if err != nil {
			return err
		}
		p.restore.entries = append(p.restore.entries, RestoreEntry{Ino: rc.Inode, Kind: RestoreChannel, SocketPath: socketFor(ck.ChannelList[i].Pid, reply.ChannelSockets[i]), Request: pkt})
	}
	for i, rd := range req.Dmabufs {
		pkt, err := uapi.Marshal(uapi.Header{Op: uapi.OpClaimDmaBuf, Seq: 1}, &uapi.ClaimDmaBufRequest{Token: reply.Token, Inode: rd.Inode})
		if err != nil {
			return err
		}
		p.restore.entries = append(p.restore.entries, RestoreEntry{Ino: rd.Inode, Kind: RestoreDmaBuf, SocketPath: socketFor(ck.DmaBufList[i].Pid, reply.DmabufSockets[i]), Request: pkt})
	}
	p.restore.files, p.restore.channels, p.restore.dmabufs, p.restore.bos = len(req.Files), len(req.Channels), len(req.Dmabufs), len(req.Bos)
	for _, b := range req.Bos {
		p.restore.bytes += b.Size
	}
	p.log.Infof("restore session open: %d drm file(s), %d reply channel(s), %d dma-buf(s), %d BO(s) loading from %d pages file(s)", len(req.Files), len(req.Channels), len(req.Dmabufs), len(req.Bos), len(req.PagesFiles))
	return nil
}

// mapDevices maps the checkpoint's devices onto the kernel's and makes
// the restore request name the kernel's (Checkpoint.ForDevices), before
// anything is created. The mapping goes into criu's log, one line saying
// where each device's objects went, at criu's default verbosity when a
// device moved (or an explicit entry went unused). A
// device that cannot be mapped, or a problem the kernel's checks find
// against its devices, refuses the restore, each named in the log.
func (p *Plugin) mapDevices(ck *Checkpoint) error {
	devices, err := p.ctl.Devices()
	if err != nil {
		return fmt.Errorf("list kernelsimd's devices: %w", err)
	}
	m, probs, err := ck.ForDevices(devices, p.cfg.DeviceMap)
	var merr *DeviceMapError
	if errors.As(err, &merr) {
		for _, pr := range merr.Problems {
			p.log.Errorf("GPU device %v of the checkpoint: %s", pr.DeviceNeed, pr.Reason)
		}
		return fmt.Errorf("refusing to restore the GPU state: %w", err)
	}
	if err != nil {
		return err
	}
	// On other devices, the mapping is part of the summary a user needs.
	if m.Moved() || len(m.Unused) > 0 {
		p.log.Summaryf("GPU devices: %v", m)
	} else {
		p.log.Infof("GPU devices: %v", m)
	}
	if len(probs) > 0 {
		for i, pr := range probs {
			if i == maxLoggedProblems {
				p.log.Errorf("... and %d more problem(s)", len(probs)-i)
				break
			}
			p.log.Errorf("GPU image %v (on this host's devices)", pr)
		}
		return fmt.Errorf("refusing to restore the GPU state on this host's devices: %d problem(s), the first: %v", len(probs), probs[0])
	}
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
	// root, the first task it releases: no task ever runs. Every task's
	// memory is restored by now: the first call hands the kernel the
	// memory of the mapped BOs.
	var err error
	if !p.restore.adopted && len(p.restore.mapped) > 0 {
		p.restore.adopted = true
		err = p.adoptMappings(pid)
	}
	if err == nil {
		err = p.ctl.ResumeTask(p.restore.token, pid, p.cfg.ResumeTimeout)
	}
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
	mapped := ""
	if n := len(r.mapped); n > 0 {
		mapped = fmt.Sprintf(" (%d mapped: their memory restored by criu)", n)
	}
	p.log.Summaryf("GPU state restored: %d drm file(s)%s, %d dma-buf(s), %d BO(s)%s, %s of contents, in %v",
		r.files, channelCount(r.channels), r.dmabufs, r.bos, mapped, units.Format(r.bytes), time.Since(p.started).Round(time.Millisecond))
}

// channelCount is the summary lines' mention of reply channels, if any.
func channelCount(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d reply channel(s))", n)
}
