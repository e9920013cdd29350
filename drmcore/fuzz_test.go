package drmcore_test

import (
	"bytes"
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"drmcr/drmcore/drmcoretest"
	"drmcr/images"
	"drmcr/internal/fuzzing"
	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// seedCheckpoints are real checkpoints (internal/fuzzing writes them):
// FuzzRestore damages one image of one of them.
func seedCheckpoints(t testing.TB) []string {
	dirs, err := filepath.Glob(filepath.Join("testdata", "checkpoints", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no seed checkpoints in testdata/checkpoints (%v): see internal/fuzzing", err)
	}
	return dirs
}

func imagesOf(t testing.TB, dir string) []string {
	names, err := filepath.Glob(filepath.Join(dir, "drm-*.img"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no images in %s (%v)", dir, err)
	}
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	return names
}

// Ways FuzzRestore damages an image ((how&0x7f)%damageKinds); how&0x80
// reseals a replaced or edited image, as `drmcrit encode --reseal` does
// for an image edited on purpose, so that the checks past the seals see
// the damage.
const (
	damageReplace = iota // its bytes are the fuzzed ones
	damageRemove         // it is gone
	damageDir            // a directory stands in its place
	damageSymlink        // a symlink to another image stands in its place
	damageEdit           // the fuzzed bytes are structured edits of its message (and driver blob)
	damageKinds
)

// TestSeedCheckpointsRestore: the committed seed checkpoints still
// restore with this code, so the fuzz targets start from real,
// restorable state (regenerate them with internal/fuzzing if not).
func TestSeedCheckpointsRestore(t *testing.T) {
	env := ksimtest.Start(t, restoreFuzzConfig())
	base := env.Kernel.Counts()
	for _, dir := range seedCheckpoints(t) {
		fds, err := drmcoretest.Restore(t, env.Dir, copyImages(t, dir), drmcoretest.Concurrently, false)
		if err != nil {
			t.Fatalf("seed checkpoint %s: %v", dir, err)
		}
		drmcoretest.CloseAll(fds)
		waitCounts(t, env, base)
	}
}

func restoreFuzzConfig() kernelsim.Config {
	dev := kernelsim.DefaultDevice()
	dev.VRAMSize, dev.GTTSize = 64<<20, 64<<20
	dev.IterTime = time.Microsecond
	dev.JobTimeout = 100 * time.Millisecond
	return kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}, Log: log.New(io.Discard, "", 0)}
}

// FuzzRestore: the restore hooks over a real checkpoint with one image
// damaged (any bytes, removed, a directory or a symlink in its place, or
// structured edits of any field of its message or driver blob)
// fail or succeed, never panic or hang; the intact checkpoint restores;
// and whatever the restore made is gone once it is over and its files are
// closed. The claims come in an order the input picks.
func FuzzRestore(f *testing.F) {
	dirs := seedCheckpoints(f)
	for i, dir := range dirs {
		for j, name := range imagesOf(f, dir) {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(byte(i), byte(j), byte(damageReplace), b)
			if len(b) > 8 {
				flipped := bytes.Clone(b)
				flipped[len(b)/2] ^= 0x20
				f.Add(byte(i), byte(j), byte(damageReplace), flipped)
				f.Add(byte(i), byte(j), byte(damageReplace|0x80), flipped)
			}
		}
		f.Add(byte(i), byte(0), byte(damageRemove), []byte{})
		f.Add(byte(i), byte(1), byte(damageDir), []byte{})
		f.Add(byte(i), byte(2), byte(damageSymlink), []byte{})
		f.Add(byte(i), byte(3), byte(damageEdit), []byte{0, 0, 7, 0, 0, 0, 0, 0, 0, 0})
		f.Add(byte(i), byte(3), byte(damageEdit|0x80), []byte{0, 0, 7, 0, 0, 0, 0, 0, 0, 0})
	}
	env := ksimtest.Start(f, restoreFuzzConfig())
	base := env.Kernel.Counts()
	f.Fuzz(func(t *testing.T, ckpt, which, how byte, data []byte) {
		src := dirs[int(ckpt)%len(dirs)]
		names := imagesOf(t, src)
		name := names[int(which)%len(names)]
		dir := copyImages(t, src)
		path := filepath.Join(dir, name)
		intact := false
		kind := (how & 0x7f) % damageKinds
		switch kind {
		case damageReplace:
			orig, err := os.ReadFile(path)
			ok(t, err)
			intact = bytes.Equal(orig, data)
			ok(t, os.WriteFile(path, data, 0o600))
		case damageRemove:
			ok(t, os.Remove(path))
		case damageDir:
			ok(t, os.Remove(path))
			ok(t, os.Mkdir(path, 0o700))
		case damageSymlink:
			ok(t, os.Remove(path))
			ok(t, os.Symlink(names[(int(which)+1)%len(names)], path))
		case damageEdit:
			orig, err := os.ReadFile(path)
			ok(t, err)
			m, err := images.NewMessage(images.KindOf(name))
			if err != nil || proto.Unmarshal(orig, m) != nil {
				return // the index and pages files are no single message
			}
			msgs := []proto.Message{m}
			blob := &uapi.DriverPrivate{}
			f, isFile := m.(*images.DrmFile)
			if isFile && proto.Unmarshal(f.GetState().GetDriverPrivate(), blob) == nil {
				msgs = append(msgs, blob)
			}
			fuzzing.Edit(data, 8, msgs...)
			if isFile && len(msgs) == 2 && f.State != nil {
				f.State.DriverPrivate, err = proto.Marshal(blob)
				ok(t, err)
			}
			b, err := proto.Marshal(m)
			ok(t, err)
			intact = bytes.Equal(b, orig)
			ok(t, os.WriteFile(path, b, 0o600))
		}
		if how&0x80 != 0 && (kind == damageReplace || kind == damageEdit) {
			d, err := images.OpenDir(dir)
			ok(t, err)
			d.Reseal(name) // fails for a pages file, which is not sealed
			d.Close()
		}
		drmcoretest.Killed = nil
		fds, err := drmcoretest.Restore(t, env.Dir, dir, drmcoretest.NthOrder(int(which)), false)
		if intact && err != nil {
			t.Fatalf("the intact checkpoint %s does not restore: %v", src, err)
		}
		drmcoretest.CloseAll(fds)
		waitCounts(t, env, base)
	})
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// copyImages copies a checkpoint into a new directory.
func copyImages(t testing.TB, src string) string {
	dir := t.TempDir()
	for _, name := range imagesOf(t, src) {
		b, err := os.ReadFile(filepath.Join(src, name))
		ok(t, err)
		ok(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	return dir
}
