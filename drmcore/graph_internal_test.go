package drmcore

import (
	"strings"
	"testing"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// TestCheckGraph: every kernelsim file found must be dumped, and every BO
// a file or dma-buf refers to must have a record.
func TestCheckGraph(t *testing.T) {
	d := newDumpState()
	d.ident[10] = &uapi.IdentifiedObject{Inode: 10, Kind: uapi.ObjectKind_OBJECT_DRM_FILE}
	d.ident[11] = &uapi.IdentifiedObject{Inode: 11, Kind: uapi.ObjectKind_OBJECT_DMA_BUF}
	d.owner[10], d.owner[11] = 100, 101
	if d.allDumped() {
		t.Fatal("nothing dumped yet, but allDumped")
	}
	d.files[10] = &images.DrmFile{State: &uapi.FileCheckpoint{Handles: []*uapi.HandleState{{Handle: 1, BoId: 7}}}}
	d.dmabufs[11] = &images.DmaBuf{Inode: 11, BoId: 8}
	if !d.allDumped() {
		t.Fatal("everything dumped, but not allDumped")
	}
	err := d.checkGraph()
	if err == nil {
		t.Fatal("BOs 7 and 8 have no records, yet the graph is complete")
	}
	for _, want := range []string{"handle 1 refers to BO 7", "dma-buf inode 11 refers to BO 8"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	d.bos[7], d.bos[8] = &images.Bo{}, &images.Bo{}
	if err := d.checkGraph(); err != nil {
		t.Fatal(err)
	}
	delete(d.dmabufs, 11)
	if err := d.checkGraph(); err == nil || !strings.Contains(err.Error(), "inode 11 of pid 101 was never dumped") {
		t.Fatalf("undumped dma-buf: %v", err)
	}
}

// TestCheckGraphFences: work waiting on another file's job needs that
// file in the dump.
func TestCheckGraphFences(t *testing.T) {
	d := newDumpState()
	d.ident[10] = &uapi.IdentifiedObject{Inode: 10, Kind: uapi.ObjectKind_OBJECT_DRM_FILE}
	d.files[10] = &images.DrmFile{Pid: 5, State: &uapi.FileCheckpoint{WaitsOnFences: []uint64{77}}}
	err := d.checkGraph()
	if err == nil || !strings.Contains(err.Error(), "waiting on fence 77") {
		t.Fatalf("a wait on an undumped job: %v", err)
	}
	d.ident[11] = &uapi.IdentifiedObject{Inode: 11, Kind: uapi.ObjectKind_OBJECT_DRM_FILE}
	d.files[11] = &images.DrmFile{State: &uapi.FileCheckpoint{JobFences: []uint64{77}}}
	if err := d.checkGraph(); err != nil {
		t.Fatal(err)
	}
}
