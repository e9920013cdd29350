package e2e

import (
	"os"
	"path/filepath"
	"testing"

	criulib "github.com/checkpoint-restore/go-criu/v7"
	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"
)

// TestGoCriu checkpoints and restores through go-criu (criu swrk), which
// finds the plugin through CRIU_LIBS_DIR in criu's environment, as the
// README tells go-criu users.
func TestGoCriu(t *testing.T) {
	d := startDaemon(t)
	t.Setenv("CRIU_LIBS_DIR", criu.LibDir)
	t.Setenv("KERNELSIM_RUNTIME_DIR", d.Dir)
	w := startWorkload(t, d, "prodcons")
	want := expected(t, w)
	waitStep(t, w, 2)
	pids := w.Tree()

	img := imagesDir(t)
	dir, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	c := criulib.MakeCriu()
	c.SetCriuPath(criu.Bin)
	opts := &rpc.CriuOpts{
		ImagesDirFd: proto.Int32(int32(dir.Fd())),
		Pid:         proto.Int32(int32(w.PID)),
		LogLevel:    proto.Int32(4),
		LogFile:     proto.String("dump.log"),
	}
	if err := c.Dump(opts, nil); err != nil {
		log, _ := os.ReadFile(filepath.Join(img, "dump.log"))
		t.Fatalf("go-criu dump: %v\n%s", err, pluginLines(string(log)))
	}
	waitGone(t, pids)
	opts.Pid = nil
	opts.LogFile = proto.String("restore.log")
	if err := c.Restore(opts, nil); err != nil {
		log, _ := os.ReadFile(filepath.Join(img, "restore.log"))
		t.Fatalf("go-criu restore: %v\n%s", err, lastLines(string(log), 40))
	}
	log, _ := os.ReadFile(filepath.Join(img, "restore.log"))
	t.Logf("restore:\n%s", pluginLines(string(log)))
	if got := result(t, w); got != want {
		t.Fatalf("restored through go-criu: got %s, want %s", got, want)
	}
	waitIdle(t, d)
}
