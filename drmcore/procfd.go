package drmcore

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
)

// socketInodes returns the inodes of the sockets in a task's fd table, as
// /proc/PID/fd shows them ("socket:[12345]"), without touching the
// sockets themselves.
func socketInodes(pid int) ([]uint64, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	seen := map[uint64]bool{}
	var out []uint64
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		rest, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
		if err != nil || seen[ino] {
			continue
		}
		seen[ino] = true
		out = append(out, ino)
	}
	return out, nil
}

// comm returns a task's command name, or "" if it is gone.
func comm(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// nsPid returns the pid of task pid (as criu, in the host's pid namespace,
// names it) inside the task's own pid namespace: the pid criu's images
// record (pstree.img), and so the one the plugin's images record too.
func nsPid(pid int) (int32, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "NSpid:")
		if !ok {
			continue
		}
		ids := strings.Fields(rest)
		if len(ids) == 0 {
			break
		}
		n, err := strconv.ParseInt(ids[len(ids)-1], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("pid %d: NSpid %q: %w", pid, rest, err)
		}
		return int32(n), nil
	}
	return 0, fmt.Errorf("pid %d: no NSpid in /proc/%d/status", pid, pid)
}

// sameFile reports whether two stats name one file.
func sameFile(a, b *unix.Stat_t) bool { return a.Dev == b.Dev && a.Ino == b.Ino }

// runtimeDirSeenBy says where task pid reaches kernelsimd, whose runtime
// directory the host sees at daemonDir. It returns "" when the task sees
// the host's filesystem (same root and mount namespace as this process):
// a restore then uses the daemon's directory of its own time. Otherwise
// (a container) it returns the path inside the task's root at which the
// daemon's runtime directory is mounted, found among the directory the
// task was told (KERNELSIM_RUNTIME_DIR in its environment), the default
// and the host's path; the restored task reconnects there.
func runtimeDirSeenBy(pid int, daemonDir string) (string, error) {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	var root, self unix.Stat_t
	if err := unix.Stat(proc+"/root", &root); err != nil {
		return "", fmt.Errorf("pid %d: root: %w", pid, err)
	}
	if err := unix.Stat("/proc/self/root", &self); err != nil {
		return "", fmt.Errorf("own root: %w", err)
	}
	mnt, err := os.Readlink(proc + "/ns/mnt")
	if err != nil {
		return "", fmt.Errorf("pid %d: mount namespace: %w", pid, err)
	}
	selfMnt, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return "", fmt.Errorf("own mount namespace: %w", err)
	}
	if sameFile(&root, &self) && mnt == selfMnt {
		return "", nil
	}

	var want unix.Stat_t
	if err := unix.Stat(daemonDir, &want); err != nil {
		return "", fmt.Errorf("kernelsimd's runtime dir %s: %w", daemonDir, err)
	}
	rootFD, err := unix.Open(proc+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("pid %d: root: %w", pid, err)
	}
	defer unix.Close(rootFD)
	candidates := []string{envOf(pid, "KERNELSIM_RUNTIME_DIR"), kernelsim.DefaultRuntimeDir, daemonDir}
	var tried []string
	for _, c := range candidates {
		if c == "" || !filepath.IsAbs(c) {
			continue
		}
		c = filepath.Clean(c)
		tried = append(tried, c)
		// Resolve the path as the task would: symlinks stay inside its root.
		fd, err := unix.Openat2(rootFD, c, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err == nil && sameFile(&st, &want) {
			return c, nil
		}
	}
	return "", fmt.Errorf("pid %d (%s) has its own filesystem and kernelsimd's runtime dir %s is not mounted in it at %s: a restored task could not reach kernelsimd (bind-mount the runtime dir into the container)",
		pid, comm(pid), daemonDir, strings.Join(tried, " or "))
}

// envOf returns a variable of a task's initial environment, or "".
func envOf(pid int, name string) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return ""
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(name+"=")); ok {
			return string(v)
		}
	}
	return ""
}
