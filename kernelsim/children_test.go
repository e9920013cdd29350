package kernelsim_test

import (
	"fmt"
	"os"
)

// runChild runs the client-process role named by KSIM_TEST_CHILD and
// returns the exit code.
func runChild(role string) int {
	switch role {
	default:
		fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
		return 2
	}
}
