package drmcore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
