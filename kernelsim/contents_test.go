package kernelsim_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"drmcr/kernelsim"
	"drmcr/kernelsim/ctl"
	"drmcr/kernelsim/ksimtest"
	"drmcr/kernelsim/libdrm"
	"drmcr/kernelsim/uapi"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// contentsImage checkpoints one file with BOs of a few sizes (one larger
// than a chunk, so its contents span chunks of their own) and random
// contents, and kills the file.
func contentsImage(t *testing.T, env *ksimtest.Env, c *ctl.Client) (img *image, ino uint64, want map[uint32][]byte, big uint64) {
	t.Helper()
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	want = map[uint32][]byte{}
	for i, size := range []int{16 << 10, 6 << 20, 4096, 8192} {
		h := must(d.BOCreate(uint64(size), gtt, 0, 0))
		want[h] = randomBytes(size, uint64(i))
		ok(t, d.Write(h, 0, want[h]))
	}
	ino = inode(t, d.FD())
	img, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
	if len(img.chunks) < 3 {
		t.Fatalf("%d chunks for contents larger than a chunk", len(img.chunks))
	}
	for _, h := range img.file(ino).Handles {
		if h.Handle == 2 {
			big = h.BoId
		}
	}
	kill(t, c, ids, []*libdrm.Device{d}, nil)
	return img, ino, want, big
}

// withPages is img with its pages file replaced by a copy that damage
// changed.
func withPages(t *testing.T, img *image, damage func(path string)) *image {
	t.Helper()
	cp := *img
	cp.pages = filepath.Join(t.TempDir(), "pages")
	ok(t, os.WriteFile(cp.pages, must(os.ReadFile(img.pages)), 0o600))
	damage(cp.pages)
	return &cp
}

// TestResumeVerifiesContents: a restored file runs only once every BO of
// the checkpoint is loaded and matches the checksums recorded at dump;
// otherwise resuming the task fails naming the BO and the pages file and
// the file stays frozen until the aborted session destroys it. Contents
// known to be unusable when the file is claimed (never handed over) fail
// the claim itself.
func TestResumeVerifiesContents(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	img, ino, want, big := contentsImage(t, env, c)
	backToBaseline(t, env.Kernel, base)

	flip := func(off int64) func(string) {
		return func(path string) {
			f := must(os.OpenFile(path, os.O_RDWR, 0))
			defer f.Close()
			b := []byte{0}
			must(f.ReadAt(b, off))
			b[0] ^= 0x40
			must(f.WriteAt(b, off))
		}
	}
	bigOff := int64(img.offsets[big])
	cases := []struct {
		name       string
		img        *image
		edit       func(req *uapi.SessionOpenRequest)
		noLoad     bool
		openFails  bool // the request itself is refused
		claimFails bool // known before the claim: it must fail
		want       []string
	}{
		{name: "flipped byte", img: withPages(t, img, flip(bigOff+5<<20)),
			want: []string{"BO " + itoa(big) + " (6291456 bytes at offset", "of pages)", "does not match the checksum recorded at dump"}},
		{name: "truncated", img: withPages(t, img, func(p string) { ok(t, os.Truncate(p, bigOff+1<<20)) }),
			want: []string{"BO " + itoa(big), "short contents"}},
		{name: "empty checksum", img: img, edit: func(req *uapi.SessionOpenRequest) {
			req.PagesFiles[0].Chunks[len(req.PagesFiles[0].Chunks)-1].Checksum = nil
		}, openFails: true, want: []string{"pages chunk [", "a checksum of 0 bytes, want 16 (xxh3-128): its bytes could not be checked"}},
		{name: "gap", img: img, edit: func(req *uapi.SessionOpenRequest) {
			cs := req.PagesFiles[0].Chunks
			req.PagesFiles[0].Chunks = append(cs[:1], cs[2:]...)
		}, openFails: true, want: []string{"are covered by no checksummed chunk of pages"}},
		{name: "never loaded", img: img, noLoad: true, claimFails: true, want: []string{"were never loaded", "of pages)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.img.sessionRequest()
			if tc.edit != nil {
				// The request shares chunks with the image: edit copies.
				pf := &uapi.PagesFile{Name: "pages"}
				for _, ch := range req.PagesFiles[0].Chunks {
					pf.Chunks = append(pf.Chunks, proto.Clone(ch).(*uapi.ContentChunk))
				}
				req.PagesFiles[0] = pf
				tc.edit(req)
			}
			rep, err := c.OpenSession(req)
			if tc.openFails {
				// Refused whole, before anything was created.
				if err == nil || !errors.Is(err, syscall.EINVAL) {
					t.Fatalf("session of a bad request: %v", err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("SESSION_OPEN error %q lacks %q", err, w)
					}
				}
				backToBaseline(t, env.Kernel, base)
				return
			}
			ok(t, err)
			if !tc.noLoad {
				f := must(os.Open(tc.img.pages))
				ok(t, c.LoadPages(rep.Token, 0, f))
				f.Close()
			}
			s := &session{t: t, env: env, c: c, img: tc.img, token: rep.Token}
			// The failure shows at the first point it is known: the
			// claim if the damage was found before it, else the resume.
			fd, err := s.claimRaw(ino)
			if tc.claimFails && err == nil {
				t.Fatal("claim of contents never loaded succeeded")
			}
			if err == nil {
				d := libdrm.FromFD(fd)
				defer d.Close()
				// A task that claimed nothing (criu asks for the root
				// task first, GPU or not) learns of the damage too.
				if err := c.ResumeTask(rep.Token, 1, 20*time.Second); err == nil || errors.Is(err, syscall.ESRCH) {
					t.Fatalf("resume of a task without files on damaged contents: %v", err)
				}
				err = c.ResumeTask(rep.Token, os.Getpid(), 20*time.Second)
				if err == nil {
					t.Fatal("resume on damaged contents succeeded")
				}
				if f := debugFile(t, env, c, d); !f.Paused {
					t.Error("the file on damaged contents is not paused")
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("claim error %q lacks %q", err, w)
				}
			}
			s.close(true)
			backToBaseline(t, env.Kernel, base)
		})
	}

	// The undamaged image restores bit for bit.
	s := openSession(t, env, c, img)
	d := s.claim(ino)
	s.resume()
	s.close(false)
	for h, w := range want {
		if got := readBO(t, d, h, len(w)); !bytes.Equal(got, w) {
			t.Fatalf("BO handle %d differs after restore", h)
		}
	}
}

// TestEveryChecksumRoundTrips: contents checksummed with each algorithm
// restore bit for bit when the restore names it; named as another
// algorithm, or an unknown one, the session is refused before anything
// is created; CHECKPOINT_BOS refuses an unknown algorithm.
func TestEveryChecksumRoundTrips(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	for _, alg := range uapi.Checksums {
		t.Run(alg.String(), func(t *testing.T) {
			d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
			want := map[uint32][]byte{}
			for i, size := range []int{4096, 6 << 20} {
				h := must(d.BOCreate(uint64(size), gtt, 0, 0))
				want[h] = randomBytes(size, uint64(i)+100)
				ok(t, d.Write(h, 0, want[h]))
			}
			ino := inode(t, d.FD())
			img, ids := checkpointWith(t, c, []*libdrm.Device{d}, nil, alg)
			for _, ch := range img.chunks {
				if len(ch.Checksum) != alg.Size() {
					t.Fatalf("a chunk's checksum has %d bytes, %v has %d", len(ch.Checksum), alg, alg.Size())
				}
			}
			kill(t, c, ids, []*libdrm.Device{d}, nil)

			for _, other := range uapi.Checksums {
				if other == alg {
					continue
				}
				req := img.sessionRequest()
				req.Checksum = other.String()
				if _, err := c.OpenSession(req); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "want "+strconv.Itoa(other.Size())+" ("+other.String()+")") {
					t.Errorf("a %v checkpoint opened as %v: %v", alg, other, err)
				}
			}
			req := img.sessionRequest()
			req.Checksum = "md5"
			if _, err := c.OpenSession(req); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), `contents checksum: unknown checksum algorithm "md5"`) {
				t.Errorf("a session with checksum md5: %v", err)
			}

			s := openSession(t, env, c, img)
			rd := s.claim(ino)
			s.resume()
			s.close(false)
			for h, w := range want {
				if got := readBO(t, rd, h, len(w)); !bytes.Equal(got, w) {
					t.Fatalf("BO handle %d differs after a restore checksummed with %v", h, alg)
				}
			}
			rd.Close()
		})
	}
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	must(d.BOCreate(4096, gtt, 0, 0))
	id := fileID(t, c, d)
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	var bos []uint64
	for _, b := range must(c.CheckpointFile(id)).Bos {
		bos = append(bos, b.BoId)
	}
	f := must(os.Create(filepath.Join(t.TempDir(), "pages")))
	defer f.Close()
	if _, err := checkpointInto(c, bos, f, uapi.Checksum(99)); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), `unknown checksum algorithm "checksum(99)"`) {
		t.Errorf("CHECKPOINT_BOS with an unknown checksum: %v", err)
	}
	if _, err := c.ChecksumBOs(bos, uapi.Checksum(99)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("CHECKPOINT_BOS (checksum only) with an unknown checksum: %v", err)
	}
	kill(t, c, []uint64{id}, []*libdrm.Device{d}, nil)
	backToBaseline(t, env.Kernel, base)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// TestClaimWhileLoading: a claim sent right after the loading started,
// while the loader is still at it in the background, succeeds at once, and
// resuming the task waits for the contents.
func TestClaimWhileLoading(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	img, ino, want, _ := contentsImage(t, env, c)
	rep := must(c.OpenSession(img.sessionRequest()))
	s := &session{t: t, env: env, c: c, img: img, token: rep.Token}
	f := must(os.Open(img.pages))
	ok(t, c.LoadPages(rep.Token, 0, f))
	f.Close()
	d := s.claim(ino)
	s.resume()
	s.close(false)
	for h, w := range want {
		if got := readBO(t, d, h, len(w)); !bytes.Equal(got, w) {
			t.Fatalf("BO handle %d differs after restore", h)
		}
	}
}

// TestManyBOsThroughTheSocket: a drm file with more handles than any one
// packet holds checkpoints and restores through the control socket
// (CHECKPOINT_FILE's reply and SESSION_OPEN's request go out of line).
func TestManyBOsThroughTheSocket(t *testing.T) {
	const n = 12000
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	for i := range n {
		h := must(d.BOCreate(4096, gtt, 0, 0))
		if i%1000 == 0 {
			ok(t, d.Write(h, 0, pattern(4096, uint32(i))))
		}
	}
	ino := inode(t, d.FD())
	img, ids := checkpoint(t, c, []*libdrm.Device{d}, nil)
	if got := len(img.file(ino).Handles); got != n {
		t.Fatalf("checkpoint has %d handles, want %d", got, n)
	}
	if req := img.sessionRequest(); !oversized(t, req) {
		t.Fatal("the session request fits in a packet: the test does not test out-of-line requests")
	}
	kill(t, c, ids, []*libdrm.Device{d}, nil)
	s := openSession(t, env, c, img)
	r := s.claim(ino)
	s.resume()
	s.close(false)
	if got := len(debugFile(t, env, c, r).Handles); got != n {
		t.Fatalf("restored file has %d handles, want %d", got, n)
	}
	for i := 0; i < n; i += 1000 {
		if got := readBO(t, r, uint32(i+1), 4096); !bytes.Equal(got, pattern(4096, uint32(i))) {
			t.Fatalf("handle %d differs after restore", i+1)
		}
	}
}

func oversized(t *testing.T, req *uapi.SessionOpenRequest) bool {
	t.Helper()
	_, err := uapi.Marshal(uapi.Header{Op: uapi.OpSessionOpen}, req)
	return err != nil
}

// TestSessionCloseWhileLoading: closing (aborting) a session whose
// contents are still loading stops the loaders and frees the memory.
func TestSessionCloseWhileLoading(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	img, _, _, _ := contentsImage(t, env, c)
	for range 20 {
		rep := must(c.OpenSession(img.sessionRequest()))
		f := must(os.Open(img.pages))
		ok(t, c.LoadPages(rep.Token, 0, f))
		f.Close()
		ok(t, c.CloseSession(rep.Token, true))
	}
	backToBaseline(t, env.Kernel, base)
}

// TestCloseNeverRunsDamagedContents: a session closed as successful with
// a claimed file that no ResumeTask let run does not let it run on
// contents that fail their checksums: the file is destroyed and the close
// reports it.
func TestCloseNeverRunsDamagedContents(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	base := takeCensus(env.Kernel)
	img, ino, _, big := contentsImage(t, env, c)
	bad := withPages(t, img, func(path string) {
		f := must(os.OpenFile(path, os.O_RDWR, 0))
		defer f.Close()
		must(f.WriteAt([]byte{0xff, 0xfe}, int64(img.offsets[big])+100))
	})
	rep := must(c.OpenSession(bad.sessionRequest()))
	f := must(os.Open(bad.pages))
	ok(t, c.LoadPages(rep.Token, 0, f))
	f.Close()
	s := &session{t: t, env: env, c: c, img: bad, token: rep.Token}
	if fd, err := s.claimRaw(ino); err == nil {
		d := libdrm.FromFD(fd)
		defer d.Close()
		err := c.CloseSession(rep.Token, false)
		if err == nil || !strings.Contains(err.Error(), "unverified") {
			t.Fatalf("close with damaged contents: %v", err)
		}
		if _, err := d.BOInfo(1); err == nil {
			t.Fatal("the file on damaged contents still serves requests")
		}
	} else {
		ok(t, c.CloseSession(rep.Token, true))
	}
	backToBaseline(t, env.Kernel, base)
}

// TestCheckpointIntoSeveralFiles: CHECKPOINT_BOS writes each target's BOs
// back to back from the target's offset into its own file, the files side
// by side, and the chunks of each extent tile it and checksum its bytes;
// a BO in two targets, and targets without their files, are refused.
func TestCheckpointIntoSeveralFiles(t *testing.T) {
	env := ksimtest.Start(t, twoDevices())
	c := ctlClient(t, env)
	d := must(libdrm.Open(kernelsim.RenderNodePath(env.Dir, 128)))
	defer d.Close()
	sizes := []int{16 << 10, 6 << 20, 4096, 9 << 20, 8192}
	contents := map[uint64][]byte{}
	var ids []uint64
	for i, size := range sizes {
		h := must(d.BOCreate(uint64(size), gtt, 0, 0))
		b := randomBytes(size, uint64(i+40))
		ok(t, d.Write(h, 0, b))
		id := must(d.BOInfo(h)).BoId
		ids, contents[id] = append(ids, id), b
	}
	id := fileID(t, c, d)
	ok(t, c.Pause([]uint64{id}, 10*time.Second))
	defer c.Resume([]uint64{id})
	dir := t.TempDir()
	targets := []ctl.PagesTarget{
		{IDs: []uint64{ids[0], ids[2], ids[4]}, Offset: 0},
		{IDs: []uint64{ids[1]}, Offset: 12 << 20}, // after what an earlier request wrote
		{IDs: []uint64{ids[3]}, Offset: 4096},
	}
	for i := range targets {
		targets[i].File = must(os.Create(filepath.Join(dir, "pages-"+strconv.Itoa(i))))
		defer targets[i].File.Close()
	}
	alg := uapi.DefaultChecksum
	extents := must(c.CheckpointBOs(targets, alg))
	for i, x := range extents {
		tg := targets[i]
		file := must(os.ReadFile(tg.File.Name()))
		var want uint64
		for _, id := range tg.IDs {
			want += uint64(len(contents[id]))
		}
		if x.Size != want || uint64(len(file)) != tg.Offset+want {
			t.Fatalf("target %d: %d bytes written, file of %d bytes; want %d from offset %d", i, x.Size, len(file), want, tg.Offset)
		}
		at := tg.Offset
		for _, id := range tg.IDs {
			if !bytes.Equal(file[at:at+uint64(len(contents[id]))], contents[id]) {
				t.Errorf("target %d: BO %d not at offset %d", i, id, at)
			}
			at += uint64(len(contents[id]))
		}
		at = tg.Offset
		for j, ch := range x.Chunks {
			if ch.Offset != at || ch.Length == 0 || ch.Length > uapi.MaxContentChunk {
				t.Fatalf("target %d chunk %d: [%d, +%d), want it to start at %d", i, j, ch.Offset, ch.Length, at)
			}
			if !bytes.Equal(ch.Checksum, alg.Sum(file[ch.Offset:ch.Offset+ch.Length])) {
				t.Errorf("target %d chunk %d: checksum does not match the file's bytes", i, j)
			}
			at += ch.Length
		}
		if at != tg.Offset+want {
			t.Errorf("target %d: chunks end at %d, the extent at %d", i, at, tg.Offset+want)
		}
	}

	twice := []ctl.PagesTarget{{IDs: []uint64{ids[0]}, File: targets[0].File}, {IDs: []uint64{ids[0]}, File: targets[1].File}}
	if _, err := c.CheckpointBOs(twice, alg); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("a BO in two targets: %v", err)
	}
}
