package kernelsim_test

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// BenchmarkNoopRoundTrip measures the round trip of a request that does
// nothing (VERSION) through a render node of a kernelsimd process
// ("node"), against its baseline: a bare SOCK_SEQPACKET ping-pong of
// packets of the same sizes with a child process that only echoes
// ("bare"). The two are measured in interleaved batches in the same run;
// ratio is the median over batches of node/bare (issue 8's target: at
// most 1.5).
func BenchmarkNoopRoundTrip(b *testing.B) {
	env := ksimtest.StartDaemon(b, kernelsimd(b))
	d := env.Open(b, 128)
	v := must(d.Version())
	reqPkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 1}, &uapi.VersionRequest{}))
	replyPkt := must(uapi.Marshal(uapi.Header{Op: uapi.OpVersion, Seq: 1}, v))
	ping := startEcho(b, len(replyPkt))
	buf := make([]byte, uapi.MaxMessage)
	bare := func() {
		if err := uapi.Send(ping, reqPkt); err != nil {
			b.Fatal(err)
		}
		if n, _, err := uapi.Recv(ping, buf, 0); err != nil || n != len(replyPkt) {
			b.Fatalf("echo: %d bytes, %v", n, err)
		}
	}
	node := func() {
		if _, err := d.Version(); err != nil {
			b.Fatal(err)
		}
	}
	interleave(b, 1000, 200, "node", node, "bare", bare)
}

// startEcho starts a child process that answers every packet on a
// SOCK_SEQPACKET socketpair with a packet of replySize bytes, and returns
// the parent's end.
func startEcho(b *testing.B, replySize int) int {
	fds := must(unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0))
	child := os.NewFile(uintptr(fds[1]), "echo")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=echo", fmt.Sprintf("KSIM_ECHO_SIZE=%d", replySize))
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	ok(b, cmd.Start())
	child.Close()
	b.Cleanup(func() {
		unix.Close(fds[0])
		cmd.Wait()
	})
	return fds[0]
}

// childEcho answers each packet on fd 3 with KSIM_ECHO_SIZE bytes until
// the parent closes it.
func childEcho() error {
	var size int
	if _, err := fmt.Sscan(os.Getenv("KSIM_ECHO_SIZE"), &size); err != nil {
		return fmt.Errorf("KSIM_ECHO_SIZE: %w", err)
	}
	reply := make([]byte, size)
	buf := make([]byte, uapi.MaxMessage)
	for {
		n, _, err := uapi.Recv(3, buf, 0)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := uapi.Send(3, reply); err != nil {
			return err
		}
	}
}
