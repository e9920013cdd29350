package drmcore

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// CPU mappings of BOs. A process maps a BO's memory, a memfd of
// kernelsimd's, MAP_SHARED (GEM_MMAP, a dma-buf's mmap). criu dumps such
// a mapping itself, once per memfd, only the pages that were written,
// and restores it at the same address, one memfd shared by every task
// that mapped it. So the plugin leaves the memory to criu: at dump it
// records each mapping and the BO's checksums (not its contents), and at
// restore it hands the memfd criu made to the kernel as the BO's memory,
// after checking that every mapping came back the same.

// memfdPrefix is how /proc/PID/maps names a BO's memfd.
const memfdPrefix = "/memfd:kernelsim-bo"

// mapsLine is one BO-memfd mapping of /proc/PID/maps.
type mapsLine struct {
	start, end, offset uint64
	prot               uint32
	shared             bool
	dev, ino           uint64
}

// boMappings reads the mappings of BO memfds in /proc/PID/maps (a name
// is only a hint: the daemon tells by device and inode which are BOs).
func boMappings(pid int) ([]mapsLine, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "maps"))
	if err != nil {
		return nil, fmt.Errorf("mappings of pid %d: %w", pid, err)
	}
	defer f.Close()
	var out []mapsLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, memfdPrefix) {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, fmt.Errorf("mappings of pid %d: %w", pid, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mappings of pid %d: %w", pid, err)
	}
	return out, nil
}

// parseMapsLine parses "start-end perms offset major:minor inode path".
func parseMapsLine(line string) (mapsLine, error) {
	var m mapsLine
	f := strings.Fields(line)
	if len(f) < 6 {
		return m, fmt.Errorf("maps line %q", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	maj, min, ok2 := strings.Cut(f[3], ":")
	var errs [6]error
	m.start, errs[0] = strconv.ParseUint(lo, 16, 64)
	m.end, errs[1] = strconv.ParseUint(hi, 16, 64)
	m.offset, errs[2] = strconv.ParseUint(f[2], 16, 64)
	ma, e3 := strconv.ParseUint(maj, 16, 32)
	mi, e4 := strconv.ParseUint(min, 16, 32)
	errs[3], errs[4] = e3, e4
	m.ino, errs[5] = strconv.ParseUint(f[4], 10, 64)
	for _, err := range errs {
		if err != nil || !ok || !ok2 || len(f[1]) != 4 || m.end <= m.start {
			return m, fmt.Errorf("maps line %q", line)
		}
	}
	m.dev = unix.Mkdev(uint32(ma), uint32(mi))
	perms := f[1]
	if perms[0] == 'r' {
		m.prot |= unix.PROT_READ
	}
	if perms[1] == 'w' {
		m.prot |= unix.PROT_WRITE
	}
	if perms[2] == 'x' {
		m.prot |= unix.PROT_EXEC
	}
	m.shared = perms[3] == 's'
	return m, nil
}

// scanMappings finds the BO mappings of every task of the dump, once the
// tree is frozen: it records them with their processes, and saves each
// mapped BO's record with its checksums only (criu saves the memory).
// Every BO it finds is then dumped (dumpBOs skips it), including one
// that only mappings refer to.
func (p *Plugin) scanMappings() error {
	d := p.dump
	if d.mapsScanned || p.ctl == nil {
		return nil
	}
	d.mapsScanned = true
	type found struct {
		pid   int
		lines []mapsLine
	}
	var all []found
	var refs []*uapi.MemoryRef
	seen := map[[2]uint64]bool{}
	for _, pid := range d.pids {
		lines, err := boMappings(pid)
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			continue
		}
		all = append(all, found{pid, lines})
		for _, l := range lines {
			if k := [2]uint64{l.dev, l.ino}; !seen[k] {
				seen[k] = true
				refs = append(refs, &uapi.MemoryRef{Dev: l.dev, Ino: l.ino})
			}
		}
	}
	if len(refs) == 0 {
		return nil
	}
	ids, err := p.ctl.IdentifyMemory(refs)
	if err != nil {
		return fmt.Errorf("identify mapped memory: %w", err)
	}
	bos := map[[2]uint64]*uapi.BoState{}
	for _, im := range ids {
		if im.Bo != nil {
			bos[[2]uint64{im.Dev, im.Ino}] = im.Bo
		}
	}
	var todo []*uapi.BoState
	for _, fd := range all {
		var maps []*images.CpuMapping
		for _, l := range fd.lines {
			st, ok := bos[[2]uint64{l.dev, l.ino}]
			if !ok {
				continue // a memfd of that name that is no BO's
			}
			if l.offset > st.Size || l.end-l.start > st.Size-l.offset {
				return fmt.Errorf("pid %d maps [%#x, %#x) at offset %d of BO %d, which has %d bytes", fd.pid, l.start, l.end, l.offset, st.BoId, st.Size)
			}
			maps = append(maps, &images.CpuMapping{Start: l.start, End: l.end, Offset: l.offset, Prot: l.prot, Shared: l.shared, BoId: st.BoId, MemfdInode: l.ino})
			if _, done := d.mapped[st.BoId]; !done {
				d.mapped[st.BoId] = st
				todo = append(todo, st)
			}
		}
		if len(maps) == 0 {
			continue
		}
		proc, err := p.processOf(fd.pid)
		if err != nil {
			return err
		}
		proc.Mappings = append(proc.Mappings, maps...)
	}
	if len(todo) == 0 {
		return nil
	}
	return p.dumpMappedBOs(todo)
}

// processOf returns the inventory entry of a task, adding one for a task
// that holds no kernelsim file.
func (p *Plugin) processOf(pid int) (*images.Process, error) {
	vpid, err := nsPid(pid)
	if err != nil {
		return nil, err
	}
	for _, proc := range p.dump.procs {
		if proc.Pid == vpid {
			return proc, nil
		}
	}
	proc := &images.Process{Pid: vpid, Comm: comm(pid)}
	p.dump.procs = append(p.dump.procs, proc)
	return proc, nil
}

// dumpMappedBOs records BOs whose memory criu saves: their state and the
// checksums of their bytes, which the kernel computes without touching
// the pages nobody wrote.
func (p *Plugin) dumpMappedBOs(states []*uapi.BoState) error {
	if err := p.openContents(); err != nil {
		return err
	}
	d := p.dump
	ids := make([]uint64, len(states))
	for i, st := range states {
		ids[i] = st.BoId
	}
	chunks, err := p.ctl.ChecksumBOs(ids, p.cfg.Checksum)
	if err != nil {
		return fmt.Errorf("checksum the memory of %d mapped BO(s): %w", len(ids), err)
	}
	byBO := map[uint64][]*uapi.ContentChunk{}
	for _, c := range chunks {
		byBO[c.BoId] = append(byBO[c.BoId], c)
	}
	for _, st := range states {
		b := &images.Bo{Version: images.MappedBoVersion, State: st, CpuMapped: true, MappedChunks: byBO[st.BoId]}
		if err := d.index.AddBo(b); err != nil {
			return err
		}
		d.bos[st.BoId] = b
		d.minors[st.Minor] = true
		d.mappedBytes += st.Size
	}
	p.log.Debugf("%d mapped BO(s) recorded: their memory is criu's to save", len(states))
	return nil
}

// checkMappings reports mappings of BOs the dump has no record of.
func (d *dumpState) checkMappings(need func(what string, id uint64)) {
	for _, proc := range d.procs {
		for _, m := range proc.Mappings {
			need(fmt.Sprintf("pid %d's mapping at %#x", proc.Pid, m.Start), m.BoId)
		}
	}
}

// restoredTree lists a restored tree's tasks from its root: host pids,
// through /proc/PID/task/TID/children.
func restoredTree(root int) ([]int, error) {
	out := []int{root}
	for i := 0; i < len(out); i++ {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(out[i]), "task"))
		if err != nil {
			return nil, fmt.Errorf("tasks of pid %d: %w", out[i], err)
		}
		for _, t := range tasks {
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(out[i]), "task", t.Name(), "children"))
			if err != nil {
				continue // the thread is gone
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil && !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	return out, nil
}

// adoptMappings hands the kernel, for each mapped BO of the checkpoint,
// the memfd criu restored for its mappings, found through the restored
// tasks' /proc/PID/map_files: every mapping the dump recorded must be
// back in its task at the same address, with the same protection,
// offset and sharing, and all the mappings of one BO must share one
// memfd. root is the restored tree's root task (criu's pid).
func (p *Plugin) adoptMappings(root int) error {
	r := p.restore
	start := time.Now()
	tree, err := restoredTree(root)
	if err != nil {
		return err
	}
	type adopted struct {
		f       *os.File
		ino     uint64
		holders []int32
	}
	byBO := map[uint64]*adopted{}
	defer func() {
		for _, a := range byBO {
			a.f.Close()
		}
	}()
	found := map[int32]bool{}
	for _, hpid := range tree {
		vpid, err := nsPid(hpid)
		if err != nil {
			return err
		}
		want := r.mappings[vpid]
		if len(want) == 0 {
			continue
		}
		found[vpid] = true
		have, err := boMappings(hpid)
		if err != nil {
			return err
		}
		for _, m := range want {
			i := slices.IndexFunc(have, func(l mapsLine) bool { return l.start == m.Start })
			if i < 0 || have[i].end != m.End || have[i].offset != m.Offset || have[i].prot != m.Prot || have[i].shared != m.Shared {
				return fmt.Errorf("pid %d: the mapping of BO %d at %#x did not come back as it was dumped (%s)", vpid, m.BoId, m.Start, describeMapping(have, i))
			}
			a := byBO[m.BoId]
			if a == nil {
				path := fmt.Sprintf("/proc/%d/map_files/%x-%x", hpid, m.Start, m.End)
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					return fmt.Errorf("pid %d: the memory of BO %d: %w", vpid, m.BoId, err)
				}
				a = &adopted{f: f, ino: have[i].ino}
				byBO[m.BoId] = a
			}
			if have[i].ino != a.ino {
				return fmt.Errorf("pid %d: its mapping of BO %d at %#x is not the memory the other mappings of that BO share (memfd inode %d, not %d)", vpid, m.BoId, m.Start, have[i].ino, a.ino)
			}
			if !slices.Contains(a.holders, int32(hpid)) {
				a.holders = append(a.holders, int32(hpid))
			}
		}
	}
	for vpid := range r.mappings {
		if !found[vpid] {
			return fmt.Errorf("pid %d, which mapped BOs, is not in the restored tree of pid %d", vpid, root)
		}
	}
	ids := make([]uint64, 0, len(r.mapped))
	for id := range r.mapped {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		a := byBO[id]
		if a == nil {
			return fmt.Errorf("BO %d was mapped at dump, but no restored task maps it", id)
		}
		if err := p.ctl.AdoptMemory(r.token, id, a.f, a.holders); err != nil {
			return fmt.Errorf("restored memory of BO %d: %w", id, err)
		}
	}
	p.log.Infof("adopted and checked the restored memory of %d mapped BO(s) in %v", len(ids), time.Since(start).Round(time.Millisecond))
	return nil
}

func describeMapping(have []mapsLine, i int) string {
	if i < 0 {
		return "nothing is mapped there"
	}
	l := have[i]
	return fmt.Sprintf("now [%#x, %#x) at offset %d, prot %#x, shared %v", l.start, l.end, l.offset, l.prot, l.shared)
}
