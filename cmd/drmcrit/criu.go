package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	sk_packet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v7/magic"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"drmcr/images"
)

// This file reads CRIU's own images (pstree, core, ids, fdinfo, files,
// unixsk) through go-criu's crit package, to name the processes and the
// fd numbers under which they hold the plugin's sockets.

// maxCriuImage bounds the size of a CRIU metadata image read whole.
const maxCriuImage = 64 << 20

// criuProc is one task of CRIU's process tree.
type criuProc struct {
	pid, ppid, pgid, sid int32
	threads              int
	comm                 string
	filesID              uint32
	fds                  []criuFd
	// cwd and root as crit x fds prints them; "" when fs-<pid>.img is
	// missing.
	cwd, root string
}

// criuFd is one fd of a task: a unix socket's inode, or another kind.
type criuFd struct {
	fd   int32
	typ  string // fdinfo type, e.g. "UNIXSK"
	ino  uint64 // unix socket inode, 0 for other kinds
	isSk bool
	desc string // what crit x fds prints for it: a path, pipe[…], unix[…], TYPE.id
}

// criuTree is what the CRIU images say about the dumped tasks.
type criuTree struct {
	procs []*criuProc
	// byIno maps a unix socket inode to the (pid, fd) pairs holding it.
	byIno map[uint64][]pidFd
	// inFlight maps the inode of a unix socket sent with SCM_RIGHTS and
	// still in a socket's receive queue at the dump to that socket's
	// inode (sk-queues.img).
	inFlight map[uint64]uint64
	inv      criuInventory
}

// criuInventory is what drmcrit tells of CRIU's inventory.img.
type criuInventory struct {
	err        error // why it could not be read; the rest is then zero
	imgVersion uint32
	// plugins criu recorded for restore to require (criu >= 4.0 records
	// the plugins that registered themselves at dump with
	// add_inventory_plugin, and restore refuses to run without them).
	// nil when the image has no plugin list.
	plugins []string
}

type pidFd struct {
	pid int32
	fd  int32
}

// hasCriuImages says whether dir holds CRIU's own images.
func hasCriuImages(dir string) bool {
	for _, n := range []string{"pstree.img", "inventory.img"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// checkFraming validates a CRIU image's framing (magic words, then
// length-prefixed entries that fit the file) before crit reads it, so
// that a garbled size cannot make it allocate gigabytes or read past the
// end. It returns the image's magic name.
func checkFraming(name string, data []byte) (string, error) {
	m := magic.LoadMagic()
	if len(data) < 4 {
		return "", fmt.Errorf("%s: %d bytes, too short for a CRIU image", name, len(data))
	}
	off := 4
	v := uint64(binary.LittleEndian.Uint32(data))
	if v == m.ByName["IMG_COMMON"] || v == m.ByName["IMG_SERVICE"] {
		if len(data) < 8 {
			return "", fmt.Errorf("%s: truncated after its first magic word", name)
		}
		v = uint64(binary.LittleEndian.Uint32(data[4:]))
		off = 8
	}
	mname, ok := m.ByValue[v]
	if !ok {
		return "", fmt.Errorf("%s: unknown CRIU image magic 0x%08x", name, v)
	}
	for off < len(data) {
		if len(data)-off < 4 {
			return "", fmt.Errorf("%s: truncated entry size at offset %d", name, off)
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		if n > len(data)-off {
			return "", fmt.Errorf("%s: entry of %d bytes at offset %d runs past the end (%d bytes)", name, n, off-4, len(data))
		}
		off += n
	}
	return mname, nil
}

// openCriuImage opens one of CRIU's images as the plugin's are: inside
// the directory, a regular file only, through no symlink, and without
// blocking (a FIFO in its place must not hang drmcrit).
func openCriuImage(dir, name string) (*os.File, error) {
	d, err := images.OpenDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CRIU image %s: %w", name, err)
	}
	defer d.Close()
	f, err := d.OpenRegular(name)
	if err != nil {
		return nil, fmt.Errorf("CRIU image %s: %w", name, err)
	}
	return f, nil
}

// readCriuImage reads a CRIU image with crit after checking its framing
// and that its magic is the expected one. It returns os.ErrNotExist
// (wrapped) if the file is absent.
func readCriuImage[T proto.Message](dir, name, wantMagic string, newEntry func() T) ([]T, error) {
	f, err := openCriuImage(dir, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCriuImage+1))
	if err != nil {
		return nil, fmt.Errorf("read CRIU image %s: %w", name, err)
	}
	if len(data) > maxCriuImage {
		return nil, fmt.Errorf("CRIU image %s is larger than %d bytes", name, maxCriuImage)
	}
	mname, err := checkFraming(name, data)
	if err != nil {
		return nil, err
	}
	if mname != wantMagic {
		return nil, fmt.Errorf("CRIU image %s has magic %s, want %s", name, mname, wantMagic)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read CRIU image %s: %w", name, err)
	}
	img, err := crit.New(f, nil, dir, false, false).Decode(newEntry())
	if err != nil {
		return nil, fmt.Errorf("decode CRIU image %s: %w", name, err)
	}
	out := make([]T, 0, len(img.Entries))
	for _, e := range img.Entries {
		m, ok := e.Message.(T)
		if !ok {
			return nil, fmt.Errorf("decode CRIU image %s: unexpected entry type %T", name, e.Message)
		}
		out = append(out, m)
	}
	return out, nil
}

// readCriuTree reads the processes and their socket fds from CRIU's
// images in dir.
func readCriuTree(dir string) (*criuTree, error) {
	entries, err := readCriuImage(dir, "pstree.img", "PSTREE", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errors.New("CRIU image pstree.img has no process")
	}
	t := &criuTree{byIno: map[uint64][]pidFd{}, inv: readCriuInventory(dir)}
	files, err := readFileTable(dir)
	if err != nil {
		return nil, err
	}
	if t.inFlight, err = readInFlight(dir, files); err != nil {
		return nil, err
	}
	fdCache := map[uint32][]*fdinfo.FdinfoEntry{}
	for _, e := range entries {
		p := &criuProc{pid: int32(e.GetPid()), ppid: int32(e.GetPpid()), pgid: int32(e.GetPgid()), sid: int32(e.GetSid()), threads: len(e.GetThreads())}
		core, err := readCriuImage(dir, "core-"+strconv.Itoa(int(p.pid))+".img", "CORE", func() *criu_core.CoreEntry { return &criu_core.CoreEntry{} })
		if err != nil {
			return nil, err
		}
		if len(core) == 0 {
			return nil, fmt.Errorf("CRIU image core-%d.img is empty", p.pid)
		}
		p.comm = core[0].GetTc().GetComm()
		ids, err := readCriuImage(dir, "ids-"+strconv.Itoa(int(p.pid))+".img", "IDS", func() *criu_core.TaskKobjIdsEntry { return &criu_core.TaskKobjIdsEntry{} })
		switch {
		case err == nil && len(ids) > 0:
			p.filesID = ids[0].GetFilesId()
		case core[0].GetIds() != nil: // newer criu keeps the ids in the core
			p.filesID = core[0].GetIds().GetFilesId()
		case err != nil:
			return nil, err
		default:
			return nil, fmt.Errorf("no files id for pid %d (ids-%d.img is empty)", p.pid, p.pid)
		}
		fds, ok := fdCache[p.filesID]
		if !ok {
			fds, err = readCriuImage(dir, "fdinfo-"+strconv.FormatUint(uint64(p.filesID), 10)+".img", "FDINFO", func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} })
			if err != nil {
				return nil, err
			}
			fdCache[p.filesID] = fds
		}
		for _, fe := range fds {
			cf := criuFd{fd: int32(fe.GetFd()), typ: fe.GetType().String(), desc: files.describe(fe.GetType(), fe.GetId())}
			if fe.GetType() == fdinfo.FdTypes_UNIXSK {
				cf.isSk = true
				cf.ino = files.sockIno(fe.GetId())
				if cf.ino != 0 {
					t.byIno[cf.ino] = append(t.byIno[cf.ino], pidFd{p.pid, cf.fd})
				}
			}
			p.fds = append(p.fds, cf)
		}
		fsEnts, err := readCriuImage(dir, "fs-"+strconv.Itoa(int(p.pid))+".img", "FS", func() *fs.FsEntry { return &fs.FsEntry{} })
		switch {
		case err == nil && len(fsEnts) > 0:
			p.cwd = files.describe(fdinfo.FdTypes_REG, fsEnts[0].GetCwdId())
			p.root = files.describe(fdinfo.FdTypes_REG, fsEnts[0].GetRootId())
		case err != nil && !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
		sort.Slice(p.fds, func(i, j int) bool { return p.fds[i].fd < p.fds[j].fd })
		t.procs = append(t.procs, p)
	}
	sort.Slice(t.procs, func(i, j int) bool { return t.procs[i].pid < t.procs[j].pid })
	return t, nil
}

// scmRights is SCM_RIGHTS, the type of a control message carrying files.
const scmRights = 1

// readInFlight reads sk-queues.img, the packets criu found queued in unix
// sockets, and returns the unix sockets sent with SCM_RIGHTS in them: a
// drm file or dma-buf in flight at the dump, which no task held, by inode,
// with the inode of the socket whose queue holds it. Each entry is
// followed by its packet's bytes, so the image is walked here rather
// than with crit (whose framing check would not allow them).
func readInFlight(dir string, files *fileTable) (map[uint64]uint64, error) {
	const name = "sk-queues.img"
	out := map[uint64]uint64{}
	f, err := openCriuImage(dir, name)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCriuImage+1))
	if err != nil {
		return nil, fmt.Errorf("read CRIU image %s: %w", name, err)
	}
	if len(data) > maxCriuImage {
		return nil, fmt.Errorf("CRIU image %s is larger than %d bytes", name, maxCriuImage)
	}
	m := magic.LoadMagic()
	off := 0
	for _, want := range []string{"IMG_COMMON", "SK_QUEUES"} {
		if len(data)-off < 4 {
			return nil, fmt.Errorf("%s: too short for a CRIU image", name)
		}
		v := uint64(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		if v != m.ByName[want] {
			if want == "IMG_COMMON" && v == m.ByName["SK_QUEUES"] {
				break // an image without the common magic
			}
			return nil, fmt.Errorf("%s: magic 0x%08x, want %s", name, v, want)
		}
	}
	for off < len(data) {
		if len(data)-off < 4 {
			return nil, fmt.Errorf("%s: truncated entry size at offset %d", name, off)
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		if n > len(data)-off {
			return nil, fmt.Errorf("%s: entry of %d bytes at offset %d runs past the end", name, n, off-4)
		}
		e := &sk_packet.SkPacketEntry{}
		if err := proto.Unmarshal(data[off:off+n], e); err != nil {
			return nil, fmt.Errorf("%s: entry at offset %d: %w", name, off-4, err)
		}
		off += n
		if uint64(e.GetLength()) > uint64(len(data)-off) {
			return nil, fmt.Errorf("%s: packet of %d bytes at offset %d runs past the end", name, e.GetLength(), off)
		}
		off += int(e.GetLength())
		queue := files.sockIno(e.GetIdFor())
		for _, scm := range e.GetScm() {
			if scm.GetType() != scmRights {
				continue
			}
			for _, id := range scm.GetRights() {
				if ino := files.sockIno(id); ino != 0 {
					out[ino] = queue
				}
			}
		}
	}
	return out, nil
}

// fileTable is CRIU's table of open files (files.img, criu >= 3.15),
// with unixsk.img for the sockets of older dumps.
type fileTable struct {
	files  map[uint32]*fdinfo.FileEntry
	unixsk map[uint32]*sk_unix.UnixSkEntry
}

func readFileTable(dir string) (*fileTable, error) {
	t := &fileTable{files: map[uint32]*fdinfo.FileEntry{}, unixsk: map[uint32]*sk_unix.UnixSkEntry{}}
	files, err := readCriuImage(dir, "files.img", "FILES", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, f := range files {
		t.files[f.GetId()] = f
	}
	usks, err := readCriuImage(dir, "unixsk.img", "UNIXSK", func() *sk_unix.UnixSkEntry { return &sk_unix.UnixSkEntry{} })
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, u := range usks {
		t.unixsk[u.GetId()] = u
	}
	return t, nil
}

// usk returns the unix socket with file id id, or nil.
func (t *fileTable) usk(id uint32) *sk_unix.UnixSkEntry {
	if u := t.files[id].GetUsk(); u != nil {
		return u
	}
	return t.unixsk[id]
}

// sockIno is the inode of the unix socket with file id id, 0 if unknown.
func (t *fileTable) sockIno(id uint32) uint64 { return uint64(t.usk(id).GetIno()) }

// describe names a file the way crit x fds does: a regular file by its
// path, pipe[<pipe id>], unix[<inode> (<peer inode>) <name>], and
// anything else as <type>.<file id>.
func (t *fileTable) describe(typ fdinfo.FdTypes, id uint32) string {
	f := t.files[id]
	switch typ {
	case fdinfo.FdTypes_REG:
		if r := f.GetReg(); r != nil {
			return r.GetName()
		}
		return "unknown path"
	case fdinfo.FdTypes_PIPE:
		if p := f.GetPipe(); p != nil {
			return fmt.Sprintf("pipe[%d]", p.GetPipeId())
		}
		return "pipe[?]"
	case fdinfo.FdTypes_UNIXSK:
		u := t.usk(id)
		if u == nil {
			return "unix[?]"
		}
		name := ""
		if n := strings.TrimRight(string(u.GetName()), "\x00"); n != "" {
			if n[0] == 0 { // abstract, as ss and /proc/net/unix show it
				n = "@" + n[1:]
			}
			if q := strconv.QuoteToGraphic(n); q[1:len(q)-1] != n {
				n = q
			}
			name = " " + n
		}
		return fmt.Sprintf("unix[%d (%d)%s]", u.GetIno(), u.GetPeer(), name)
	}
	return fmt.Sprintf("%s.%d", typ, id)
}

// readCriuInventory reads CRIU's inventory.img. criu 4.x records there
// the plugins restore requires (field 12, plugins_entry, whose field 12 is
// the repeated plugin name); go-criu's copy of the message predates it,
// so it is read from the unknown fields.
func readCriuInventory(dir string) criuInventory {
	es, err := readCriuImage(dir, "inventory.img", "INVENTORY", func() *inventory.InventoryEntry { return &inventory.InventoryEntry{} })
	if err != nil {
		return criuInventory{err: err}
	}
	if len(es) == 0 {
		return criuInventory{err: errors.New("CRIU image inventory.img is empty")}
	}
	inv := criuInventory{imgVersion: es[0].GetImgVersion()}
	for _, entry := range fieldBytes(es[0].ProtoReflect().GetUnknown(), 12) {
		if inv.plugins == nil {
			inv.plugins = []string{}
		}
		for _, name := range fieldBytes(entry, 12) {
			inv.plugins = append(inv.plugins, string(name))
		}
	}
	return inv
}

// fieldBytes returns the length-delimited values of field num in a
// protobuf encoding, skipping everything else; it stops at the first
// malformed field.
func fieldBytes(b []byte, num protowire.Number) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return out
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return out
			}
			out = append(out, v)
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return out
		}
		b = b[l:]
	}
	return out
}

// proc returns the task with pid, or nil.
func (t *criuTree) proc(pid int32) *criuProc {
	for _, p := range t.procs {
		if p.pid == pid {
			return p
		}
	}
	return nil
}
