package kernelsim_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// floodConns is how many idle connections the flood test opens:
// KSIM_IDLE_CONNS, 20,000 by default.
func floodConns(t *testing.T) int {
	if v := os.Getenv("KSIM_IDLE_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("KSIM_IDLE_CONNS=%q: want a positive number", v)
		}
		return n
	}
	return 20000
}

type result struct {
	opened, refused int
	msg, bos        string
}

// floodBlocked is how many of the flood's connections wait in a blocking
// ioctl (a syncobj wait for a submit that never comes).
const floodBlocked = 2000

// maxDaemonThreads bounds kernelsimd's OS threads whatever the number of
// clients: its Ps, the runtime's helpers, a few in syscalls.
const maxDaemonThreads = 64

// An unprivileged user opens a flood of connections and leaves them idle,
// or waiting in the kernel: kernelsimd serves as many as that user's limit
// allows, refuses the rest with a reason, keeps its thread count bounded,
// and root's clients keep working; the user's BO allocations over its
// limit are refused too. When the user's processes exit, every wait ends
// and everything is released.
func TestIdleConnectionFlood(t *testing.T) {
	n := floodConns(t)
	// The daemon holds a descriptor per connection; let the user have as
	// many connections as its descriptors allow after the reserve (all of
	// them where RLIMIT_NOFILE is large enough), and try more than that.
	var rl unix.Rlimit
	ok(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &rl))
	const reserve = 1024
	limit := min(n, int(min(rl.Max, 1<<20))-reserve-256)
	tries := max(n, limit+1000)
	logs := &syncBuffer{}
	env := ksimtest.StartDaemonWith(t, kernelsimd(t), ksimtest.DaemonOptions{Log: logs},
		"-uid-max-conns", strconv.Itoa(limit), "-uid-max-bo-memory", "1M", "-reserved-fds", strconv.Itoa(reserve))
	ok(t, os.Chmod(env.Dir, 0o755))
	daemon := env.Cmd.Process.Pid
	fdsBefore := fdTable(t, daemon)

	// Clients of nobody, each under its own RLIMIT_NOFILE.
	const perProc = 4000
	procs := (tries + perProc - 1) / perProc
	start := time.Now()
	var clients []*exec.Cmd
	var stdins []io.Closer
	var stdouts []*bufio.Reader
	for i := range procs {
		share := min(perProc, tries-i*perProc)
		cmd := exec.Command(testBinary(t), "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=flood", "KSIM_DIR="+env.Dir, fmt.Sprintf("KSIM_CONNS=%d", share), fmt.Sprintf("KSIM_BO_PROBE=%v", i == 0))
		if i == 0 {
			// Some connections wait in the kernel instead of idling.
			cmd.Env = append(cmd.Env, fmt.Sprintf("KSIM_BLOCKED=%d", min(floodBlocked, share/2)))
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody, Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = &bytes.Buffer{}
		stdin := must(cmd.StdinPipe())
		stdout := must(cmd.StdoutPipe())
		ok(t, cmd.Start())
		clients = append(clients, cmd)
		stdins = append(stdins, stdin)
		stdouts = append(stdouts, bufio.NewReader(stdout))
		t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	}
	// Each client says what it got once it has opened all it could.
	results := make([]result, procs)
	for i, out := range stdouts {
		for results[i].opened+results[i].refused == 0 {
			line, err := out.ReadString('\n')
			if err != nil {
				clients[i].Process.Kill()
				clients[i].Wait()
				t.Fatalf("client %d: %v: %s", i, err, clients[i].Stderr)
			}
			k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch k {
			case "opened":
				fmt.Sscan(v, &results[i].opened, &results[i].refused)
				_, results[i].msg, _ = strings.Cut(v, " msg ")
			case "bos":
				results[i].bos = v
			}
		}
	}
	var opened, refused int
	for i, r := range results {
		opened += r.opened
		refused += r.refused
		if r.refused > 0 && !strings.Contains(r.msg, "kernelsimd refused the connection: uid 65534 has") {
			t.Errorf("client %d's refusal reads %q", i, r.msg)
		}
	}
	t.Logf("%d connections of nobody served, %d refused, in %v", opened, refused, time.Since(start))
	if opened != limit || refused != tries-limit {
		t.Fatalf("%d connections served and %d refused, want %d and %d", opened, refused, limit, tries-limit)
	}
	if !strings.HasPrefix(results[0].bos, "4 refused: GEM_CREATE: uid 65534 holds 1048576 bytes") {
		t.Fatalf("BO allocations of the flooding user: %q", results[0].bos)
	}

	threads := daemonThreads(t, daemon)
	t.Logf("kernelsimd: %d threads, RSS %s with %d connections, %d of them in a blocking wait", threads, daemonRSS(t, daemon), opened, min(floodBlocked, perProc/2))
	if threads > maxDaemonThreads {
		t.Fatalf("kernelsimd runs %d threads for %d connections, want at most %d", threads, opened, maxDaemonThreads)
	}

	// Root is not limited and still served.
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	ok(t, gpuWork(d, 7))
	d.Close()

	refusals := strings.Count(logs.String(), "refused renderD128 connection of pid")
	if most := 20 + int(2*time.Since(start).Seconds()) + 1; refusals < 1 || refusals > most {
		t.Fatalf("%d refusals logged, want 1 to %d (rate-limited)", refusals, most)
	}

	for _, s := range stdins {
		s.Close()
	}
	for i, cmd := range clients {
		if err := cmd.Wait(); err != nil {
			t.Errorf("client %d: %v: %s", i, err, cmd.Stderr)
		}
	}
	fdsBack(t, daemon, fdsBefore)
}

// childFlood is the "flood" role: it opens KSIM_CONNS connections, reports
// how many were served and refused, optionally allocates BOs until
// refused, then keeps the connections idle until its stdin closes.
func childFlood() error {
	var want int
	fmt.Sscan(os.Getenv("KSIM_CONNS"), &want)
	path := kernelsim.RenderNodePath(os.Getenv("KSIM_DIR"), 128)
	var open []*libdrm.Device
	refused, msg := 0, ""
	for range want {
		d, err := libdrm.Open(path)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				return fmt.Errorf("connection %d: %w", len(open)+refused, err)
			}
			if refused == 0 {
				msg = err.Error()
			}
			refused++
			continue
		}
		open = append(open, d)
	}
	if os.Getenv("KSIM_BO_PROBE") == "true" && len(open) > 0 {
		made := 0
		for {
			if _, err := open[0].BOCreate(256<<10, vram, 0, 0); err != nil {
				if !errors.Is(err, syscall.ENOMEM) {
					return err
				}
				fmt.Printf("bos %d refused: %v\n", made, err)
				break
			}
			made++
		}
	}
	// The first KSIM_BLOCKED connections send a wait that blocks in the
	// kernel (raw: no client thread waits for the reply), and are left so.
	var blocked int
	fmt.Sscan(os.Getenv("KSIM_BLOCKED"), &blocked)
	blocked = min(blocked, len(open))
	for _, d := range open[:blocked] {
		s, err := d.SyncobjCreate(false)
		if err != nil {
			return err
		}
		pkt, err := uapi.Marshal(uapi.Header{Op: uapi.OpSyncobjWait, Seq: 1 << 30},
			&uapi.SyncobjWaitRequest{Handles: []uint32{s}, TimeoutNs: -1, WaitAll: true, WaitForSubmit: true})
		if err != nil {
			return err
		}
		if err := uapi.Send(d.FD(), pkt); err != nil {
			return err
		}
	}
	// Every connection is served: the waits were read by the kernel (not
	// left in the socket), the others answer.
	for _, d := range open[:blocked] {
		for {
			outq, err := unix.IoctlGetInt(d.FD(), unix.SIOCOUTQ)
			if err != nil {
				return err
			}
			if outq == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, d := range open[blocked:] {
		if _, err := d.Version(); err != nil {
			return err
		}
	}
	fmt.Printf("opened %d %d msg %s\n", len(open), refused, msg)
	_, err := io.Copy(io.Discard, os.Stdin)
	return err
}

func procStatus(t testing.TB, pid int, field string) string {
	t.Helper()
	data := must(os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return ""
}

func daemonThreads(t testing.TB, pid int) int {
	return must(strconv.Atoi(procStatus(t, pid, "Threads")))
}

func daemonRSS(t testing.TB, pid int) string { return procStatus(t, pid, "VmRSS") }
