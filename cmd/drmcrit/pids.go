package main

// Pids. The plugin records pids as criu's hooks gave them to it: the
// inventory's processes and the holder of each drm file and dma-buf, in
// the pid namespace criu runs in. CRIU's images name tasks by the pids of
// pstree.img, which for a task in its own pid namespace (a container) are
// that namespace's. drmcrit prints a recorded pid, or compares it with
// CRIU's, only through shownPid, so that tying the two is done here and
// nowhere else.

// shownPid is the pid drmcrit names the task by that the plugin recorded
// as recorded: the task's pid in CRIU's images. The two are the same
// number for tasks in criu's pid namespace, the only case handled so far.
func (c *checkpoint) shownPid(recorded int32) int32 { return recorded }

// criuProcOf returns the task of CRIU's images that the plugin recorded
// as pid, or nil (also when there are no usable CRIU images).
func (c *checkpoint) criuProcOf(recorded int32) *criuProc {
	if c.criu == nil {
		return nil
	}
	return c.criu.proc(c.shownPid(recorded))
}
