// Command kernelsimctl talks to a running kernelsimd over its control
// socket. "kernelsimctl debug" lists every device, drm file, BO, handle,
// dma-buf, context, job and fence with its state, like
// /sys/kernel/debug/dri and /sys/kernel/debug/dma_buf/bufinfo.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kernelsimctl:", err)
		os.Exit(1)
	}
}

func usage() error {
	return fmt.Errorf("usage: kernelsimctl [-runtime-dir DIR] debug [-json]")
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("kernelsimctl", flag.ContinueOnError)
	dir := fs.String("runtime-dir", kernelsim.RuntimeDirFromEnv(), "kernelsimd's runtime directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.Arg(0) != "debug" {
		return usage()
	}
	dfs := flag.NewFlagSet("debug", flag.ContinueOnError)
	asJSON := dfs.Bool("json", false, "print the raw JSON snapshot")
	if err := dfs.Parse(fs.Args()[1:]); err != nil {
		return err
	}
	c, err := ctl.Dial(*dir)
	if err != nil {
		return err
	}
	defer c.Close()
	if *asJSON {
		js, err := c.DebugJSON()
		if err != nil {
			return err
		}
		fmt.Fprintln(out, js)
		return nil
	}
	st, err := c.Debug()
	if err != nil {
		return err
	}
	printDebug(out, st)
	return nil
}

func printDebug(w io.Writer, st *kernelsim.DebugState) {
	for _, d := range st.Devices {
		fmt.Fprintf(w, "renderD%d %s gpu %#x sched=%s vram %d/%d gtt %d/%d\n", d.Minor, d.Driver, d.GPUID, d.Sched, d.VRAMUsed, d.VRAMSize, d.GTTUsed, d.GTTSize)
		for _, f := range st.Files {
			if f.Minor != d.Minor {
				continue
			}
			fmt.Fprintf(w, "  file %d pid %d client-inode %d paused=%v\n", f.ID, f.PID, f.ClientIno, f.Paused)
			for _, h := range f.Handles {
				prime := ""
				if h.Prime {
					prime = " prime"
				}
				fmt.Fprintf(w, "    handle %d -> bo %d%s\n", h.Handle, h.BO, prime)
			}
			for _, m := range f.Mappings {
				fmt.Fprintf(w, "    va %#x+%#x -> handle %d offset %#x\n", m.VA, m.Size, m.Handle, m.BOOffset)
			}
			for _, c := range f.Contexts {
				fmt.Fprintf(w, "    ctx %d submitted %d completed %d queued %d guilty=%v paused=%v\n", c.ID, c.Submitted, c.Completed, c.Queued, c.Guilty, c.Paused)
			}
			if len(f.Syncobjs) > 0 {
				fmt.Fprintf(w, "    syncobjs %v\n", f.Syncobjs)
			}
		}
	}
	fmt.Fprintf(w, "bos:\n")
	for _, b := range st.BOs {
		fmt.Fprintf(w, "  bo %d renderD%d %d bytes %s flags %#x refs %d", b.ID, b.Minor, b.Size, b.Domain, b.Flags, b.Refs)
		if b.DmaBuf != 0 {
			fmt.Fprintf(w, " dma-buf inode %d", b.DmaBuf)
		}
		fmt.Fprintln(w)
		for _, r := range b.Resv {
			fmt.Fprintf(w, "    resv %+v\n", r)
		}
	}
	fmt.Fprintf(w, "dma-bufs:\n")
	for _, d := range st.DmaBufs {
		fmt.Fprintf(w, "  inode %d bo %d prime-refs %d\n", d.Inode, d.BO, d.PrimeRefs)
	}
	fmt.Fprintf(w, "jobs: %d live\n", st.LiveJobs)
	for _, j := range st.Jobs {
		lr := ""
		if j.LongRunning {
			lr = " long-running"
		}
		fmt.Fprintf(w, "  job %d file %d ctx %d %s%s, %d command(s) on bos %v, finished fence %d\n", j.ID, j.File, j.Context, j.State, lr, j.Commands, j.BOs, j.Fence)
	}
	fmt.Fprintf(w, "fences: %d live, restore sessions: %d\n", len(st.Fences), st.Sessions)
	for _, f := range st.Fences {
		fmt.Fprintf(w, "  fence %+v\n", f)
	}
}
