package drmcore_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"drmcr/drmcore"
	"drmcr/images"
	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
	"drmcr/subplugins"
)

// syntheticCheckpoint writes the images of a checkpoint of one drm file
// with n BOs of 4 KiB, each mapped, as a dump writes them (no pages
// file: the checks read none).
func syntheticCheckpoint(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	d, err := images.OpenDir(dir)
	must(b, err)
	defer d.Close()
	blob, err := proto.Marshal(&uapi.DriverPrivate{Version: kernelsim.DriverPrivateVersion, Driver: "amdgpu"})
	must(b, err)
	st := &uapi.FileCheckpoint{Minor: 128, Driver: "amdgpu", GpuId: 0x10020080, DriverPrivate: blob}
	w, err := d.CreateIndex(&images.BoIndex{Version: images.Version, Checksum: uapi.DefaultChecksum.String(), PagesFiles: []string{images.PagesName(1)}})
	must(b, err)
	inv := &images.Inventory{Version: images.Version, Complete: true, Files: []uint64{1000},
		Processes: []*images.Process{{Pid: 10, Comm: "bench", Inodes: []uint64{1000}}},
		Devices:   []*images.Device{{Minor: 128, Driver: "amdgpu", GpuId: 0x10020080}}}
	sum := make([]byte, uapi.DefaultChecksum.Size())
	for i := range n {
		id := uint64(i + 1)
		bo := &uapi.BoState{BoId: id, Size: 4096, Domain: uapi.Domain_DOMAIN_VRAM, Alignment: 4096, Minor: 128}
		st.Bos = append(st.Bos, bo)
		st.Handles = append(st.Handles, &uapi.HandleState{Handle: uint32(id), BoId: id})
		st.Mappings = append(st.Mappings, &uapi.VaMapping{Handle: uint32(id), Va: 0x100000 + id*4096, Size: 4096})
		must(b, w.AddBo(&images.Bo{Version: images.Version, State: bo, Offset: uint64(i) * 4096}))
		inv.Bos = append(inv.Bos, id)
		if (i+1)%1024 == 0 || i == n-1 {
			start := uint64(i/1024) * (4 << 20)
			must(b, w.AddChunk(&images.PagesChunk{Version: images.Version, Chunk: &uapi.ContentChunk{Offset: start, Length: uint64(i+1)*4096 - start, Checksum: sum}}))
		}
	}
	must(b, w.Close())
	fs, err := d.WriteImage(images.FileName(1000), &images.DrmFile{Version: images.Version, Inode: 1000, Pid: 10, Driver: "amdgpu", DriverVersion: 1, State: st})
	must(b, err)
	inv.Images = []*images.ImageSeal{w.Seal(), fs}
	must(b, d.WriteInventory(inv))
	return dir
}

// BenchmarkReadCheckpoint measures the checks a restore runs before it
// asks the kernel for anything (seals, every field of every image, the
// kernel's checks offline) on a checkpoint of 100,000 BOs, against a
// baseline measured in the same run: reading and decoding the same images
// without any check. It reports both per BO and their ratio.
func BenchmarkReadCheckpoint(b *testing.B) {
	const n = 100000
	dir := syntheticCheckpoint(b, n)
	d, err := images.OpenDir(dir)
	must(b, err)
	defer d.Close()
	var checked, decoded time.Duration
	for range b.N {
		t0 := time.Now()
		inv := &images.Inventory{}
		must(b, d.Read(images.InventoryName, inv))
		must(b, d.Read(images.FileName(1000), &images.DrmFile{}))
		_, err := d.ReadIndex()
		must(b, err)
		t1 := time.Now()
		ck, err := drmcore.ReadCheckpoint(d, subplugins.All())
		must(b, err)
		decoded, checked = decoded+t1.Sub(t0), checked+time.Since(t1)
		if len(ck.Problems) != 0 {
			b.Fatalf("problems: %v", ck.Err())
		}
	}
	b.ReportMetric(float64(checked.Nanoseconds())/float64(b.N*n), "ns/BO-checked")
	b.ReportMetric(float64(decoded.Nanoseconds())/float64(b.N*n), "ns/BO-baseline-decode")
	b.ReportMetric(float64(checked)/float64(decoded), "ratio")
}

// BenchmarkForDevices measures what a restore on other devices adds before
// it asks the kernel to create anything (map the devices, retarget the
// request, the kernel's checks against the new devices) on the checkpoint
// of BenchmarkReadCheckpoint, against the checks every restore runs
// (ReadCheckpoint), measured in the same run.
func BenchmarkForDevices(b *testing.B) {
	const n = 100000
	dir := syntheticCheckpoint(b, n)
	d, err := images.OpenDir(dir)
	must(b, err)
	defer d.Close()
	target := []*uapi.DeviceInfo{{Minor: 128, Driver: "xe", VramSize: 1 << 30, GttSize: 1 << 30},
		{Minor: 131, Driver: "amdgpu", GpuId: 0x2222, VramSize: 1 << 30, GttSize: 1 << 30}}
	var mapped, read time.Duration
	for range b.N {
		t0 := time.Now()
		ck, err := drmcore.ReadCheckpoint(d, subplugins.All())
		must(b, err)
		t1 := time.Now()
		m, probs, err := ck.ForDevices(target, nil)
		read, mapped = read+t1.Sub(t0), mapped+time.Since(t1)
		if err != nil || len(probs) != 0 || !m.Moved() {
			b.Fatalf("mapping %v: %v %v", m, probs, err)
		}
	}
	b.ReportMetric(float64(mapped.Nanoseconds())/float64(b.N*n), "ns/BO-mapped")
	b.ReportMetric(float64(read.Nanoseconds())/float64(b.N*n), "ns/BO-baseline-read-and-check")
	b.ReportMetric(float64(mapped)/float64(read), "ratio")
}
