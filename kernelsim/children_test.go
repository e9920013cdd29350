package kernelsim_test

import (
	"fmt"
	"os"
)

// runChild runs the client-process role named by KSIM_TEST_CHILD and
// returns the exit code.
func runChild(role string) int {
	var err error
	switch role {
	case "prime-import":
		err = childPrimeImport()
	case "storm":
		err = childStorm()
	case "echo":
		err = childEcho()
	case "ns-client":
		err = childNSClient()
	case "ctl-identify":
		err = childCtlIdentify()
	case "flood":
		err = childFlood()
	case "shared-fd":
		err = childSharedFD()
	case "map-hold":
		err = childMapHold()
	default:
		fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
		return 1
	}
	return 0
}
