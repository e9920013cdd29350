package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/internal/units"
	"drmcr/kernelsim/uapi"
)

// many: a GPU job at real size, for the scale tests and benchmarks. The
// run's -bos BOs are spread over -procs processes (the parent and
// -procs - 1 children); their sizes cycle through -bo-sizes and each is
// filled by the GPU with random data of its own seed and mapped into its
// process's GPU address space. With several processes, every
// -share-every-th BO of process i is exported as a dma-buf, passed (through
// the parent) to process i+1 (mod -procs), imported and mapped there, and
// every fd is closed again: the sharing lives on in the kernel's PRIME
// tables only, as a runtime that imports and closes does. The parent also
// holds -anon bytes of anonymous memory filled with a pattern (shared with
// -anon-shared). -fill N
// fills only the first N bytes of each BO. With -map
// each process maps its own BOs into its address space before the GPU
// fills them, and reads them back through the mappings.
//
// Once set up it reports "step 0/N" and waits (-wait-for FILE, or the step
// delay): that is when a harness checkpoints it, as often as it likes.
// Then every process reads every BO it holds back and the output is, per
// process, the sha256 of the contents of its own BOs and then of the BOs
// it imported, in order, and the sha256 of the anonymous memory: a restore
// must give them back bit for bit.

const (
	manyVABase     = 0x4000_0000_0000 // clear of the other scenarios' buffers
	manyJobBuffers = 64               // BOs filled per GPU job, at most
	// A fill job writes at most manyJobBytes (or one piece), and one
	// command at most manyFillPiece of a BO, so that no job runs for
	// longer than the device's job timeout (5 s by default) however
	// large the BOs and however many (the random fill runs at about
	// 1 GB/s here). A larger BO is filled piece by piece, each piece
	// seeded on its own.
	manyJobBytes  = 256 << 20
	manyFillPiece = 64 << 20
)

// manyPlan is what the parameters say about one process of a many run.
type manyPlan struct {
	p    *params
	proc int
}

// count is how many BOs process proc creates.
func (m manyPlan) count() int {
	n := m.p.bos / m.p.procs
	if m.proc < m.p.bos%m.p.procs {
		n++
	}
	return n
}

func (m manyPlan) size(j int) uint64 { return m.p.boSizes[j%len(m.p.boSizes)] }

// filled is how many bytes of BO j the GPU fills (-fill), from its start.
func (m manyPlan) filled(j int) uint64 {
	if m.p.fill == 0 {
		return m.size(j)
	}
	return min(m.p.fill, m.size(j))
}

func (m manyPlan) seed(j int) uint64 { return stepSeed(m.p.seed, m.proc<<24|j, 21) }

// shared reports whether BO j of the process goes to the next process.
func (m manyPlan) shared(j int) bool {
	return m.p.procs > 1 && m.p.shareEvery > 0 && j%m.p.shareEvery == m.p.shareEvery-1
}

// prev is the process whose shared BOs this one imports.
func (m manyPlan) prev() manyPlan { return manyPlan{m.p, (m.proc + m.p.procs - 1) % m.p.procs} }

// fillJobs fills BOs ids [from, to) of the process (bufID j is BO j), in
// jobs of at most manyJobBuffers BOs and manyJobBytes (see there).
func (m manyPlan) fillJobs(from, to int) []*job {
	type piece struct {
		id     bufID
		off, n uint64
		seed   uint64
	}
	var jobs []*job
	var cur []piece
	var curBytes uint64
	flush := func() {
		if len(cur) == 0 {
			return
		}
		var ids []bufID
		for _, p := range cur {
			if len(ids) == 0 || ids[len(ids)-1] != p.id {
				ids = append(ids, p.id)
			}
		}
		jb := newJob(fmt.Sprintf("fill-%d-%d+%d", from, to, len(jobs)), ids...)
		for _, p := range cur {
			jb.randfill(p.id, p.off, p.n, p.seed)
		}
		jobs = append(jobs, jb)
		cur, curBytes = nil, 0
	}
	nbos := 0
	for j := from; j < to; j++ {
		filled := m.filled(j)
		for k, off := uint64(0), uint64(0); off < filled; k, off = k+1, off+manyFillPiece {
			n := min(manyFillPiece, filled-off)
			if len(cur) > 0 && (curBytes+n > manyJobBytes || (off == 0 && nbos == manyJobBuffers)) {
				flush()
				nbos = 0
			}
			if off == 0 || len(cur) == 0 {
				nbos++
			}
			// Piece 0 keeps the BO's own seed: a BO of at most one piece
			// is filled as it always was.
			cur = append(cur, piece{bufID(j), off, n, m.seed(j) + k*0x9e3779b97f4a7c15})
			curBytes += n
		}
	}
	flush()
	return jobs
}

// manyExpect computes each process's digest on the CPU, one BO at a time.
func manyExpect(p *params, ex executor) ([]byte, error) {
	var out []byte
	contents := func(m manyPlan, j int) ([]byte, error) {
		ex.alloc(bufID(j), m.size(j))
		for _, jb := range m.fillJobs(j, j+1) {
			if err := ex.run(jb); err != nil {
				return nil, err
			}
		}
		b := ex.bytes(bufID(j))
		ex.alloc(bufID(j), 0)
		return b, nil
	}
	for proc := range p.procs {
		m := manyPlan{p, proc}
		h := sha256.New()
		for j := range m.count() {
			b, err := contents(m, j)
			if err != nil {
				return nil, err
			}
			h.Write(b)
		}
		prev := m.prev()
		for j := range prev.count() {
			if prev.shared(j) {
				b, err := contents(prev, j)
				if err != nil {
					return nil, err
				}
				h.Write(b)
			}
		}
		out = h.Sum(out)
	}
	return append(out, anonDigest(anonPattern(p))...), nil
}

// manyProc is one process's part of a run.
type manyProc struct {
	r    *runner
	m    manyPlan
	g    *gpuProc
	own  int // BOs 0..own-1 are its own; the rest are imported
	next int // next bufID
	va   uint64
	maps map[bufID][]byte // -map: the own BOs' CPU mappings
}

func (r *runner) manyProc(proc int) (*manyProc, error) {
	g, err := r.openGPU()
	if err != nil {
		return nil, err
	}
	return &manyProc{r: r, m: manyPlan{r.p, proc}, g: g, va: manyVABase, maps: map[bufID][]byte{}}, nil
}

// create makes, fills and maps the process's own BOs.
func (mp *manyProc) create() error {
	m, g := mp.m, mp.g
	ctx, err := g.newContext(0)
	if err != nil {
		return err
	}
	done, err := g.newSyncobj()
	if err != nil {
		return err
	}
	n := m.count()
	for j := range n {
		h, err := g.dev.BOCreate(m.size(j), vramOrGTT(j), 0, 0)
		if err != nil {
			return fmt.Errorf("create BO %d of %d: %w", j, n, err)
		}
		if err := mp.adopt(bufID(j), h, m.size(j)); err != nil {
			return err
		}
		if m.p.mapBOs {
			mm, err := g.dev.Map(h, 0, 0, unix.PROT_READ|unix.PROT_WRITE)
			if err != nil {
				return fmt.Errorf("map BO %d of %d: %w", j, n, err)
			}
			mp.maps[bufID(j)] = mm.Data
		}
	}
	mp.own, mp.next = n, n
	for _, jb := range m.fillJobs(0, n) {
		if err := g.submitSync(ctx, jb, nil, []uint32{done}); err != nil {
			return err
		}
	}
	if n > 0 {
		if err := g.awaitJob(done, "fill jobs"); err != nil {
			return err
		}
	}
	return nil
}

// vramOrGTT spreads BOs over both domains: one in four in GTT.
func vramOrGTT(j int) uapi.Domain {
	if j%4 == 3 {
		return uapi.Domain_DOMAIN_GTT
	}
	return uapi.Domain_DOMAIN_VRAM
}

// adopt records a handle and maps it at the process's next address.
func (mp *manyProc) adopt(id bufID, h uint32, size uint64) error {
	g := mp.g
	g.handles[id], g.sizes[id] = h, size
	if err := g.mapVA(h, mp.va, size); err != nil {
		return fmt.Errorf("map BO %d: %w", id, err)
	}
	g.vas[id] = mp.va
	mp.va += size
	return nil
}

// export sends every shared BO as a dma-buf fd (closing ours).
func (mp *manyProc) export(to *peer) error {
	for j := range mp.own {
		if !mp.m.shared(j) {
			continue
		}
		fd, err := mp.g.exportDmaBuf(bufID(j))
		if err != nil {
			return err
		}
		err = to.send(msgShare, j, nil, fd)
		closeFDs([]int{fd})
		if err != nil {
			return err
		}
	}
	return nil
}

// importFD imports a dma-buf (closing the fd) as the next buffer.
func (mp *manyProc) importFD(fd int) error {
	defer closeFDs([]int{fd})
	h, err := mp.g.dev.ImportDmaBuf(fd)
	if err != nil {
		return fmt.Errorf("import dma-buf: %w", err)
	}
	info, err := mp.g.dev.BOInfo(h)
	if err != nil {
		return fmt.Errorf("imported BO info: %w", err)
	}
	id := bufID(mp.next)
	mp.next++
	return mp.adopt(id, h, info.Size)
}

// digest reads every BO back, in order, into one sha256.
func (mp *manyProc) digest() ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, 0)
	for j := range mp.next {
		id := bufID(j)
		size := mp.g.sizes[id]
		if m, ok := mp.maps[id]; ok {
			// The fills were waited for: the GPU's writes are in.
			h.Write(m)
			continue
		}
		if uint64(cap(buf)) < size {
			buf = make([]byte, size)
		}
		b := buf[:size]
		if err := mp.g.dev.Read(mp.g.handles[id], 0, b); err != nil {
			return nil, fmt.Errorf("read BO %d: %w", j, err)
		}
		h.Write(b)
	}
	return h.Sum(nil), nil
}

func manyRun(r *runner) ([]byte, error) {
	p := r.p
	anon := anonPattern(p)
	var mp *manyProc
	if p.bos > 0 {
		var err error
		if mp, err = r.manyProc(0); err != nil {
			return nil, err
		}
		defer mp.g.close()
		if err := mp.create(); err != nil {
			return nil, err
		}
	}
	var children []*child
	for range p.procs - 1 {
		c, err := r.spawn("worker")
		if err != nil {
			return nil, err
		}
		if err := c.peer.send(msgStep, len(children)+1, nil); err != nil {
			return nil, err
		}
		children = append(children, c)
	}
	// Every child creates its BOs and exports its shared ones to us; we
	// pass each on to the next process at once, so that no process holds
	// more than a few dma-buf fds (descriptors are a limited resource,
	// of the daemon's too: it keeps two per exported dma-buf). Taking the
	// children last to first, the receiver of each share is always a
	// process that has sent its own and now takes what it is sent.
	for i := len(children) - 1; i >= 0; i-- {
		to := (i + 2) % p.procs // process index; child k is process k+1
		for {
			m, err := children[i].peer.recv()
			if err != nil {
				return nil, fmt.Errorf("worker %d setup: %w", i+1, err)
			}
			if m.kind == msgReady {
				break
			}
			if m.kind != msgShare || len(m.fds) != 1 {
				closeFDs(m.fds)
				return nil, fmt.Errorf("worker %d setup: protocol: got %v with %d fds", i+1, m.kind, len(m.fds))
			}
			if to == 0 {
				err = mp.importFD(m.fds[0])
			} else {
				err = children[to-1].peer.send(msgShare, int(m.step), nil, m.fds...)
				closeFDs(m.fds)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	if mp != nil && len(children) > 0 {
		if err := mp.export(children[0].peer); err != nil {
			return nil, err
		}
	}
	for _, c := range children {
		if err := c.peer.send(msgAck, 0, nil); err != nil {
			return nil, err
		}
		if err := c.awaitReady(); err != nil {
			return nil, err
		}
	}
	r.progress(0)
	if err := r.waitForCheckpoint(); err != nil {
		return nil, err
	}
	var out []byte
	if mp != nil {
		d, err := mp.digest()
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	} else if p.procs > 0 {
		out = append(out, sha256.New().Sum(nil)...)
	}
	for _, c := range children {
		d, err := c.collectOutput()
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	if err := r.finishChildren(); err != nil {
		return nil, err
	}
	for i := 1; i <= p.steps; i++ { // read back: the run's steps are done
		r.progress(i)
	}
	return append(out, anonDigest(anon)...), nil
}

// waitForCheckpoint waits for -wait-for to exist, or the step delay.
func (r *runner) waitForCheckpoint() error {
	if r.p.waitFor == "" {
		time.Sleep(r.p.stepDelay)
		return nil
	}
	for {
		if _, err := os.Stat(r.p.waitFor); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// manyWorker is process proc (a child): it learns its index, creates its
// BOs, exports its shared ones to the parent, imports what the parent
// passes on, reports ready and sends its digest when asked.
func manyWorker(r *runner, parent *peer) error {
	m, err := parent.expect(msgStep, -1)
	if err != nil {
		return err
	}
	mp, err := r.manyProc(int(m.step))
	if err != nil {
		return err
	}
	defer mp.g.close()
	if err := mp.create(); err != nil {
		return err
	}
	if err := mp.export(parent); err != nil {
		return err
	}
	if err := parent.send(msgReady, 0, nil); err != nil {
		return err
	}
	for {
		m, err := parent.recv()
		if err != nil {
			return err
		}
		if m.kind == msgAck {
			break
		}
		if m.kind != msgShare || len(m.fds) != 1 {
			closeFDs(m.fds)
			return fmt.Errorf("setup: protocol: got %v with %d fds", m.kind, len(m.fds))
		}
		if err := mp.importFD(m.fds[0]); err != nil {
			return err
		}
	}
	if err := parent.send(msgReady, 0, nil); err != nil {
		return err
	}
	if _, err := parent.expect(msgFinish, -1); err != nil {
		return err
	}
	d, err := mp.digest()
	if err != nil {
		return err
	}
	return parent.sendOutput(d)
}

// anonPattern maps and fills the parent's anonymous memory (nil for none).
func anonPattern(p *params) []byte {
	if p.anon == 0 {
		return nil
	}
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if p.anonShared {
		flags = unix.MAP_SHARED | unix.MAP_ANONYMOUS
	}
	b, err := unix.Mmap(-1, 0, int(p.anon), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		panic(fmt.Sprintf("anonymous memory of %d bytes: %v", p.anon, err))
	}
	fillAnon(p, b)
	return b
}

func fillAnon(p *params, b []byte) {
	x := p.seed | 1
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
}

// anonDigest is the sha256 of the anonymous memory (of an empty one when
// there is none).
func anonDigest(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

// sizesFlag is a comma-separated list of sizes (units.ParseSize).
type sizesFlag struct{ v *[]uint64 }

func (s sizesFlag) String() string {
	if s.v == nil {
		return ""
	}
	var parts []string
	for _, n := range *s.v {
		parts = append(parts, strconv.FormatUint(n, 10))
	}
	return strings.Join(parts, ",")
}

func (s sizesFlag) Set(v string) error {
	var out []uint64
	for _, part := range strings.Split(v, ",") {
		n, err := units.ParseSize(strings.TrimSpace(part))
		if err != nil {
			return err
		}
		out = append(out, n)
	}
	*s.v = out
	return nil
}

func init() {
	register(&scenario{
		name:   "many",
		order:  20,
		desc:   "a GPU job at real size: -bos BOs of -bo-sizes over -procs processes sharing every -share-every-th BO, plus -anon bytes of memory; checkpointed while it waits",
		steps:  1,
		delay:  2 * time.Second,
		expect: manyExpect,
		run:    abortChildrenOnError(manyRun),
		roles:  map[string]func(r *runner, parent *peer) error{"worker": manyWorker},
	})
}
