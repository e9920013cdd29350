package kernelsim

import (
	"bytes"
	"log"
	"strings"
	"testing"
	"time"
)

func TestRateLog(t *testing.T) {
	var out bytes.Buffer
	r := newRateLog(log.New(&out, "", 0))
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 100 {
		r.Printf("line")
	}
	if n := strings.Count(out.String(), "line\n"); n != logBurst {
		t.Fatalf("%d lines of a flood logged, want the burst of %d", n, logBurst)
	}
	// Half a second later one more line passes, with the count of the
	// ones dropped.
	now = now.Add(500 * time.Millisecond)
	out.Reset()
	r.Printf("line")
	r.Printf("line")
	if want := "80 similar lines suppressed\nline\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
	// After a quiet while the whole burst is available again.
	now = now.Add(time.Minute)
	out.Reset()
	for range logBurst + 5 {
		r.Printf("line")
	}
	if n := strings.Count(out.String(), "line\n"); n != logBurst {
		t.Fatalf("%d lines after a quiet minute, want %d", n, logBurst)
	}
}
