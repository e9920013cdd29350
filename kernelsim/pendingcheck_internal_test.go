package kernelsim

import (
	"testing"

	"drmcr/kernelsim/uapi"
)

// TestIoctlMessagesCoverTheIoctlTable: every render-node request but the
// claims can be caught in flight, so the table of their messages has them
// all, and nothing else.
func TestIoctlMessagesCoverTheIoctlTable(t *testing.T) {
	for op := range ioctls {
		_, ok := ioctlMessages[op]
		claim := op == uapi.OpClaimFile || op == uapi.OpClaimDmaBuf
		if ok == claim {
			t.Errorf("%v: in the table of in-flight messages: %v", op, ok)
		}
	}
	for op := range ioctlMessages {
		if _, ok := ioctls[op]; !ok {
			t.Errorf("%v has messages but no handler", op)
		}
	}
}
