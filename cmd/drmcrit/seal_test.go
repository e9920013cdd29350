package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sk_packet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-packet"
	"github.com/checkpoint-restore/go-criu/v7/magic"
	"google.golang.org/protobuf/proto"

	"drmcr/images"
)

// TestEncodeReseal: an image edited on purpose through decode and encode
// is refused until re-sealed, and encode re-seals only when asked.
func TestEncodeReseal(t *testing.T) {
	f := richFixture(t)
	dir := copyDir(t, f.dir)
	name := images.FileName(f.inoA)
	path := filepath.Join(dir, name)
	code, js, errs := runCmd(t, nil, "decode", path)
	if code != 0 {
		t.Fatalf("decode: %d %s", code, errs)
	}
	// Renumber a handle everywhere in the image: consistent in itself.
	old := fmt.Sprintf(`"handle": %d,`, f.hA2)
	if !strings.Contains(js, old) {
		t.Fatalf("decoded image lacks %q:\n%s", old, js)
	}
	js = strings.ReplaceAll(js, old, `"handle": 9,`)

	code, _, errs = runCmd(t, []byte(js), "encode", "-o", path)
	if code != 0 || !strings.Contains(errs, name+" no longer matches its seal in drm-inventory.img: restore and drmcrit verify refuse the checkpoint (encode --reseal re-seals it)") {
		t.Fatalf("encode without --reseal: %d %q", code, errs)
	}
	code, out, _ := runCmd(t, nil, "verify", dir)
	if code != 1 || !strings.Contains(out, name+": changed after the dump: its blake3-256 digest is ") {
		t.Fatalf("verify of an image edited, not re-sealed: %d\n%s", code, out)
	}
	code, _, errs = runCmd(t, []byte(js), "encode", "-o", path, "--reseal")
	if code != 0 || !strings.Contains(errs, "re-sealed "+name+" in "+filepath.Join(dir, images.InventoryName)) {
		t.Fatalf("encode --reseal: %d %q", code, errs)
	}
	if code, out, _ := runCmd(t, nil, "verify", dir); code != 0 {
		t.Fatalf("verify after --reseal: %d\n%s", code, out)
	}
	// --reseal needs a directory to re-seal in.
	if code, _, errs := runCmd(t, []byte(js), "encode", "--reseal", name); code != 2 || !strings.Contains(errs, "encode --reseal: name the image to write with -o") {
		t.Errorf("encode --reseal to stdout: %d %q", code, errs)
	}
	// The inventory itself: an edit breaks its own seal, --reseal renews it.
	invPath := filepath.Join(dir, images.InventoryName)
	_, ijs, _ := runCmd(t, nil, "decode", invPath)
	ijs = strings.Replace(ijs, `"comm": "`, `"comm": "x`, 1)
	if code, _, errs := runCmd(t, []byte(ijs), "encode", "-o", invPath); code != 0 || !strings.Contains(errs, "drm-inventory.img does not match its own seal") {
		t.Errorf("encode of an edited inventory: %d %q", code, errs)
	}
	if code, out, _ := runCmd(t, nil, "verify", dir); code != 1 || !strings.Contains(out, "drm-inventory.img: seal: changed after the dump") {
		t.Errorf("verify of an edited inventory: %d\n%s", code, out)
	}
	if code, _, _ := runCmd(t, []byte(ijs), "encode", "-o", invPath, "--reseal"); code != 0 {
		t.Errorf("encode --reseal of the inventory: %d", code)
	}
	if code, out, _ := runCmd(t, nil, "verify", dir); code != 0 {
		t.Errorf("verify of a re-sealed inventory: %d\n%s", code, out)
	}
}

// TestShowVerdictJSON: show --json carries verify's problems, [] when the
// checkpoint restores.
func TestShowVerdictJSON(t *testing.T) {
	f := richFixture(t)
	for _, tc := range []struct {
		damage bool
		want   int
	}{{false, 0}, {true, 1}} {
		dir := f.dir
		if tc.damage {
			dir = copyDir(t, f.dir)
			m := &images.DrmFile{}
			readImg(t, dir, images.FileName(f.inoA), m)
			m.State.Minor = 129
			writeImg(t, dir, images.FileName(f.inoA), m)
		}
		code, out, errs := runCmd(t, nil, "show", "--json", dir)
		if code != 0 {
			t.Fatalf("show --json: %d %s", code, errs)
		}
		var v struct {
			Problems []string `json:"problems"`
		}
		must(t, json.Unmarshal([]byte(out), &v))
		if v.Problems == nil || len(v.Problems) != tc.want {
			t.Errorf("damaged %v: problems %q", tc.damage, v.Problems)
		}
	}
}

// writeSkQueues writes CRIU's sk-queues.img with one packet queued in the
// socket of file id queue, carrying the file ids rights with SCM_RIGHTS.
func writeSkQueues(t *testing.T, dir string, queue uint32, rights ...uint32) {
	t.Helper()
	m := magic.LoadMagic()
	data := binary.LittleEndian.AppendUint32(nil, uint32(m.ByName["IMG_COMMON"]))
	data = binary.LittleEndian.AppendUint32(data, uint32(m.ByName["SK_QUEUES"]))
	payload := []byte("hi")
	e, err := proto.Marshal(&sk_packet.SkPacketEntry{IdFor: proto.Uint32(queue), Length: proto.Uint32(uint32(len(payload))),
		Scm: []*sk_packet.ScmEntry{{Type: proto.Uint32(scmRights), Rights: rights}}})
	must(t, err)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(e)))
	data = append(append(data, e...), payload...)
	must(t, os.WriteFile(filepath.Join(dir, "sk-queues.img"), data, 0o600))
}

// TestInFlightWithCriuImages: a dma-buf the inventory holds in no task
// but marks in flight is accepted when CRIU's sk-queues.img holds it in
// a socket's queue, shown under "in flight" with that socket, and
// refused when no queue holds it.
func TestInFlightWithCriuImages(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "gpudump"))
	inv := &images.Inventory{}
	readImg(t, dir, images.InventoryName, inv)
	var ino uint64 = inv.Dmabufs[0]
	for _, p := range inv.Processes {
		var keep []uint64
		for _, x := range p.Inodes {
			if x != ino {
				keep = append(keep, x)
			}
		}
		p.Inodes = keep
	}
	writeImg(t, dir, images.InventoryName, inv)
	d := &images.DmaBuf{}
	readImg(t, dir, images.DmaBufName(ino), d)
	d.Pid, d.InFlight = 0, true
	writeImg(t, dir, images.DmaBufName(ino), d)

	code, out, _ := runCmd(t, nil, "verify", dir)
	if code != 1 || !strings.Contains(out, images.DmaBufName(ino)+": in_flight: true, but no unix socket's queue in CRIU's sk-queues.img holds it") {
		t.Fatalf("verify of a dma-buf in flight in no queue: %d\n%s", code, out)
	}

	// Queue it in the daemon-side socket of the first drm file (any unix
	// socket of CRIU's file table will do).
	tree, err := readCriuTree(dir)
	must(t, err)
	files, err := readFileTable(dir)
	must(t, err)
	var queueID, dmabufID uint32
	var queueIno uint64
	for id := range files.files {
		switch i := files.sockIno(id); {
		case i == ino:
			dmabufID = id
		case i != 0 && queueID == 0 && len(tree.byIno[i]) > 0:
			queueID, queueIno = id, i
		}
	}
	if dmabufID == 0 || queueID == 0 {
		t.Fatalf("no file ids for the dma-buf (%d) or a queue (%d)", dmabufID, queueID)
	}
	writeSkQueues(t, dir, queueID, dmabufID)
	code, out, _ = runCmd(t, nil, "verify", dir)
	if code != 0 {
		t.Fatalf("verify of a dma-buf in flight: %d\n%s", code, out)
	}
	code, out, errs := runCmd(t, nil, "show", dir)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("dma-buf ino %d: BO 1 (8 KiB, VRAM, in drm-pages-1.img@0), in the queue of unix socket ino %d (pid %d fd %d)", ino, queueIno, tree.byIno[queueIno][0].pid, tree.byIno[queueIno][0].fd)) {
		t.Errorf("show: %d %s\n%s", code, errs, out)
	}
	code, out, _ = runCmd(t, nil, "show", "--json", dir)
	var v View
	must(t, json.Unmarshal([]byte(out), &v))
	if code != 0 || len(v.DmaBufs) != 1 || v.DmaBufs[0].InFlight == nil || v.DmaBufs[0].InFlight.QueueInode != queueIno {
		t.Errorf("show --json: %d %+v", code, v.DmaBufs)
	}
}
