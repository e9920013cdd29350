// Command drmbench measures checkpoint and restore of GPU jobs at real size
// with real criu, the DRM plugin, kernelsimd and gpuload's "many"
// scenario, and prints each result as a ratio against a baseline measured
// in the same run: the median over interleaved pairs, so that a noisy,
// shared machine moves both sides alike. docs/BENCHMARKS.md explains the
// table and records results.
//
//	drmbench [-gib N] [-pairs N] [-only LIST] [-cpuprofile DIR] ...
//
// It needs root and criu >= 4.0 (make criu); `make bench` builds what it
// runs and calls it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"drmcr/internal/crrun"
	"drmcr/internal/units"
	"drmcr/kernelsim/ctl"
)

type config struct {
	criu       crrun.Criu
	kernelsim  string
	gpuload    string
	work       string // image directories go here
	gib        float64
	boSize     uint64
	pairs      int
	counts     []int
	sharedBos  int
	procs      int
	shareEvery int
	only       map[string]bool
	profile    string
	keep       bool
	// measureLive: cycles count the daemon's live BO bytes (a debug view:
	// costly with many BOs, so only where memory is reported).
	measureLive bool
	// logs, if set, is given criu's log of every dump and restore.
	logs func(log string)
	// started lists every workload started, so that none outlives its
	// benchmark, whether it ends well or not (a run that failed left
	// gigabytes of workloads behind, and the next one ran out of memory).
	started []*crrun.Workload
}

// killStarted kills what is left of the workloads started so far: each
// process still running the workload's own command line (its pid could
// have gone to another process since).
func (c *config) killStarted() {
	for _, w := range c.started {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w.PID)); err == nil && strings.Contains(string(b), w.Dir) {
			w.Kill()
		}
	}
	c.started = nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "drmbench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	var (
		c               config
		bin, lib, crBin string
		only, counts    string
		boSize          string
	)
	fs := flag.NewFlagSet("drmbench", flag.ContinueOnError)
	fs.StringVar(&crBin, "criu", "build/bin/criu", "criu (>= 4.0) or the wrapper make criu writes")
	fs.StringVar(&lib, "lib", "build/lib/criu", "directory holding drm_plugin.so")
	fs.StringVar(&bin, "bin", "build/bin", "directory holding kernelsimd and gpuload")
	fs.StringVar(&c.work, "dir", "build/bench", "where the checkpoints are written (the image directory's file system is measured)")
	fs.Float64Var(&c.gib, "gib", 1, "GiB of BO contents (and of anonymous memory) for the throughput benchmarks")
	fs.StringVar(&boSize, "bo-size", "64M", "size of the BOs of the throughput benchmarks")
	fs.IntVar(&c.pairs, "pairs", 3, "interleaved measurements of each side; the median is reported")
	fs.StringVar(&counts, "bo-counts", "1000,10000,100000", "BO counts of the time-per-BO benchmark (4 KiB BOs, one drm file)")
	fs.IntVar(&c.sharedBos, "shared-bos", 200000, "BOs of the multi-process benchmark")
	fs.IntVar(&c.procs, "procs", 8, "processes of the multi-process benchmark")
	fs.IntVar(&c.shareEvery, "share-every", 25, "every N-th BO of a process of the multi-process benchmark is shared with the next through a dma-buf (kernelsimd keeps two descriptors per dma-buf: mind its RLIMIT_NOFILE)")
	fs.StringVar(&only, "only", "", "comma-separated subset of: write, throughput, mapped, perbo, shared")
	fs.StringVar(&c.profile, "cpuprofile", "", "directory for kernelsimd CPU profiles, one per benchmark")
	fs.BoolVar(&c.keep, "keep", false, "keep the last checkpoint of each benchmark")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if c.boSize, err = units.ParseSize(boSize); err != nil {
		return fmt.Errorf("-bo-size: %w", err)
	}
	for _, s := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 {
			return fmt.Errorf("-bo-counts: %q is not a count of at least 2", s)
		}
		c.counts = append(c.counts, n)
	}
	c.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.only[s] = true
		}
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	c.criu = crrun.Criu{Bin: abs(crBin), LibDir: abs(lib), Verbosity: 2}
	c.kernelsim, c.gpuload, c.work = abs(filepath.Join(bin, "kernelsimd")), abs(filepath.Join(bin, "gpuload")), abs(c.work)
	for _, f := range []string{c.criu.Bin, filepath.Join(c.criu.LibDir, "drm_plugin.so"), c.kernelsim, c.gpuload} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s missing (make build criu): %w", f, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("criu needs root")
	}
	if err := os.MkdirAll(c.work, 0o755); err != nil {
		return err
	}
	if c.profile != "" {
		if err := os.MkdirAll(c.profile, 0o755); err != nil {
			return err
		}
	}
	t := &table{out: out}
	fmt.Fprintf(out, "drmbench: %s, %d CPUs, image dir %s; medians of %d interleaved pairs\n\n", machine(), numCPU(), c.work, c.pairs)
	for _, b := range []struct {
		name string
		fn   func(*config, *table) error
	}{
		{"write", benchWrite}, {"throughput", benchThroughput}, {"mapped", benchMapped}, {"perbo", benchPerBO}, {"shared", benchShared},
		{"xe", benchXe},
	} {
		if len(c.only) > 0 && !c.only[b.name] {
			continue
		}
		err := b.fn(&c, t)
		c.killStarted()
		if err != nil {
			t.print()
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	t.print()
	if t.failed > 0 {
		return fmt.Errorf("%d result(s) miss their target", t.failed)
	}
	return nil
}

// ---- the table ----------------------------------------------------------

type row struct {
	what, plugin, baseline, ratio, target string
	ok                                    bool
}

type table struct {
	out    io.Writer
	rows   []row
	notes  []string
	failed int
}

// add records a result; target is "" for rows that only inform.
func (t *table) add(what, plugin, baseline string, ratio float64, target string, ok bool) {
	r := row{what: what, plugin: plugin, baseline: baseline, target: target, ok: ok || target == ""}
	if !math.IsNaN(ratio) {
		r.ratio = fmt.Sprintf("%.2f", ratio)
	}
	if !r.ok {
		t.failed++
	}
	t.rows = append(t.rows, r)
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) print() {
	if len(t.rows) == 0 {
		return
	}
	fmt.Fprintln(t.out, "| What | Plugin | Baseline | Ratio | Target | |")
	fmt.Fprintln(t.out, "| --- | --- | --- | --- | --- | --- |")
	for _, r := range t.rows {
		mark := ""
		switch {
		case r.target == "":
		case r.ok:
			mark = "ok"
		default:
			mark = "MISSED"
		}
		fmt.Fprintf(t.out, "| %s | %s | %s | %s | %s | %s |\n", r.what, r.plugin, r.baseline, r.ratio, r.target, mark)
	}
	for _, n := range t.notes {
		fmt.Fprintln(t.out, "\n"+n)
	}
	t.rows, t.notes = nil, nil
}

// ---- helpers ------------------------------------------------------------

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func secs(d float64) string { return fmt.Sprintf("%.2f s", d) }

func gibps(gib, s float64) string { return fmt.Sprintf("%.2f GiB/s", gib/s) }

func machine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// daemon starts a kernelsimd with one device of the given memory.
func (c *config) daemon(name string, vram, gtt uint64) (*crrun.Daemon, error) {
	args := []string{"-q", "-device", fmt.Sprintf("driver=amdgpu,minor=128,vram=%d,gtt=%d,bandwidth=0", vram, gtt)}
	if c.profile != "" {
		args = append(args, "-cpuprofile", filepath.Join(c.profile, name+".pprof"))
	}
	return crrun.StartDaemon(c.kernelsim, args...)
}

// proc is a many workload waiting to be checkpointed.
type proc struct {
	w      *crrun.Workload
	goFile string
	want   string
	name   string
}

func (c *config) start(d *crrun.Daemon, name string, args ...string) (*proc, error) {
	dir, err := os.MkdirTemp(c.work, "proc-")
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, goFile: filepath.Join(dir, "go")}
	if p.w, err = crrun.StartWorkload(c.gpuload, d, dir, "many", append(args, "-wait-for", p.goFile)...); err != nil {
		return nil, err
	}
	c.started = append(c.started, p.w)
	if !crrun.Poll(30*time.Minute, func() bool { return p.w.Step() >= 0 || !p.w.Alive() }) || p.w.Step() < 0 {
		p.w.Kill()
		return nil, fmt.Errorf("%s: gpuload did not set up:\n%s", name, tail(p.w.Log(), 20))
	}
	return p, nil
}

// withWorkload starts a workload, runs f on it, and lets it finish
// (read everything back and check its result): a workload that lives only
// for its own measurement.
func (c *config) withWorkload(d *crrun.Daemon, name string, args []string, f func(p *proc) error) error {
	p, err := c.start(d, name, args...)
	if err != nil {
		return err
	}
	if err := f(p); err != nil {
		return err
	}
	return p.finish()
}

// expect computes the result an uninterrupted run gives (slow for large
// runs: do it while nothing is measured).
func (p *proc) expect() error {
	var err error
	p.want, err = p.w.Expected()
	return err
}

// finish lets the workload read everything back and checks its result.
func (p *proc) finish() error {
	if err := os.WriteFile(p.goFile, nil, 0o644); err != nil {
		return err
	}
	got, err := p.w.WaitResult(30 * time.Minute)
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", p.name, err, p.w.Log())
	}
	if p.want != "" && got != p.want {
		return fmt.Errorf("%s: restored run gave %s, an uninterrupted run gives %s", p.name, got, p.want)
	}
	return nil
}

// cycle dumps the workload (criu kills it) and restores it, and returns
// both durations in seconds and the daemon's peak resident memory during
// each (0 when unknown).
type cycleResult struct {
	dump, restore         float64
	dumpPeak, restorePeak uint64
	liveBOBytes           uint64
	imageBytes            uint64 // the checkpoint's size on disk
}

func (c *config) cycle(d *crrun.Daemon, p *proc) (cycleResult, error) {
	var r cycleResult
	img, err := os.MkdirTemp(c.work, "ckpt-")
	if err != nil {
		return r, err
	}
	defer func() {
		if !c.keep {
			os.RemoveAll(img)
		}
	}()
	cr := c.criu
	cr.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir}
	pids := p.w.Tree()
	daemonPID := daemonPid(d)
	// Every measurement starts with no dirty page cache: what the last one
	// wrote is not written back, and throttled, during this one.
	syscall.Sync()
	resetPeak(daemonPID)
	start := time.Now()
	log, err := cr.Run(img, "dump", "-t", strconv.Itoa(p.w.PID))
	if err != nil {
		return r, fmt.Errorf("dump %s: %w\n%s", p.name, err, tail(log, 30))
	}
	if c.logs != nil {
		c.logs(log)
	}
	r.dump = time.Since(start).Seconds()
	r.dumpPeak = peakRSS(daemonPID)
	r.imageBytes = diskUsage(img)
	if err := crrun.WaitGone(pids, time.Minute); err != nil {
		return r, err
	}
	// Restore right after the dumped tree died, into the same daemon.
	syscall.Sync()
	resetPeak(daemonPID)
	start = time.Now()
	log, err = cr.Run(img, "restore", "-d")
	if err != nil {
		return r, fmt.Errorf("restore %s: %w\n%s", p.name, err, tail(log, 30))
	}
	if c.logs != nil {
		c.logs(log)
	}
	r.restore = time.Since(start).Seconds()
	r.restorePeak = peakRSS(daemonPID)
	if c.measureLive {
		r.liveBOBytes = liveBOBytes(d)
	}
	return r, nil
}

// memoryUse is the peak resident memory of criu and of the plugin's
// helper over one dump and restore, in KiB.
type memoryUse struct{ criu, helper uint64 }

// helperRSS matches the line the helper logs at exit.
var helperRSS = regexp.MustCompile(`helper process peak RSS (\d+) KiB`)

// memoryCycle runs one cycle with criu at info level and returns the
// largest peak RSS of criu (its rusage) and of the helper (its exit line)
// over the dump and the restore.
func (c *config) memoryCycle(d *crrun.Daemon, p *proc) (memoryUse, error) {
	var m memoryUse
	saved := c.criu
	defer func() { c.criu = saved }()
	c.criu.Verbosity = 3
	c.criu.Finished = func(st *os.ProcessState) {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			m.criu = max(m.criu, uint64(ru.Maxrss))
		}
	}
	c.logs = func(log string) {
		for _, sm := range helperRSS.FindAllStringSubmatch(log, -1) {
			if n, err := strconv.ParseUint(sm[1], 10, 64); err == nil {
				m.helper = max(m.helper, n)
			}
		}
	}
	defer func() { c.logs = nil }()
	if _, err := c.cycle(d, p); err != nil {
		return m, err
	}
	if m.criu == 0 || m.helper == 0 {
		return m, fmt.Errorf("%s: no peak RSS of criu (%d KiB) or of the plugin's helper (%d KiB) found", p.name, m.criu, m.helper)
	}
	return m, nil
}

func kib(n uint64) string { return fmt.Sprintf("%d MiB", n>>10) }

// diskUsage is the space the files under dir take on disk (holes not
// counted).
func diskUsage(dir string) uint64 {
	var n uint64
	filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Stat(path, &st) == nil {
			n += uint64(st.Blocks) * 512
		}
		return nil
	})
	return n
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// profile starts (true) or stops the daemon's CPU profile (-cpuprofile).
func (c *config) profileDaemon(d *crrun.Daemon, on bool) {
	if c.profile == "" {
		return
	}
	sig := syscall.SIGUSR2
	if on {
		sig = syscall.SIGUSR1
	}
	syscall.Kill(d.PID(), sig)
}

// daemonPid is the daemon's process id.
func daemonPid(d *crrun.Daemon) int { return d.PID() }

// resetPeak resets a process's peak resident set (VmHWM).
func resetPeak(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakRSS is a process's VmHWM in bytes.
func peakRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// liveBOBytes sums the sizes of the daemon's BOs.
func liveBOBytes(d *crrun.Daemon) uint64 {
	c, err := ctl.Dial(d.Dir)
	if err != nil {
		return 0
	}
	defer c.Close()
	st, err := c.Debug()
	if err != nil {
		return 0
	}
	var n uint64
	for _, b := range st.BOs {
		n += b.Size
	}
	return n
}

func sizeName(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func mib(n uint64) string { return fmt.Sprintf("%d MiB", n>>20) }

// ---- benchmarks ---------------------------------------------------------

// benchWrite: how fast the image directory takes writes (no fsync, as
// criu and the plugin write), the ceiling of any dump: one stream into one
// file, as criu writes its pages, and a stream per CPU each into its own
// file, as the plugin writes its pages files (writes into one file take
// turns on its inode lock).
func benchWrite(c *config, t *table) error {
	bytes := uint64(c.gib * (1 << 30))
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i * 31)
	}
	write := func(streams int) (float64, error) {
		files := make([]*os.File, streams)
		defer func() {
			for _, f := range files {
				if f != nil {
					f.Close()
					os.Remove(f.Name())
				}
			}
		}()
		for i := range files {
			f, err := os.CreateTemp(c.work, "write-")
			if err != nil {
				return 0, err
			}
			files[i] = f
		}
		syscall.Sync()
		start := time.Now()
		errs := make(chan error, streams)
		for _, f := range files {
			go func() {
				for n := uint64(0); n < bytes/uint64(streams); n += uint64(len(buf)) {
					if _, err := f.Write(buf); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range files {
			if err := <-errs; err != nil {
				return 0, err
			}
		}
		return c.gib / time.Since(start).Seconds(), nil
	}
	streams := numCPU()
	var one, many []float64
	for range c.pairs {
		a, err := write(1)
		if err != nil {
			return err
		}
		b, err := write(streams)
		if err != nil {
			return err
		}
		one, many = append(one, a), append(many, b)
	}
	t.add(fmt.Sprintf("image dir raw write, %.3g GiB, one stream", c.gib), "", fmt.Sprintf("%.2f GiB/s", median(one)), math.NaN(), "", true)
	t.add(fmt.Sprintf("image dir raw write, %.3g GiB, %d streams into as many files (ceiling)", c.gib, streams), "", fmt.Sprintf("%.2f GiB/s", median(many)), math.NaN(), "", true)
	return nil
}

// benchThroughput: dump and restore of N GiB of BOs against criu's own
// dump and restore of N GiB of anonymous memory, a process holding both
// against the slower of the two alone, and the daemon's peak memory.
func benchThroughput(c *config, t *table) error {
	bytes := uint64(c.gib * (1 << 30))
	nbos := int((bytes + c.boSize - 1) / c.boSize)
	gib := float64(uint64(nbos)*c.boSize) / (1 << 30)
	mem := 2*uint64(nbos)*c.boSize + 256<<20
	d, err := c.daemon("throughput", mem, mem)
	if err != nil {
		return err
	}
	defer d.Stop()
	size := strconv.FormatUint(c.boSize, 10)
	anonArg := strconv.FormatUint(uint64(nbos)*c.boSize, 10)
	// Each workload lives only for its own measurement: side by side, the
	// three held 4N bytes, and with a checkpoint of 2N in the page cache
	// they overran this machine's memory at N = 4 GiB (criu's own dump
	// then ran at disk speed).
	workloads := []struct {
		name string
		args []string
	}{
		{"anon", []string{"-bos", "0", "-anon", anonArg}},
		{"bos", []string{"-bos", strconv.Itoa(nbos), "-bo-sizes", size}},
		{"both", []string{"-bos", strconv.Itoa(nbos), "-bo-sizes", size, "-anon", anonArg}},
	}
	const anon, bos, both = 0, 1, 2
	with := func(w int, f func(p *proc) error) error {
		return c.withWorkload(d, workloads[w].name, workloads[w].args, f)
	}
	var (
		dumpA, dumpB, restA, restB, restC, ratioDump, ratioRest, ratioBoth []float64
		peak                                                               uint64
		live                                                               uint64
	)
	c.measureLive = true
	defer func() { c.measureLive = false }()
	c.profileDaemon(d, true)
	defer c.profileDaemon(d, false)
	for range c.pairs {
		var rs [3]cycleResult
		for w := range workloads {
			err := with(w, func(p *proc) (err error) {
				rs[w], err = c.cycle(d, p)
				return err
			})
			if err != nil {
				return err
			}
		}
		ra, rb, rc := rs[anon], rs[bos], rs[both]
		dumpA, dumpB = append(dumpA, ra.dump), append(dumpB, rb.dump)
		restA, restB, restC = append(restA, ra.restore), append(restB, rb.restore), append(restC, rc.restore)
		ratioDump = append(ratioDump, rb.dump/ra.dump)
		ratioRest = append(ratioRest, rb.restore/ra.restore)
		ratioBoth = append(ratioBoth, rc.restore/max(ra.restore, rb.restore))
		for _, r := range []cycleResult{rb, rc} {
			if over := max(r.dumpPeak, r.restorePeak); over > peak {
				peak, live = over, r.liveBOBytes
			}
		}
	}
	c.profileDaemon(d, false)
	// Memory, outside the timed cycles (criu logs at info level here):
	// criu's peak RSS must not grow with the BO bytes, which never pass
	// through criu; the plugin's helper is reported beside it.
	var anonMem, bosMem memoryUse
	for _, m := range []struct {
		w   int
		use *memoryUse
	}{{anon, &anonMem}, {bos, &bosMem}} {
		err := with(m.w, func(p *proc) (err error) {
			*m.use, err = c.memoryCycle(d, p)
			return err
		})
		if err != nil {
			return err
		}
	}
	what := fmt.Sprintf("%.3g GiB of %s BOs", gib, sizeName(c.boSize))
	t.add("dump: "+what+" vs the same bytes of anonymous memory", gibps(gib, median(dumpB)), gibps(gib, median(dumpA)), median(ratioDump), "≤ 1.00 (time)", median(ratioDump) <= 1.0)
	t.add("restore: "+what+" vs the same bytes of anonymous memory", gibps(gib, median(restB)), gibps(gib, median(restA)), median(ratioRest), "≤ 1.00 (time)", median(ratioRest) <= 1.0)
	t.add(fmt.Sprintf("restore: %.3g GiB anon + %.3g GiB BOs in one process vs the slower alone", gib, gib), secs(median(restC)), secs(max(median(restA), median(restB))), median(ratioBoth), "≤ 1.20", median(ratioBoth) <= 1.2)
	growth := int64(bosMem.criu) - int64(anonMem.criu)
	t.add(fmt.Sprintf("criu peak RSS, dump + restore of %.3g GiB of BOs vs of the same bytes of anonymous memory", gib), kib(bosMem.criu), kib(anonMem.criu), float64(bosMem.criu)/float64(max(anonMem.criu, 1)), "growth < 64 MiB", growth < 64<<10)
	t.add("the plugin's helper process, peak RSS over the same dump and restore", kib(bosMem.helper), "", math.NaN(), "", true)
	if peak > 0 {
		over := int64(peak) - int64(live)
		t.add("kernelsimd peak RSS during dumps and restores (same daemon)", mib(peak), mib(live)+" of live BOs", float64(peak)/float64(max(live, 1)), "≤ live + 64 MiB", over <= 64<<20)
	}
	return nil
}

// benchMapped: dump and restore of N GiB of BOs that the process maps
// (criu saves their memory as the mappings', the plugin only their
// checksums; restore adopts criu's memory and checks it) against criu's
// own dump and restore of the same bytes of shared memory (what criu does
// for the mapped BOs; the plugin's part is the difference), and beside
// the same BOs unmapped (the plugin streams them into its pages files and
// back), in one run, interleaved; then the same with only 1/16 of each BO
// ever written, against the same BOs unmapped.
func benchMapped(c *config, t *table) error {
	bytes := uint64(c.gib * (1 << 30))
	nbos := int((bytes + c.boSize - 1) / c.boSize)
	gib := float64(uint64(nbos)*c.boSize) / (1 << 30)
	mem := 2*uint64(nbos)*c.boSize + 256<<20
	d, err := c.daemon("mapped", mem, mem)
	if err != nil {
		return err
	}
	defer d.Stop()
	size := strconv.FormatUint(c.boSize, 10)
	sparse := strconv.FormatUint(c.boSize/16, 10)
	args := []string{"-bos", strconv.Itoa(nbos), "-bo-sizes", size}
	const shared, mapped, unmapped, sparseUnmapped, sparseMapped = 0, 1, 2, 3, 4
	workloads := [][]string{
		{"-bos", "0", "-anon", strconv.FormatUint(uint64(nbos)*c.boSize, 10), "-anon-shared"},
		append(slices.Clone(args), "-map"),
		args,
		append(slices.Clone(args), "-fill", sparse),
		append(slices.Clone(args), "-fill", sparse, "-map"),
	}
	type side struct{ dump, rest, img []float64 }
	sides := make([]side, len(workloads))
	c.profileDaemon(d, true)
	defer c.profileDaemon(d, false)
	for range c.pairs {
		// One workload at a time, as in benchThroughput.
		for i, w := range workloads {
			var r cycleResult
			err := c.withWorkload(d, fmt.Sprint("mapped bench ", w), w, func(p *proc) (err error) {
				r, err = c.cycle(d, p)
				return err
			})
			if err != nil {
				return err
			}
			sides[i].dump = append(sides[i].dump, r.dump)
			sides[i].rest = append(sides[i].rest, r.restore)
			sides[i].img = append(sides[i].img, float64(r.imageBytes))
		}
	}
	c.profileDaemon(d, false)
	ratio := func(a, b []float64) float64 {
		var rs []float64
		for k := range a {
			rs = append(rs, a[k]/b[k])
		}
		return median(rs)
	}
	bos := fmt.Sprintf("%.3g GiB of %s BOs mapped by the process", gib, sizeName(c.boSize))
	for _, v := range []struct {
		name   string
		m, u   side
		target float64 // 0: none
	}{
		{bos + " vs the same bytes of shared memory (criu's part of it)", sides[mapped], sides[shared], 1.5},
		{bos + " vs the same BOs unmapped", sides[mapped], sides[unmapped], 0},
		{"the same with 1/16 of each BO ever written vs those BOs unmapped", sides[sparseMapped], sides[sparseUnmapped], 1.0},
	} {
		rd, rr := ratio(v.m.dump, v.u.dump), ratio(v.m.rest, v.u.rest)
		tgt := ""
		if v.target > 0 {
			tgt = fmt.Sprintf("≤ %.2f (time)", v.target)
		}
		t.add("dump: "+v.name, gibps(gib, median(v.m.dump)), gibps(gib, median(v.u.dump)), rd, tgt, v.target == 0 || rd <= v.target)
		t.add("restore: "+v.name, gibps(gib, median(v.m.rest)), gibps(gib, median(v.u.rest)), rr, tgt, v.target == 0 || rr <= v.target)
		t.add("checkpoint size: "+v.name, mib(uint64(median(v.m.img))), mib(uint64(median(v.u.img))), median(v.m.img)/median(v.u.img), "", true)
	}
	return nil
}

// benchPerBO: time per BO of a dump and restore of K 4 KiB BOs in one drm
// file, as the marginal cost over a checkpoint of the same program with
// one BO; the largest count is also checked bit for bit.
func benchPerBO(c *config, t *table) error {
	maxK := 0
	for _, k := range c.counts {
		maxK = max(maxK, k)
	}
	mem := uint64(maxK)*4096*2 + 256<<20
	d, err := c.daemon("perbo", mem, mem)
	if err != nil {
		return err
	}
	defer d.Stop()
	base, err := c.start(d, "1 BO", "-bos", "1", "-share-every", "0")
	if err != nil {
		return err
	}
	procs := map[int]*proc{}
	for _, k := range c.counts {
		if procs[k], err = c.start(d, fmt.Sprintf("%d BOs", k), "-bos", strconv.Itoa(k), "-share-every", "0"); err != nil {
			return err
		}
		if err := procs[k].expect(); err != nil {
			return err
		}
	}
	per := map[int][]float64{}
	raw := map[int][]float64{}
	var baseDump, baseRest []float64
	// A small count's marginal time is a few milliseconds against criu's
	// jitter of as much: measure small counts more often.
	reps := func(k int) int { return min(25, max(c.pairs, c.pairs*10000/k)) }
	c.profileDaemon(d, true)
	defer c.profileDaemon(d, false)
	for i := range reps(slices.Min(c.counts)) {
		rb, err := c.cycle(d, base)
		if err != nil {
			return err
		}
		baseDump, baseRest = append(baseDump, rb.dump), append(baseRest, rb.restore)
		for _, k := range c.counts {
			if i >= reps(k) {
				continue
			}
			r, err := c.cycle(d, procs[k])
			if err != nil {
				return err
			}
			per[k] = append(per[k], (r.dump+r.restore-rb.dump-rb.restore)/float64(k-1))
			raw[k] = append(raw[k], r.dump+r.restore)
		}
	}
	c.profileDaemon(d, false)
	for _, k := range c.counts {
		if err := procs[k].finish(); err != nil {
			return err
		}
	}
	if err := base.finish(); err != nil {
		return err
	}
	first := median(per[c.counts[0]])
	for _, k := range c.counts {
		m := median(per[k])
		t.add(fmt.Sprintf("dump + restore of %d BOs (4 KiB, one drm file), time per BO beyond 1 BO", k),
			fmt.Sprintf("%.1f µs (%.2f s in all)", m*1e6, median(raw[k])), fmt.Sprintf("%.1f µs at %d BOs", first*1e6, c.counts[0]), m/first, "≤ 1.50", m/first <= 1.5)
	}
	t.note("time per BO: (dump + restore of the K-BO process) minus (dump + restore of the same program with 1 BO, %s + %s), divided by K - 1, measured right after each other; the median of %d measurements at %d BOs (of %d at %d); each K is also restored bit for bit.",
		secs(median(baseDump)), secs(median(baseRest)), reps(c.counts[0]), c.counts[0], reps(c.counts[len(c.counts)-1]), c.counts[len(c.counts)-1])
	return nil
}

// benchShared: the multi-process run at full size, dumped and restored
// once and checked bit for bit.
func benchShared(c *config, t *table) error {
	mem := uint64(c.sharedBos)*4096*2 + 256<<20
	d, err := c.daemon("shared", mem, mem)
	if err != nil {
		return err
	}
	defer d.Stop()
	p, err := c.start(d, "shared", "-bos", strconv.Itoa(c.sharedBos), "-procs", strconv.Itoa(c.procs), "-share-every", strconv.Itoa(c.shareEvery))
	if err != nil {
		return err
	}
	if err := p.expect(); err != nil {
		return err
	}
	c.profileDaemon(d, true)
	r, err := c.cycle(d, p)
	c.profileDaemon(d, false)
	if err != nil {
		return err
	}
	if err := p.finish(); err != nil {
		return err
	}
	t.add(fmt.Sprintf("%d BOs over %d processes, every %dth shared through a dma-buf: dump + restore (bit-identical)", c.sharedBos, c.procs, c.shareEvery),
		fmt.Sprintf("%s + %s", secs(r.dump), secs(r.restore)), "", math.NaN(), "", true)
	return nil
}

// benchXe: the same many workload (1000 BOs, 2 processes sharing BOs
// through dma-bufs) dumped and restored on an xe device, whose files map
// their BOs with VM_BIND and carry the xe blob, against its baseline on
// an amdgpu device of the same daemon, interleaved; then xe-lr, a
// long-running xe job preempted through its preempt fence at the dump,
// and xcross, a BO shared between the two drivers, each once and checked
// bit for bit.
func benchXe(c *config, t *table) error {
	const mem = 2 << 30
	d, err := crrun.StartDaemon(c.kernelsim, "-q",
		"-device", fmt.Sprintf("driver=amdgpu,minor=128,vram=%d,gtt=%d,bandwidth=0", mem, mem),
		"-device", fmt.Sprintf("driver=xe,minor=129,vram=%d,gtt=%d,bandwidth=0", mem, mem))
	if err != nil {
		return err
	}
	defer d.Stop()
	args := []string{"-bos", "1000", "-procs", "2", "-share-every", "10"}
	amd, err := c.start(d, "amdgpu", append([]string{"-minor", "128"}, args...)...)
	if err != nil {
		return err
	}
	xe, err := c.start(d, "xe", append([]string{"-minor", "129"}, args...)...)
	if err != nil {
		return err
	}
	for _, p := range []*proc{amd, xe} {
		if err := p.expect(); err != nil {
			return err
		}
	}
	var ratios, tx, ta []float64
	for range c.pairs {
		ra, err := c.cycle(d, amd)
		if err != nil {
			return err
		}
		rx, err := c.cycle(d, xe)
		if err != nil {
			return err
		}
		ta, tx = append(ta, ra.dump+ra.restore), append(tx, rx.dump+rx.restore)
		ratios = append(ratios, (rx.dump+rx.restore)/(ra.dump+ra.restore))
	}
	for _, p := range []*proc{amd, xe} {
		if err := p.finish(); err != nil {
			return err
		}
	}
	m := median(ratios)
	t.add("dump + restore of 1000 BOs over 2 processes on xe (VM_BIND, exec queues, xe blob)", secs(median(tx)), secs(median(ta))+" on amdgpu", m, "≤ 1.20", m <= 1.2)
	for _, sc := range []struct {
		name string
		args []string
	}{{"xe-lr", []string{"-minor", "129"}}, {"xcross", []string{"-minor", "129", "-minor2", "128"}}} {
		dir, err := os.MkdirTemp(c.work, "proc-")
		if err != nil {
			return err
		}
		w, err := crrun.StartWorkload(c.gpuload, d, dir, sc.name, sc.args...)
		if err != nil {
			return err
		}
		want, err := w.Expected()
		if err != nil {
			w.Kill()
			return err
		}
		if err := w.WaitStep(1, time.Minute); err != nil {
			w.Kill()
			return err
		}
		r, err := c.cycle(d, &proc{w: w, name: sc.name})
		if err != nil {
			w.Kill()
			return err
		}
		got, err := w.WaitResult(5 * time.Minute)
		if err != nil || got != want {
			return fmt.Errorf("%s: restored run gave %q (%v), an uninterrupted run gives %s", sc.name, got, err, want)
		}
		t.note("%s dumped mid-run in %s and restored in %s, bit for bit.", sc.name, secs(r.dump), secs(r.restore))
	}
	t.note("xe: the same many workload on each device of one daemon, interleaved; the median of %d ratios.", c.pairs)
	return nil
}
