package kernelsim_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

// BenchmarkContents measures the kernel's side of a checkpoint's BO
// contents, in-process: "checkpoint" streams 256 MiB of BOs into a pages
// file with their checksums (CHECKPOINT_BOS), against "write", one writer
// writing the same bytes to a file of the same directory; "load" loads
// and verifies them into a restore session's fresh memory
// (SESSION_LOAD_PAGES), against "read", reading them into fresh memory.
func BenchmarkContents(b *testing.B) {
	const (
		boSize = 64 << 20
		count  = 4
	)
	dev := instant(amdgpuDev())
	dev.VRAMSize = 2 * count * boSize
	k := must(kernelsim.New(kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}}))
	defer k.Shutdown()
	f := k.Device(128).Open(kernelsim.Cred{})
	var ids []uint64
	for i := range count {
		h := must(f.GemCreate(boSize, vram, 0, 0))
		ok(b, f.GemPwrite(h, 0, randomBytes(64<<10, uint64(i))))
		info := must(f.GemInfo(h))
		ids = append(ids, info.BoId)
	}
	dir := b.TempDir()
	pages := filepath.Join(dir, "pages")
	total := int64(count * boSize)
	checkpoint := func() []*uapi.ContentChunk {
		out := must(os.Create(pages))
		xs, err := k.CheckpointBOs([]kernelsim.PagesTarget{{IDs: ids, FD: int(out.Fd())}}, uapi.DefaultChecksum)
		ok(b, err)
		ok(b, out.Close())
		return xs[0].Chunks
	}
	chunks := checkpoint()
	b.Run("checkpoint", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			checkpoint()
		}
	})
	b.Run("write", func(b *testing.B) {
		buf := make([]byte, 4<<20)
		b.SetBytes(total)
		for b.Loop() {
			out := must(os.Create(filepath.Join(dir, "raw")))
			for n := int64(0); n < total; n += int64(len(buf)) {
				must(out.Write(buf))
			}
			ok(b, out.Close())
		}
	})
	req := &uapi.SessionOpenRequest{PagesFiles: []*uapi.PagesFile{{Name: "pages", Chunks: chunks}}}
	for i, id := range ids {
		req.Bos = append(req.Bos, &uapi.BoState{BoId: id, Size: boSize, Domain: vram, Minor: 128})
		req.Contents = append(req.Contents, &uapi.BoContents{BoId: id, Offset: uint64(i) * boSize})
	}
	b.Run("load", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			s := must(k.OpenSession(req))
			in := must(unix.Open(pages, unix.O_RDONLY|unix.O_CLOEXEC, 0))
			ok(b, s.LoadPages(0, in))
			ok(b, s.Verify(time.Minute))
			ok(b, s.Close(true))
		}
	})
	b.Run("read", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			in := must(os.Open(pages))
			mem := must(unix.Mmap(-1, 0, int(total), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS))
			must(in.ReadAt(mem, 0))
			ok(b, unix.Munmap(mem))
			in.Close()
		}
	})
}
