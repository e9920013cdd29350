package drmcore_test

import (
	"os"
	"path/filepath"
	"testing"

	"drmcr/drmcore/drmcoretest"
	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// BenchmarkDumpRestore measures a whole checkpoint and restore of one drm
// file holding 16 MiB of BOs through the plugin's logic and a real
// kernelsim server, against a baseline measured in the same run: writing
// and reading the same bytes as plain files in the same directory. The
// ratio of their ns/op is the plugin's overhead over the unavoidable I/O.
func BenchmarkDumpRestore(b *testing.B) {
	const bos, boSize = 16, 1 << 20
	env := ksimtest.Start(b, kernelsim.Config{})
	d := env.Open(b, 128)
	data := make([]byte, boSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for i := 0; i < bos; i++ {
		h := ck(b).u32(d.BOCreate(boSize, uapi.Domain_DOMAIN_VRAM, 0, 0))
		must(b, d.Write(h, 0, data))
	}
	ino := inode(b, d.FD())

	b.Run("plugin", func(b *testing.B) {
		b.SetBytes(bos * boSize)
		for i := 0; i < b.N; i++ {
			dir, err := dump(b, env)
			must(b, err)
			fds, err := restore(b, env, dir, concurrently, false)
			must(b, err)
			if _, ok := fds[ino]; !ok {
				b.Fatal("file not restored")
			}
			drmcoretest.CloseAll(fds)
			os.RemoveAll(dir)
		}
	})
	b.Run("baseline-files", func(b *testing.B) {
		b.SetBytes(bos * boSize)
		for i := 0; i < b.N; i++ {
			dir := b.TempDir()
			for j := 0; j < bos; j++ {
				must(b, os.WriteFile(filepath.Join(dir, "bo"+string(rune('a'+j))), data, 0o600))
			}
			for j := 0; j < bos; j++ {
				if _, err := os.ReadFile(filepath.Join(dir, "bo"+string(rune('a'+j)))); err != nil {
					b.Fatal(err)
				}
			}
			os.RemoveAll(dir)
		}
	})
}
