// Command kernelsimctl talks to a running kernelsimd over its control
// socket (under $KERNELSIM_RUNTIME_DIR, default /run/kernelsim).
// "kernelsimctl debug" lists every device, drm file, BO, handle, dma-buf,
// context, job and fence with its state, like /sys/kernel/debug/dri and
// /sys/kernel/debug/dma_buf/bufinfo.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/dma"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: kernelsimctl [-runtime-dir DIR] debug [-json]

kernelsimctl talks to kernelsimd over DIR/control, which only root and the
daemon's user may use.

  -runtime-dir DIR  kernelsimd's runtime directory: $KERNELSIM_RUNTIME_DIR
                    when set, else /run/kernelsim

commands:
  debug             every device, drm file (with its pid), handle, mapping,
                    context, BO (with its reservation fences), dma-buf, job
                    and fence
  debug -json       the same snapshot as JSON; every list is present, []
                    when empty

exit status: 0 success, 1 errors, 2 usage
`

// run is kernelsimctl with its arguments and output; it returns the exit
// status.
func run(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("kernelsimctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("runtime-dir", kernelsim.RuntimeDirFromEnv(), "")
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(errOut, "kernelsimctl: "+format+"\n%s", append(a, usage)...)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usage)
			return 0
		}
		return usageErr("%v", err)
	}
	if fs.NArg() < 1 {
		return usageErr("no command")
	}
	if fs.Arg(0) != "debug" {
		return usageErr("unknown command %q", fs.Arg(0))
	}
	dfs := flag.NewFlagSet("debug", flag.ContinueOnError)
	dfs.SetOutput(io.Discard)
	asJSON := dfs.Bool("json", false, "")
	if err := dfs.Parse(fs.Args()[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usage)
			return 0
		}
		return usageErr("debug: %v", err)
	}
	if dfs.NArg() > 0 {
		return usageErr("debug: unexpected arguments %q", dfs.Args())
	}
	if err := debug(*dir, *asJSON, out); err != nil {
		fmt.Fprintln(errOut, "kernelsimctl:", err)
		return 1
	}
	return 0
}

func debug(dir string, asJSON bool, out io.Writer) error {
	c, err := ctl.Dial(dir)
	if err != nil {
		return err
	}
	defer c.Close()
	if asJSON {
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
			fmt.Fprintf(w, "  file %d pid %d uid %d client-inode %d paused=%v waiting=%d", f.ID, f.PID, f.UID, f.ClientIno, f.Paused, f.Waiting)
			if len(f.Channels) > 0 {
				fmt.Fprintf(w, " channels %v", f.Channels)
			}
			fmt.Fprintln(w)
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
			fmt.Fprintf(w, "    resv %s: fence %d (%s)\n", r.Usage, r.Fence.ID, fenceState(r.Fence))
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
	if len(st.Users) > 0 {
		fmt.Fprintf(w, "limited users:\n")
		for _, u := range st.Users {
			fmt.Fprintf(w, "  uid %d: %d connections, %d dma-bufs, %d requests waiting, %d bytes of BOs\n", u.UID, u.Conns, u.DmaBufs, u.Waits, u.BOMemory)
		}
	}
	fmt.Fprintf(w, "fences: %d live, restore sessions: %d\n", len(st.Fences), st.Sessions)
	for _, f := range st.Fences {
		fmt.Fprintf(w, "  fence %d context %d seqno %d %s, refs %d\n", f.ID, f.Context, f.Seqno, fenceState(f), f.Refcount)
	}
}

// fenceState is a fence's timeline and whether (and how) it signalled.
func fenceState(f dma.FenceInfo) string {
	s := f.Timeline + ": pending"
	if f.Signaled {
		s = fmt.Sprintf("%s: signaled at %v", f.Timeline, f.SignaledAt)
	}
	if f.Error != "" {
		s += ", error " + f.Error
	}
	return s
}
