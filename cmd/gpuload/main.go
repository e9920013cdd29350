// Command gpuload is a deterministic GPU program for checkpoint/restore
// tests: it runs a named scenario of GPU work on a kernelsim render node,
// slowly enough to be dumped mid-run, and prints one final line
//
//	result <scenario> <hex sha256 of the scenario's output bytes>
//
// on stdout (and into -result FILE, atomically). `gpuload -expect
// <scenario> [params]` prints the line an uninterrupted run gives,
// computed on the CPU without a daemon. A run restored by CRIU must print
// the same line.
//
// Progress: "step i/N" on stderr and, with -progress FILE, appended to that
// file (one line per write, the file opened and closed for each line);
// "step i/N" means that step i's work has been submitted. After the result
// is written the progress file gets a last line "done".
//
// Multi-process scenarios re-execute /proc/self/exe with a hidden -role
// flag; parent and child talk over a SOCK_SEQPACKET socketpair (the
// child's end is its fd 3) and pass dma-buf fds with SCM_RIGHTS. Every
// kernel call is a blocking libdrm call; children are started with
// fork+exec (no pidfd is kept) and waited for with wait4.
//
// Exit status: 0 on success, 1 when the run fails, 2 on usage errors.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"drmcr/internal/units"
	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
)

// params are a run's parameters; every process of a run gets the same.
type params struct {
	scenario   string
	runtimeDir string
	minor      uint32
	minor2     uint32 // crossdev: the consumer's device
	steps      int
	stepDelay  time.Duration
	size       uint64
	seed       uint64
	iterations uint64
	stuckFor   time.Duration
	progress   string
	result     string

	// many
	bos        int
	procs      int
	boSizes    []uint64
	shareEvery int
	mapBOs     bool
	fill       uint64
	anon       uint64
	anonShared bool
	waitFor    string

	// threads
	threads int
}

// scenario is one named workload.
type scenario struct {
	name  string
	desc  string
	order int
	// drivers names the drivers the scenario needs ("xe", "xe+amdgpu");
	// "" runs on any.
	drivers string
	// defaults
	steps      int
	delay      time.Duration
	iterations uint64 // compute iterations per step; 0: defaultIterations
	// expect computes the output bytes on ex in program order.
	expect func(p *params, ex executor) ([]byte, error)
	// run performs the scenario on the GPU (in the parent process) and
	// returns the output bytes.
	run func(r *runner) ([]byte, error)
	// roles are the child processes' entry points, by -role name; the
	// peer is the socketpair end to the parent.
	roles map[string]func(r *runner, parent *peer) error
}

var scenarios = map[string]*scenario{}

func register(s *scenario) { scenarios[s.name] = s }

// usageError makes run exit with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const (
	defaultSize       = 256 << 10
	minSize           = 16 << 10 // the smallest size the tests run every scenario with
	defaultIterations = 40000    // 4 s at the default device's 100µs per iteration
	defaultStuckFor   = 30 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// sizeFlag is a byte count flag (units.ParseSize: K, M, G, T suffixes).
type sizeFlag struct{ v *uint64 }

func (s sizeFlag) String() string {
	if s.v == nil {
		return ""
	}
	n := *s.v
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

func (s sizeFlag) Set(v string) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	*s.v = n
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	var (
		p      params
		expect string
		list   bool
		role   string
		minor  uint
		minor2 uint
	)
	fs := flag.NewFlagSet("gpuload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&p.scenario, "scenario", "", "scenario to run (see -list)")
	fs.StringVar(&expect, "expect", "", "print the result line an uninterrupted run of this scenario gives, computed on the CPU (no daemon)")
	fs.BoolVar(&list, "list", false, "list the scenarios")
	fs.StringVar(&p.runtimeDir, "runtime-dir", kernelsim.RuntimeDirFromEnv(), "kernelsim runtime directory (default from KERNELSIM_RUNTIME_DIR)")
	fs.UintVar(&minor, "minor", 128, "render node minor")
	fs.UintVar(&minor2, "minor2", 0, "crossdev: the consumer's render node minor (0: -minor + 1)")
	fs.IntVar(&p.steps, "steps", 0, "number of steps (0: the scenario's default)")
	fs.DurationVar(&p.stepDelay, "step-delay", 0, "sleep between steps (default: the scenario's)")
	p.size = defaultSize
	fs.Var(sizeFlag{&p.size}, "size", "size in `bytes` of the scenario's main buffers (K/M/G suffixes): a multiple of 4096 from 16K to 64G (the largest BO kernelsim creates); a scenario holds up to two of them in VRAM at once (released: two and 8K), so the device needs that much VRAM (the default device has 1G), and -expect that much host memory")
	fs.Uint64Var(&p.seed, "seed", 1, "seed of all generated data")
	fs.Uint64Var(&p.iterations, "iterations", 0, fmt.Sprintf("longrun, pipeline, handoff, threads, forked, mapped: compute iterations per step (0: the scenario's default, %d for longrun, %d for pipeline and mapped, %d for handoff, %d for threads and forked)", defaultIterations, pipelineIterations, handoffIterations, thIterations))
	fs.DurationVar(&p.stuckFor, "stuck-for", defaultStuckFor, "stuck: how long the job waits for its sw_sync fence")
	fs.StringVar(&p.progress, "progress", "", "append progress lines (\"step i/N\", then \"done\") to this file")
	fs.StringVar(&p.result, "result", "", "also write the result line to this file (atomically: temporary file and rename)")
	fs.IntVar(&p.bos, "bos", 1000, "many: number of BOs in all")
	fs.IntVar(&p.procs, "procs", 1, "many: number of processes the BOs are spread over")
	p.boSizes = []uint64{4096}
	fs.Var(sizesFlag{&p.boSizes}, "bo-sizes", "many: BO sizes, comma-separated, used in turn (K/M/G suffixes)")
	fs.IntVar(&p.shareEvery, "share-every", 10, "many: every N-th BO of a process is shared with the next process through a dma-buf (0: none)")
	fs.BoolVar(&p.mapBOs, "map", false, "many: each process maps its own BOs into its address space (GEM_MMAP) before filling them, and reads them back through the mappings")
	fs.Var(sizeFlag{&p.fill}, "fill", "many: the GPU fills only the first `bytes` of each BO, the rest never written (0: all of it)")
	fs.Var(sizeFlag{&p.anon}, "anon", "many: bytes of anonymous memory the first process holds")
	fs.BoolVar(&p.anonShared, "anon-shared", false, "many: -anon's memory is MAP_SHARED (shmem, which criu saves as it saves a mapped BO's memfd)")
	fs.IntVar(&p.threads, "threads", 4, "threads: worker threads sharing the drm file (1..64)")
	fs.StringVar(&p.waitFor, "wait-for", "", "many: once set up, wait until this file exists (instead of the step delay) before reading everything back")
	fs.StringVar(&role, "role", "", "internal: child process role")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gpuload -scenario NAME [flags]\n       gpuload -expect NAME [flags]\n       gpuload -list\n")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == "role" {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(stderr, "  -%s %s\n    \t%s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	fail := func(err error) int {
		fmt.Fprintf(stderr, "gpuload: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if fs.NArg() > 0 {
		return fail(usagef("unexpected arguments %q", fs.Args()))
	}
	if list {
		for _, n := range scenarioNames() {
			drv := scenarios[n].drivers
			if drv == "" {
				drv = "any"
			}
			fmt.Fprintf(stdout, "%-12s %-10s %s\n", n, drv, scenarios[n].desc)
		}
		return 0
	}
	if expect != "" {
		if p.scenario != "" && p.scenario != expect {
			return fail(usagef("-expect %s and -scenario %s disagree", expect, p.scenario))
		}
		p.scenario = expect
	}
	if p.scenario == "" {
		fs.Usage()
		return fail(usagef("no scenario: use -scenario NAME, -expect NAME or -list"))
	}
	sc, ok := scenarios[p.scenario]
	if !ok {
		return fail(usagef("unknown scenario %q (scenarios: %s)", p.scenario, strings.Join(scenarioNames(), ", ")))
	}
	if minor > 1<<20 {
		return fail(usagef("-minor %d out of range", minor))
	}
	p.minor = uint32(minor)
	if minor2 > 1<<20 {
		return fail(usagef("-minor2 %d out of range", minor2))
	}
	p.minor2 = uint32(minor2)
	if minor2 == 0 {
		p.minor2 = p.minor + 1
	}
	if p.steps == 0 {
		p.steps = sc.steps
	}
	if !set["step-delay"] {
		p.stepDelay = sc.delay
	}
	if p.iterations == 0 {
		p.iterations = sc.iterations
		if p.iterations == 0 {
			p.iterations = defaultIterations
		}
	}
	if err := p.validate(); err != nil {
		return fail(err)
	}

	if role != "" {
		fn, ok := sc.roles[role]
		if !ok {
			return fail(usagef("scenario %s has no role %q", sc.name, role))
		}
		// Started as /proc/self/exe, the child's comm would be "exe".
		_ = os.WriteFile("/proc/self/comm", []byte("gpuload"), 0)
		r := &runner{p: &p, sc: sc, role: role, stderr: stderr}
		if err := fn(r, childPeer()); err != nil {
			return fail(fmt.Errorf("scenario %s: %s: %w", sc.name, role, err))
		}
		return 0
	}

	var out []byte
	if expect != "" {
		var err error
		if out, err = sc.expect(&p, newCPUExec()); err != nil {
			return fail(fmt.Errorf("scenario %s: expect: %w", sc.name, err))
		}
		fmt.Fprintln(stdout, resultLine(sc.name, out))
		return 0
	}

	r := &runner{p: &p, sc: sc, stderr: stderr}
	if p.progress != "" {
		// Start the file afresh so a harness never sees a previous run's
		// lines.
		if err := os.WriteFile(p.progress, nil, 0o644); err != nil {
			return fail(fmt.Errorf("progress file: %w", err))
		}
	}
	out, err := sc.run(r)
	if err != nil {
		return fail(fmt.Errorf("scenario %s: %w", sc.name, err))
	}
	line := resultLine(sc.name, out)
	if p.result != "" {
		if err := writeAtomic(p.result, []byte(line+"\n")); err != nil {
			return fail(fmt.Errorf("scenario %s: result file: %w", sc.name, err))
		}
	}
	fmt.Fprintln(stdout, line)
	r.progressLine("done")
	return 0
}

func (p *params) validate() error {
	if p.steps < 1 {
		return usagef("-steps %d: need at least 1", p.steps)
	}
	if p.steps > 1<<20 {
		return usagef("-steps %d: too many", p.steps)
	}
	if p.stepDelay < 0 {
		return usagef("-step-delay %v is negative", p.stepDelay)
	}
	if p.size < minSize || p.size%4096 != 0 || p.size > kernelsim.MaxBOSize {
		return usagef("-size %d: need a multiple of 4096 from 16K to 64G", p.size)
	}
	if p.iterations < 1 || p.iterations > gpu.MaxIterations {
		return usagef("-iterations %d: need 1..%d", p.iterations, uint64(gpu.MaxIterations))
	}
	if p.stuckFor < 0 {
		return usagef("-stuck-for %v is negative", p.stuckFor)
	}
	switch p.scenario {
	case "many":
		return p.validateMany()
	case "threads":
		if p.threads < 1 || p.threads > 64 {
			return usagef("-threads %d: need 1..64", p.threads)
		}
	}
	return nil
}

// validateMany checks the many scenario's own flags.
func (p *params) validateMany() error {
	if p.bos < 0 || p.bos > 1<<24 {
		return usagef("-bos %d: need 0..%d", p.bos, 1<<24)
	}
	if p.procs < 1 || p.procs > 64 {
		return usagef("-procs %d: need 1..64", p.procs)
	}
	if len(p.boSizes) == 0 {
		return usagef("-bo-sizes: need at least one size")
	}
	for _, n := range p.boSizes {
		if n == 0 || n%4096 != 0 || n > kernelsim.MaxBOSize {
			return usagef("-bo-sizes: %d is not a multiple of 4096 from 4K to %dG", n, uint64(kernelsim.MaxBOSize)>>30)
		}
	}
	if p.fill%4096 != 0 {
		return usagef("-fill %d: need a multiple of 4096", p.fill)
	}
	if p.shareEvery < 0 {
		return usagef("-share-every %d is negative", p.shareEvery)
	}
	if p.anon%4096 != 0 || p.anon > 1<<40 {
		return usagef("-anon %d: need a multiple of 4096 up to 1T", p.anon)
	}
	return nil
}

// childArgs are the flags that give a child process the same parameters.
func (p *params) childArgs(role string) []string {
	return []string{
		"-role", role,
		"-scenario", p.scenario,
		"-runtime-dir", p.runtimeDir,
		"-minor", strconv.FormatUint(uint64(p.minor), 10),
		"-minor2", strconv.FormatUint(uint64(p.minor2), 10),
		"-steps", strconv.Itoa(p.steps),
		"-step-delay", p.stepDelay.String(),
		"-size", strconv.FormatUint(p.size, 10),
		"-seed", strconv.FormatUint(p.seed, 10),
		"-iterations", strconv.FormatUint(p.iterations, 10),
		"-stuck-for", p.stuckFor.String(),
		"-bos", strconv.Itoa(p.bos),
		"-procs", strconv.Itoa(p.procs),
		"-bo-sizes", sizesFlag{&p.boSizes}.String(),
		"-share-every", strconv.Itoa(p.shareEvery),
		"-threads", strconv.Itoa(p.threads),
		"-map=" + strconv.FormatBool(p.mapBOs),
		"-fill", strconv.FormatUint(p.fill, 10),
	}
}

func resultLine(name string, out []byte) string {
	sum := sha256.Sum256(out)
	return fmt.Sprintf("result %s %s", name, hex.EncodeToString(sum[:]))
}

// writeAtomic writes data to path through a temporary file in the same
// directory and a rename, so a reader sees all of it or nothing.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
