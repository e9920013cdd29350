package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"

	"drmcr/images"
)

// mappedBOs reads a checkpoint's mapped BOs: their memfd inode at dump
// (criu's key for their memory) and size.
func mappedBOs(t *testing.T, img string) map[uint64]uint64 {
	t.Helper()
	d, err := images.OpenDir(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	inv := &images.Inventory{}
	if err := d.Read(images.InventoryName, inv); err != nil {
		t.Fatal(err)
	}
	x, err := d.ReadIndex()
	if err != nil {
		t.Fatal(err)
	}
	size := map[uint64]uint64{}
	for _, b := range x.Bos {
		if b.CpuMapped {
			size[b.State.BoId] = b.State.Size
		}
	}
	out := map[uint64]uint64{} // memfd inode -> BO size
	for _, p := range inv.Processes {
		for _, m := range p.Mappings {
			out[m.MemfdInode] = size[m.BoId]
		}
	}
	return out
}

// shmemPages returns the pages image and the number of pages criu saved
// of the memfd with inode ino.
func shmemPages(t *testing.T, img string, ino uint64) (string, uint64) {
	t.Helper()
	f, err := os.Open(filepath.Join(img, fmt.Sprintf("pagemap-shmem-%d.img", ino)))
	if err != nil {
		t.Fatalf("criu saved no memory of memfd %d: %v", ino, err)
	}
	defer f.Close()
	pm, err := crit.New(f, nil, img, false, false).Decode(&pagemap.PagemapEntry{})
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, e := range pm.Entries[1:] {
		n += uint64(e.Message.(*pagemap.PagemapEntry).GetNrPages())
	}
	return fmt.Sprintf("pages-%d.img", pm.Entries[0].Message.(*pagemap.PagemapHead).GetPagesId()), n
}

// TestMappedMemorySavedOnce: the memory of a mapped BO is in the
// checkpoint once, in criu's images (one pagemap per memfd, however many
// processes map it), not in the plugin's pages file; pages never written
// are not saved at all (the scenario's 64 KiB Notes BO gets 16 bytes a
// step, its 8 KiB Acc 8 bytes a step).
func TestMappedMemorySavedOnce(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "mapped", "-size", "4M")
	want := expected(t, w)
	waitStep(t, w, 1)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	memfds := mappedBOs(t, img)
	if len(memfds) != 4 {
		t.Fatalf("%d mapped BOs' memfds, want 4 (In, Sh, Notes, Acc)", len(memfds))
	}
	var mappedBytes uint64
	for ino, size := range memfds {
		_, saved := shmemPages(t, img, ino)
		if saved*4096 > size {
			t.Errorf("memfd %d: criu saved %d pages of a %d-byte BO", ino, saved, size)
		}
		if size <= 64<<10 && saved > 1 {
			t.Errorf("memfd %d (Notes or Acc, at most one page written): criu saved %d pages", ino, saved)
		}
		mappedBytes += size
	}
	st, err := os.Stat(filepath.Join(img, images.PagesName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() >= 1<<20 {
		t.Errorf("the plugin's pages file holds %d bytes: mapped BOs' contents went into it too", st.Size())
	}
	if !strings.Contains(pluginLines(log), "4 mapped") {
		t.Errorf("the dump summary does not count the mapped BOs:\n%s", pluginLines(log))
	}
	waitGone(t, pids)
	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, d)
}

// TestDamagedMappedMemoryFailsTheRestore: a mapped BO's memory changed in
// criu's images after the dump comes back changed as the task's memory;
// the plugin finds it does not match the checksums of the dump when it
// adopts it, and the restore fails before any task runs (drmcrit verify
// finds it too). The undamaged checkpoint restores.
func TestDamagedMappedMemoryFailsTheRestore(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "mapped")
	want := expected(t, w)
	waitStep(t, w, 1)
	pids := w.Tree()
	img, log, err := dump(t, d, w)
	if err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	bad := t.TempDir()
	if out, err := exec.Command("cp", "-a", img+"/.", bad).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	for ino, size := range mappedBOs(t, bad) {
		if size <= 64<<10 {
			continue // damage a big one: In or Sh
		}
		pages, _ := shmemPages(t, bad, ino)
		f, err := os.OpenFile(filepath.Join(bad, pages), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		f.ReadAt(b, 1000)
		b[0] ^= 0x40
		f.WriteAt(b, 1000)
		f.Close()
		break
	}
	if out, code := runDrmcrit(t, "verify", bad); code != 1 || !strings.Contains(out, "do not match their xxh3-128 checksum") {
		t.Errorf("drmcrit verify of damaged mapped memory: exit %d\n%s", code, out)
	}
	log, err = restore(t, d, bad)
	if err == nil {
		t.Fatal("a checkpoint with damaged mapped memory restored")
	}
	plugin := pluginLines(log)
	if !strings.Contains(plugin, "does not match the checksum recorded at dump") || !strings.Contains(plugin, "so that criu fails the restore") {
		t.Errorf("the restore failed for another reason:\n%s\n%s", plugin, lastLines(log, 30))
	}
	if strings.Contains(log, "Restore finished successfully") {
		t.Error("criu says the restore finished")
	}
	waitGone(t, pids)
	waitIdle(t, d)

	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, d)
}

// TestCryptographicChecksum: with DRMCR_CHECKSUM=blake3-256 in criu's
// environment the dump checksums every chunk, of the pages file and of
// mapped BOs' memory, with BLAKE3-256 and the index names it; drmcrit
// verify checks it, finds damage with it, and the checkpoint restores bit
// for bit.
func TestCryptographicChecksum(t *testing.T) {
	d := startDaemon(t)
	w := startWorkload(t, d, "mapped")
	want := expected(t, w)
	waitStep(t, w, 1)
	pids := w.Tree()
	img := imagesDir(t)
	c := criu
	c.Env = []string{"KERNELSIM_RUNTIME_DIR=" + d.Dir, "DRMCR_CHECKSUM=blake3-256"}
	if log, err := c.Run(img, "dump", "-t", fmt.Sprint(w.PID)); err != nil {
		t.Fatalf("%v\nplugin log:\n%s", err, pluginLines(log))
	}
	waitGone(t, pids)
	id, err := images.OpenDir(img)
	if err != nil {
		t.Fatal(err)
	}
	x, err := id.ReadIndex()
	id.Close()
	if err != nil {
		t.Fatal(err)
	}
	if x.Header.Checksum != "blake3-256" {
		t.Fatalf("the index names checksum %q", x.Header.Checksum)
	}
	nmapped := 0
	for _, b := range x.Bos {
		for _, ch := range b.MappedChunks {
			nmapped++
			if len(ch.Checksum) != 32 {
				t.Fatalf("BO %d: a mapped chunk's checksum of %d bytes", b.State.BoId, len(ch.Checksum))
			}
		}
	}
	if nmapped == 0 || len(x.Chunks) == 0 {
		t.Fatalf("%d pages-file chunks and %d mapped chunks: the scenario should have both", len(x.Chunks), nmapped)
	}
	if out, code := runDrmcrit(t, "verify", img); code != 0 {
		t.Fatalf("drmcrit verify: exit %d\n%s", code, out)
	}
	bad := t.TempDir()
	if out, err := exec.Command("cp", "-a", img+"/.", bad).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	for ino, size := range mappedBOs(t, bad) {
		if size > 64<<10 {
			pages, _ := shmemPages(t, bad, ino)
			f, err := os.OpenFile(filepath.Join(bad, pages), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := []byte{0}
			f.ReadAt(b, 5)
			b[0] ^= 1
			f.WriteAt(b, 5)
			f.Close()
			break
		}
	}
	if out, code := runDrmcrit(t, "verify", bad); code != 1 || !strings.Contains(out, "do not match their blake3-256 checksum") {
		t.Errorf("drmcrit verify of damaged mapped memory: exit %d\n%s", code, out)
	}
	if log, err := restore(t, d, img); err != nil {
		t.Fatalf("%v\nrestore log:\n%s", err, lastLines(log, 40))
	}
	if got := result(t, w); got != want {
		t.Fatalf("restored run gave\n  %s\nuninterrupted run gives\n  %s", got, want)
	}
	waitIdle(t, d)
}
