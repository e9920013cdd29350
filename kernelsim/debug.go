package kernelsim

import (
	"cmp"
	"slices"

	"drmcr/kernelsim/dma"
	"drmcr/kernelsim/sched"
)

// DebugState is a snapshot of every object of the kernel, like
// /sys/kernel/debug/dri/*/{clients,gem_names} and dma_buf/bufinfo together.
// In its JSON every list is present, [] when empty (never null).
type DebugState struct {
	Devices  []DebugDevice   `json:"devices"`
	Files    []DebugFile     `json:"files"`
	BOs      []DebugBO       `json:"bos"`
	DmaBufs  []DebugDmaBuf   `json:"dmabufs"`
	Fences   []dma.FenceInfo `json:"fences"`
	Jobs     []DebugJob      `json:"jobs"`
	LiveJobs int             `json:"live_jobs"`
	Sessions int             `json:"restore_sessions"`
	// Users is what each limited user holds (see Limits).
	Users []UserUsage `json:"users"`
}

type DebugDevice struct {
	Minor    uint32 `json:"minor"`
	Driver   string `json:"driver"`
	GPUID    uint32 `json:"gpu_id"`
	Sched    string `json:"sched_mode"`
	VRAMUsed uint64 `json:"vram_used"`
	VRAMSize uint64 `json:"vram_size"`
	GTTUsed  uint64 `json:"gtt_used"`
	GTTSize  uint64 `json:"gtt_size"`
}

type DebugFile struct {
	ID        uint64         `json:"id"`
	Minor     uint32         `json:"minor"`
	PID       int32          `json:"pid"`
	UID       uint32         `json:"uid"`
	ClientIno uint64         `json:"client_inode"`
	Channels  []uint64       `json:"channels"` // client inodes of its reply channels
	Waiting   int            `json:"waiting"`  // requests waiting in the kernel
	Paused    bool           `json:"paused"`
	Handles   []DebugHandle  `json:"handles"`
	Mappings  []DebugMapping `json:"mappings"`
	Contexts  []DebugContext `json:"contexts"`
	Syncobjs  []uint32       `json:"syncobjs"`
}

type DebugHandle struct {
	Handle uint32 `json:"handle"`
	BO     uint64 `json:"bo"`
	Prime  bool   `json:"prime,omitempty"`
}

type DebugMapping struct {
	VA       uint64 `json:"va"`
	Size     uint64 `json:"size"`
	Handle   uint32 `json:"handle"`
	BOOffset uint64 `json:"bo_offset"`
}

type DebugContext struct {
	ID        uint32 `json:"id"`
	Guilty    bool   `json:"guilty"`
	Paused    bool   `json:"paused"`
	Submitted uint64 `json:"submitted"`
	Completed uint64 `json:"completed"`
	Queued    int    `json:"queued"`
}

type DebugBO struct {
	ID     uint64 `json:"id"`
	Minor  uint32 `json:"minor"`
	Size   uint64 `json:"size"`
	Domain string `json:"domain"`
	Flags  uint64 `json:"flags"`
	Refs   int    `json:"refs"`
	DmaBuf uint64 `json:"dmabuf_inode,omitempty"`
	// ImportOf is set on an import attachment: the exporter's BO, whose
	// memory and reservation object it shares.
	ImportOf uint64          `json:"import_of,omitempty"`
	Resv     []dma.ResvEntry `json:"resv"`
	// CPU mappings: set once a client mapped the BO.
	CPU *DebugCPUMaps `json:"cpu_mappings,omitempty"`
}

// DebugCPUMaps is what the kernel knows of a BO's CPU mappings.
type DebugCPUMaps struct {
	MemfdInode uint64 `json:"memfd_inode"`
	Handed     uint64 `json:"files_handed_out"`
	// Referenced: the BO holds a reference for its mappings (some
	// process still holds a file of its memory).
	Referenced bool `json:"referenced"`
	// Restored tasks mapping it, by pid (see AdoptMemory).
	Holders []int32 `json:"restored_holders"`
}

// DebugJob is a job the kernel still holds: queued, running, preempted,
// or finished and about to be freed.
type DebugJob struct {
	ID          uint64   `json:"id"`
	File        uint64   `json:"file"`
	Context     uint32   `json:"context"`
	State       string   `json:"state"`
	LongRunning bool     `json:"long_running,omitempty"`
	Commands    int      `json:"commands"`
	BOs         []uint64 `json:"bos"`
	Fence       uint64   `json:"fence"`
}

type DebugDmaBuf struct {
	Inode     uint64 `json:"inode"`
	BO        uint64 `json:"bo"`
	PrimeRefs int    `json:"prime_refs"`
}

// Debug returns a consistent snapshot of the object graph. It is safe to
// call at any time, including while clients are torn down.
func (k *Kernel) Debug() *DebugState {
	st := &DebugState{Devices: []DebugDevice{}, Files: []DebugFile{}, BOs: []DebugBO{}, DmaBufs: []DebugDmaBuf{}, Jobs: []DebugJob{}}
	type ctxRef struct {
		file int
		c    *Context
	}
	var ctxs []ctxRef

	k.mu.Lock()
	for _, d := range k.devices {
		st.Devices = append(st.Devices, DebugDevice{
			Minor: d.cfg.Minor, Driver: d.drv.name, GPUID: d.cfg.GPUID, Sched: d.drv.mode.String(),
			VRAMUsed: d.vramUsed, VRAMSize: d.cfg.VRAMSize, GTTUsed: d.gttUsed, GTTSize: d.cfg.GTTSize,
		})
	}
	fileIDs := make([]uint64, 0, len(k.files))
	for id := range k.files {
		fileIDs = append(fileIDs, id)
	}
	slices.Sort(fileIDs)
	for _, id := range fileIDs {
		f := k.files[id]
		df := DebugFile{ID: f.id, Minor: f.dev.cfg.Minor, PID: f.owner.PID, UID: f.owner.UID, ClientIno: f.clientIno, Paused: f.paused,
			Handles: []DebugHandle{}, Mappings: []DebugMapping{}, Contexts: []DebugContext{}, Channels: []uint64{}}
		df.Waiting = int(f.waiting.Load())
		for _, e := range f.ios {
			if e.channel {
				df.Channels = append(df.Channels, e.clientIno)
			}
		}
		for _, h := range f.handles.ids() {
			bo, _ := f.handles.get(h)
			_, prime := f.prime[h]
			df.Handles = append(df.Handles, DebugHandle{Handle: h, BO: bo.id, Prime: prime})
		}
		for _, m := range f.vm {
			df.Mappings = append(df.Mappings, DebugMapping{VA: m.VA, Size: m.Size, Handle: m.Handle, BOOffset: m.BOOffset})
		}
		df.Syncobjs = append([]uint32{}, f.syncobjs.ids()...)
		for _, c := range f.contextList() {
			ctxs = append(ctxs, ctxRef{len(st.Files), c})
		}
		st.Files = append(st.Files, df)
	}
	boIDs := make([]uint64, 0, len(k.bos))
	for id := range k.bos {
		boIDs = append(boIDs, id)
	}
	slices.Sort(boIDs)
	var resvs []*dma.Resv
	for _, id := range boIDs {
		bo := k.bos[id]
		db := DebugBO{ID: bo.id, Minor: bo.dev.cfg.Minor, Size: bo.size, Domain: bo.domain.String(), Flags: bo.flags, Refs: bo.refs}
		if bo.dmabuf != nil {
			db.DmaBuf = bo.dmabuf.ino
		}
		if bo.exporter != nil {
			db.ImportOf = bo.exporter.id
		}
		if m := bo.maps; m != nil {
			db.CPU = &DebugCPUMaps{MemfdInode: m.key.ino, Handed: m.handed, Referenced: m.ref, Holders: []int32{}}
			for pid := range m.holders {
				db.CPU.Holders = append(db.CPU.Holders, pid)
			}
			slices.Sort(db.CPU.Holders)
		}
		st.BOs = append(st.BOs, db)
		resvs = append(resvs, bo.resv)
	}
	for _, db := range k.dmabufs {
		st.DmaBufs = append(st.DmaBufs, DebugDmaBuf{Inode: db.ino, BO: db.bo.id, PrimeRefs: db.primeRefs})
	}
	slices.SortFunc(st.DmaBufs, func(a, b DebugDmaBuf) int { return cmp.Compare(a.Inode, b.Inode) })
	st.Sessions = len(k.sessions)
	for j, info := range k.jobs {
		dj := DebugJob{
			ID: j.ID(), File: info.ctx.f.id, Context: info.ctx.id, State: jobState(j),
			LongRunning: j.LongRunning, Commands: len(info.cmds), Fence: j.Finished().ID(), BOs: []uint64{},
		}
		for _, bo := range info.bos {
			dj.BOs = append(dj.BOs, bo.id)
		}
		st.Jobs = append(st.Jobs, dj)
	}
	slices.SortFunc(st.Jobs, func(a, b DebugJob) int { return cmp.Compare(a.ID, b.ID) })
	k.mu.Unlock()

	// Scheduler and fence state is read without k.mu: the scheduler calls
	// back into the kernel (to free jobs) with its own locks held.
	for i, r := range resvs {
		st.BOs[i].Resv = r.Snapshot()
	}
	for _, r := range ctxs {
		c := r.c
		c.mu.Lock()
		paused := c.paused
		queued := len(c.restored)
		c.mu.Unlock()
		queued += len(c.entity.Queued())
		st.Files[r.file].Contexts = append(st.Files[r.file].Contexts, DebugContext{
			ID: c.id, Guilty: c.guilty(), Paused: paused,
			Submitted: c.submitted.Load(), Completed: c.completed.Load(), Queued: queued,
		})
	}
	st.Fences = dma.Fences()
	st.LiveJobs = sched.LiveJobs()
	st.Users = k.Usage()
	return st
}

// jobState tells where a job is from its fences: the scheduled fence
// signals when the job first reaches the hardware, the finished fence when
// it is done.
func jobState(j *sched.Job) string {
	switch {
	case j.Finished().Signaled():
		return "finished"
	case j.Scheduled().Signaled():
		return "started"
	}
	return "queued"
}
