package kernelsim_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

func TestSmokeFill(t *testing.T) {
	env := ksimtest.Start(t, kernelsim.Config{})
	d := env.Open(t, 128)
	h, err := d.BOCreate(4096, uapi.Domain_DOMAIN_VRAM, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := d.CtxCreate(0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Submit(&uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{{Handle: h, Write: true}},
		Commands: []*uapi.Command{{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, Len: 4096, Value: 0xdeadbeef}}})
	if err != nil {
		t.Fatal(err)
	}
	if busy, err := d.WaitIdle(h, false, 5*time.Second); err != nil || busy {
		t.Fatal(busy, err)
	}
	p := make([]byte, 4096)
	if err := d.Read(h, 0, p); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4096)
	for i := 0; i < 4096; i += 4 {
		binary.LittleEndian.PutUint32(want[i:], 0xdeadbeef)
	}
	if !bytes.Equal(p, want) {
		t.Fatalf("fill: got %x...", p[:16])
	}
}
