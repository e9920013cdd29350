// Command counter is the workload of the non-GPU container tests: it prints
// "count RUN N" every interval, RUN a random id drawn at start and N counting
// up from 0. Both live only in its memory, so a restored counter that goes
// on with the same RUN and the next N proves it resumed from its checkpoint
// rather than starting again.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	interval := flag.Duration("interval", 50*time.Millisecond, "time between two lines")
	flag.Parse()
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
	run := hex.EncodeToString(id[:])
	for n := 0; ; n++ {
		if _, err := fmt.Printf("count %s %d\n", run, n); err != nil {
			os.Exit(1)
		}
		time.Sleep(*interval)
	}
}
