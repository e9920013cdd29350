package drmcore_test

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"drmcr/drmcore/drmcoretest"
	"drmcr/kernelsim"
	"drmcr/kernelsim/gpu"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

// TestSharedAcrossDrivers: an amdgpu BO exported, imported into an xe
// file (an import attachment, which the xe file binds into a VM and a
// long-running xe job reads) and into another amdgpu file (the BO
// itself), its creator's handle closed, goes through the plugin's dump
// and restore with the claims in every order and all at once: the BO is
// made on the amdgpu device whatever claims first, the xe handle is an
// attachment of it again, and the memory is shared as before.
func TestSharedAcrossDrivers(t *testing.T) {
	xe := kernelsim.DefaultDevice()
	xe.Driver, xe.Minor = "xe", 129
	env := ksimtest.Start(t, kernelsim.Config{Devices: []kernelsim.DeviceConfig{kernelsim.DefaultDevice(), xe}})
	base := env.Kernel.Counts()
	a, b, x := env.Open(t, 128), env.Open(t, 128), env.Open(t, 129)
	ha := ck(t).u32(a.BOCreate(page, uapi.Domain_DOMAIN_VRAM, 0, 0))
	fill(t, a, ck(t).u32(a.CtxCreate(0)), ha, page, 7)
	want := read(t, a, ha, page)
	fd, err := a.ExportDmaBuf(ha)
	must(t, err)
	hb := ck(t).u32(b.ImportDmaBuf(fd))
	hx := ck(t).u32(x.ImportDmaBuf(fd))
	unix.Close(fd)
	must(t, a.BOClose(ha))
	vm := ck(t).u32(x.XeVMCreate(0))
	must(t, x.XeBind(vm, hx, 0, 0x100000, page))
	q := ck(t).u32(x.XeExecQueueCreate(vm, 0))

	dir, err := dump(t, env)
	must(t, err)
	inoB, inoX := inode(t, b.FD()), inode(t, x.FD())
	a.Close()
	b.Close()
	x.Close()
	waitCounts(t, env, base)

	check := func(t *testing.T, fds map[uint64]int) {
		rb, rx := libdrm.FromFD(fds[inoB]), libdrm.FromFD(fds[inoX])
		if !bytes.Equal(read(t, rx, hx, page), want) || !bytes.Equal(read(t, rb, hb, page), want) {
			t.Fatal("shared BO contents differ after restore")
		}
		ib, err := rb.BOInfo(hb)
		must(t, err)
		ix, err := rx.BOInfo(hx)
		must(t, err)
		idB, idX := ib.BoId, ix.BoId
		var exp, att *kernelsim.DebugBO
		for _, bo := range env.Kernel.Debug().BOs {
			switch bo.ID {
			case idB:
				exp = &bo
			case idX:
				att = &bo
			}
		}
		if exp == nil || att == nil || exp.Minor != 128 || att.Minor != 129 || att.ImportOf != exp.ID {
			t.Fatalf("restored BOs: the amdgpu file's %+v, the xe file's %+v; want a BO of renderD128 and an import attachment of it on renderD129", exp, att)
		}
		// One memory: an xe job through the restored binding writes what
		// the amdgpu file reads.
		_, err = rx.XeExec(&uapi.XeExecRequest{ExecQueueId: q, Buffers: []*uapi.XeExecBuffer{{Va: 0x100000, Write: true}},
			Commands: []*uapi.Command{{Op: uint32(gpu.OpFill), Dst: 0, Src: -1, Len: page, Value: 0x5a5a5a5a}}})
		must(t, err)
		if _, err := rb.WaitIdle(hb, false, -1); err != nil {
			t.Fatal(err)
		}
		if got := read(t, rb, hb, 4); !bytes.Equal(got, []byte{0x5a, 0x5a, 0x5a, 0x5a}) {
			t.Fatalf("the amdgpu file reads %x after the xe job wrote 5a5a5a5a", got)
		}
	}
	run := func(name string, order drmcoretest.Order) {
		t.Run(name, func(t *testing.T) {
			fds, err := restore(t, env, dir, order, false)
			must(t, err)
			check(t, fds)
			drmcoretest.CloseAll(fds)
			waitCounts(t, env, base)
		})
	}
	run("concurrent", concurrently)
	for k := 0; k < 24; k++ {
		run(fmt.Sprintf("order%d", k), nthOrder(k))
	}
}
