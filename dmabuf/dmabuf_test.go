package dmabuf_test

import (
	"testing"

	"drmcr/dmabuf"
	"drmcr/kernelsim/uapi"
)

func TestDumpAndRestoreDmaBuf(t *testing.T) {
	p := dmabuf.New()
	img, err := p.DumpDmaBuf(9, 3, &uapi.BoState{BoId: 5, DmabufInode: 9})
	if err != nil || img.Inode != 9 || img.BoId != 5 || img.Pid != 3 {
		t.Fatalf("image %v, %v", img, err)
	}
	rd, err := p.RestoreDmaBuf(img)
	if err != nil || rd.Inode != 9 || rd.BoId != 5 {
		t.Fatalf("restore request %v, %v", rd, err)
	}
	if _, err := p.DumpDmaBuf(9, 3, &uapi.BoState{BoId: 5, DmabufInode: 10}); err == nil {
		t.Fatal("a BO exported as another inode was accepted")
	}
	if _, err := p.DumpDmaBuf(9, 3, nil); err == nil {
		t.Fatal("a dma-buf without a BO was accepted")
	}
	img.BoId = 0
	if _, err := p.RestoreDmaBuf(img); err == nil {
		t.Fatal("an image without a BO was accepted")
	}
}
