package kernelsim

import "context"

// Blocker is how the layer serving a request lets the kernel wait: the
// request's connection is locked against checkpoints while an ioctl runs,
// except inside waits that happen before the ioctl has any effect, so a
// checkpoint taken during such a wait can record the request and replay
// it after restore.
type Blocker interface {
	// Release is called before the wait; cancel ends the wait early, for
	// a caller that is gone. An error (a limit on waiting requests)
	// fails the request instead of waiting.
	Release(cancel context.CancelFunc) error
	// Reacquire is called after it; it may wait for a checkpoint in
	// progress to let go.
	Reacquire()
}

type blockerKey struct{}

// WithBlocker returns a context carrying b for the ioctls run under it.
func WithBlocker(ctx context.Context, b Blocker) context.Context {
	return context.WithValue(ctx, blockerKey{}, b)
}

// blockingWait runs wait at a replayable blocking point.
func blockingWait(ctx context.Context, wait func(context.Context) error) error {
	b, ok := ctx.Value(blockerKey{}).(Blocker)
	if !ok {
		return wait(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := b.Release(cancel); err != nil {
		return err
	}
	defer b.Reacquire()
	return wait(ctx)
}
