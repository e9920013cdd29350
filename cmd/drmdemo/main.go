// Command drmdemo shows the whole product in one run: it starts
// kernelsimd, runs a multi-process gpuload scenario that shares a dma-buf,
// runs a long-running GPU job and reads and writes BO memory through CPU
// mappings (one BO kept by its mapping alone), checkpoints it mid-run
// with real criu and the DRM plugin, kills it, restores it, waits for it
// to finish and checks its result against the one an uninterrupted run
// gives. It prints what was checkpointed and exits non-zero on any
// mismatch. `make demo` runs it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/internal/crrun"
	"drmcr/internal/units"
	"drmcr/subplugins"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "drmdemo: FAILED:", err)
		os.Exit(1)
	}
}

type demo struct {
	bin      string
	criu     crrun.Criu
	scenario string
	step     int
	keep     string
	start    time.Time
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func run() error {
	d := &demo{start: time.Now()}
	flag.StringVar(&d.criu.Bin, "criu", "build/bin/criu", "criu binary or wrapper (make criu)")
	flag.StringVar(&d.criu.LibDir, "lib", "build/lib/criu", "directory holding drm_plugin.so")
	flag.StringVar(&d.bin, "bin", "build/bin", "directory holding kernelsimd, gpuload and drmcrit")
	flag.StringVar(&d.scenario, "scenario", "mapped", "gpuload scenario to checkpoint")
	flag.IntVar(&d.step, "step", 2, "checkpoint once the workload reports this step")
	flag.StringVar(&d.keep, "keep", "", "keep the checkpoint in this directory (default: a temporary one, removed)")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("criu needs root: run as root (sudo make demo)")
	}
	for _, p := range []*string{&d.criu.Bin, &d.criu.LibDir, &d.bin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs // criu changes into the images directory
	}
	for _, f := range []string{d.criu.Bin, filepath.Join(d.criu.LibDir, "drm_plugin.so"), d.tool("kernelsimd"), d.tool("gpuload"), d.tool("drmcrit")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s missing (make build criu): %w", f, err)
		}
	}
	return d.run()
}

func (d *demo) tool(name string) string { return filepath.Join(d.bin, name) }

func (d *demo) run() error {
	d.say("starting kernelsimd (one simulated amdgpu)")
	daemon, err := crrun.StartDaemon(d.tool("kernelsimd"))
	if err != nil {
		return err
	}
	defer daemon.Stop()
	d.criu.Env = []string{"KERNELSIM_RUNTIME_DIR=" + daemon.Dir}

	work, err := os.MkdirTemp("", "drmdemo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	imgDir := d.keep
	if imgDir == "" {
		imgDir = filepath.Join(work, "checkpoint")
	} else if err := clearCheckpoint(imgDir); err != nil {
		return err
	}
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return err
	}

	w, err := crrun.StartWorkload(d.tool("gpuload"), daemon, work, d.scenario)
	if err != nil {
		return err
	}
	defer w.Kill()
	want, err := w.Expected()
	if err != nil {
		return err
	}
	d.say("started gpuload -scenario %s (pid %d); an uninterrupted run gives:\n           %s", d.scenario, w.PID, want)
	if err := w.WaitStep(d.step, time.Minute); err != nil {
		return fmt.Errorf("%w\n%s", err, w.Log())
	}
	pids := w.Tree()
	d.say("workload at step %d with %d processes %v: checkpointing with criu", w.Step(), len(pids), pids)

	t0 := time.Now()
	log, err := d.criu.Run(imgDir, "dump", "-t", strconv.Itoa(w.PID))
	dumpTime := time.Since(t0)
	if err != nil {
		return fmt.Errorf("%w\nplugin log:\n%s", err, crrun.PluginLines(log))
	}
	d.say("criu dump done in %v; criu killed the workload", dumpTime.Round(time.Millisecond))
	if err := crrun.WaitGone(pids, 30*time.Second); err != nil {
		return err
	}
	if err := d.summarise(imgDir); err != nil {
		return err
	}

	d.say("restoring with criu")
	t0 = time.Now()
	log, err = d.criu.Run(imgDir, "restore", "-d")
	restoreTime := time.Since(t0)
	if err != nil {
		return fmt.Errorf("%w\nplugin log:\n%s", err, crrun.PluginLines(log))
	}
	d.say("criu restore done in %v; waiting for the workload to finish", restoreTime.Round(time.Millisecond))
	got, err := w.WaitResult(5 * time.Minute)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, w.Log())
	}
	d.say("restored run finished:\n           %s", got)
	if got != want {
		return fmt.Errorf("result mismatch:\n  restored run      %s\n  uninterrupted run %s", got, want)
	}
	fmt.Printf("\nOK: the restored run's result is bit-identical to an uninterrupted run's.\n")
	fmt.Printf("   dump %v, restore %v", dumpTime.Round(time.Millisecond), restoreTime.Round(time.Millisecond))
	if d.keep != "" {
		fmt.Printf(", checkpoint kept in %s\n", imgDir)
	} else {
		fmt.Printf(" (pass -keep DIR to keep the checkpoint)\n")
	}
	return nil
}

// summarise prints what the checkpoint holds and drmcrit's tree of it.
func (d *demo) summarise(imgDir string) error {
	dir, err := images.OpenDir(imgDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	imgs, err := drmcore.ReadCheckpoint(dir, subplugins.All())
	if err != nil {
		return err
	}
	if imgs == nil {
		return errors.New("the checkpoint has no GPU state")
	}
	if err := imgs.Err(); err != nil {
		return err
	}
	var contents, mappedBytes uint64
	shared, mapped := 0, 0
	for _, b := range imgs.Index.Bos {
		if b.CpuMapped {
			mapped++
			mappedBytes += b.State.Size
		} else {
			contents += b.State.Size
		}
		if b.State.DmabufInode != 0 {
			shared++
		}
	}
	var total, criuBytes int64
	filepath.WalkDir(imgDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		info, _ := e.Info()
		total += info.Size()
		if !strings.HasPrefix(e.Name(), "drm-") {
			criuBytes += info.Size()
		}
		return nil
	})
	fmt.Printf("\nCheckpoint in %s (%s in all; %s of it criu's own images):\n", imgDir, units.Format(uint64(total)), units.Format(uint64(criuBytes)))
	for _, p := range imgs.Inventory.Processes {
		fmt.Printf("  process %d (%s): %d kernelsim file(s), %d CPU mapping(s) of BOs\n", p.Pid, p.Comm, len(p.Inodes), len(p.Mappings))
	}
	fmt.Printf("  %d drm file(s), %d dma-buf(s), %d BO(s) (%d shared through dma-bufs), %s of BO contents saved once each by the plugin\n",
		len(imgs.FileList), len(imgs.DmaBufList), len(imgs.Index.Bos), shared, units.Format(contents))
	if mapped > 0 {
		fmt.Printf("  %d BO(s) mapped by the processes (%s): their memory saved once by criu, as the mappings' memory, with checksums in the plugin's index\n",
			mapped, units.Format(mappedBytes))
	}
	preempted := 0
	for _, f := range imgs.FileList {
		if priv, err := decodeJobs(f); err == nil {
			preempted += priv
		}
	}
	fmt.Printf("  %d long-running job(s) preempted mid-run, to resume from their progress\n\n", preempted)
	out, err := exec.Command(d.tool("drmcrit"), "show", imgDir).CombinedOutput()
	fmt.Printf("drmcrit show:\n%s\n", indent(string(out)))
	if err != nil {
		return fmt.Errorf("drmcrit show: %w", err)
	}
	if _, err := exec.LookPath("dot"); err == nil && d.keep != "" {
		svg := filepath.Join(filepath.Dir(imgDir), "graph.svg")
		if out, err := exec.Command(d.tool("drmcrit"), "graph", "-o", svg, imgDir).CombinedOutput(); err != nil {
			return fmt.Errorf("drmcrit graph: %v: %s", err, out)
		}
		fmt.Printf("sharing graph: %s\n\n", svg)
	}
	return nil
}

// clearCheckpoint empties a kept checkpoint directory of an earlier run,
// refusing to touch a directory that holds anything else.
func clearCheckpoint(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
		return fmt.Errorf("%s is not empty and holds no earlier checkpoint: choose another -keep directory", dir)
	}
	return os.RemoveAll(dir)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// decodeJobs counts the preempted jobs in a drm file's driver blob.
func decodeJobs(f *images.DrmFile) (int, error) {
	var priv *drmcore.DriverState
	for _, d := range subplugins.All().Drivers {
		if d.Driver() == f.Driver {
			var err error
			if priv, err = d.State(f); err != nil {
				return 0, err
			}
		}
	}
	if priv == nil {
		return 0, fmt.Errorf("driver %s", f.Driver)
	}
	n := 0
	for _, c := range priv.Contexts {
		n += len(c.Jobs)
	}
	return n, nil
}
