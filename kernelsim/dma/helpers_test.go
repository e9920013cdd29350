package dma

import "testing"

// checkNoLeaks records the live-fence baseline and verifies at test end
// that every fence made by the test was Put back and no refcount misuse
// happened.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	fences, syncobjs, refErrs := LiveFences(), LiveSyncobjs(), RefErrors()
	t.Cleanup(func() {
		if got := LiveFences(); got != fences {
			t.Errorf("live fences = %d, want baseline %d: %+v", got, fences, Fences())
		}
		if got := LiveSyncobjs(); got != syncobjs {
			t.Errorf("live syncobjs = %d, want baseline %d", got, syncobjs)
		}
		if got := RefErrors(); got != refErrs {
			t.Errorf("ref errors went from %d to %d", refErrs, got)
		}
	})
}
