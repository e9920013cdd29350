package kernelsim_test

import (
	"context"
	"testing"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/uapi"
)

// BenchmarkSubmitRoundTrip measures submit + wait of a 4 KiB fill through
// a real render-node socket ("socket"), and the same job through the
// kernel API in-process ("direct"): the difference is the protocol's
// overhead (two round trips per job).
func BenchmarkSubmitRoundTrip(b *testing.B) {
	dev := instant(amdgpuDev())
	b.Run("socket", func(b *testing.B) {
		env := ksimtest.Start(b, kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}})
		d := env.Open(b, 128)
		h := must(d.BOCreate(4096, vram, 0, 0))
		ctx := must(d.CtxCreate(0))
		s := must(d.SyncobjCreate(false))
		req := &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
			Commands: []*uapi.Command{fill(0, 0, 4096, 7)}, OutSyncobjs: []uint32{s}}
		b.ResetTimer()
		for b.Loop() {
			if _, err := d.Submit(req); err != nil {
				b.Fatal(err)
			}
			if _, err := d.SyncobjWait([]uint32{s}, -1, true, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		k := must(kernelsim.New(kernelsim.Config{Devices: []kernelsim.DeviceConfig{dev}}))
		defer k.Shutdown()
		f := k.Device(128).Open(kernelsim.Cred{})
		h := must(f.GemCreate(4096, vram, 0, 0))
		ctx := must(f.CtxCreate(0))
		s := must(f.SyncobjCreate(false))
		req := &uapi.SubmitRequest{CtxId: ctx, Bos: []*uapi.SubmitBo{bo(h, true)},
			Commands: []*uapi.Command{fill(0, 0, 4096, 7)}, OutSyncobjs: []uint32{s}}
		bg := context.Background()
		b.ResetTimer()
		for b.Loop() {
			if _, err := f.Submit(bg, req); err != nil {
				b.Fatal(err)
			}
			if _, err := f.SyncobjWait(bg, []uint32{s}, -1, true, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
