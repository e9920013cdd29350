package containers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"drmcr/internal/crrun"
)

// count is one line of the counter: "count RUN N". RUN is drawn at start
// and N counts up; both live only in the counter's memory.
type count struct {
	run string
	n   int
}

func parseCounts(lines []string) ([]count, error) {
	var cs []count
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		var c count
		if _, err := fmt.Sscanf(l, "count %s %d", &c.run, &c.n); err != nil {
			return nil, fmt.Errorf("not a counter line: %q", l)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// waitCounts polls lines until the last counter line is past n, and
// returns them all.
func waitCounts(t *testing.T, what string, lines func() ([]string, error), n int) []count {
	t.Helper()
	var (
		cs  []count
		err error
	)
	if !crrun.Poll(60*time.Second, func() bool {
		var ls []string
		if ls, err = lines(); err != nil {
			return false
		}
		cs, err = parseCounts(ls)
		return err == nil && len(cs) > 0 && cs[len(cs)-1].n > n
	}) {
		t.Fatalf("%s: the counter did not get past %d (error %v); got %v", what, n, err, tailCounts(cs))
	}
	return cs
}

func tailCounts(cs []count) []count {
	if len(cs) > 5 {
		return cs[len(cs)-5:]
	}
	return cs
}

// lastN is the number of the last line, -1 with none.
func lastN(cs []count) int {
	if len(cs) == 0 {
		return -1
	}
	return cs[len(cs)-1].n
}

// checkResumed checks that post, what a restored counter printed, comes
// from the counter that printed pre, resumed from its checkpoint: the same
// RUN (a counter started again draws a new one), and new lines that go on
// from the last line of pre without a gap (a restore from later state
// would skip lines) and without a jump. Before its first new line post may
// repeat lines pre has: criu restores what was in the stdout pipe, podman
// may keep the log, and a counter checkpointed with --leave-running prints
// again what the original printed after the checkpoint.
func checkResumed(t *testing.T, what string, pre, post []count) {
	t.Helper()
	if len(pre) == 0 {
		t.Fatalf("%s: no counter line before the checkpoint", what)
	}
	last := pre[len(pre)-1]
	fresh := 0
	for i, c := range post {
		if c.run != last.run {
			t.Fatalf("%s: line %d after restore is from run %s, the checkpointed counter is run %s: it started again instead of resuming", what, i, c.run, last.run)
		}
		if fresh == 0 && c.n <= last.n {
			continue
		}
		if want := last.n + 1 + fresh; c.n != want {
			t.Fatalf("%s: after restore the counter printed %d where %d was due", what, c.n, want)
		}
		fresh++
	}
	if fresh == 0 {
		t.Fatalf("%s: the restored counter printed nothing past %d (%d lines)", what, last.n, len(post))
	}
}

// checkContinued checks that a counter left running by a checkpoint went
// on counting: the same run, no jump.
func checkContinued(t *testing.T, what string, cs []count) {
	t.Helper()
	for i := 1; i < len(cs); i++ {
		if cs[i].run != cs[0].run || cs[i].n != cs[i-1].n+1 {
			t.Fatalf("%s: line %d is %+v after %+v", what, i, cs[i], cs[i-1])
		}
	}
}
