package bomem

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func mapFD(t *testing.T, fd int, n int) []byte {
	t.Helper()
	m, err := unix.Mmap(fd, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// dataExtents lists the data extents of [0, n) as "off+len" strings.
func dataExtents(t *testing.T, s *Shared, n uint64) []string {
	t.Helper()
	m, err := s.DataMap()
	if err != nil {
		t.Fatal(err)
	}
	return extentsOf(t, m, 0, n)
}

// extentsOf lists the extents of [off, off+n) as "d:off+len" (data) and
// "h:off+len" (hole) strings, checking that they tile the range.
func extentsOf(t *testing.T, m *DataMap, off, n uint64) []string {
	t.Helper()
	var out []string
	at := off
	err := m.Extents(off, n, func(o, l uint64, data bool) error {
		if o != at || l == 0 {
			t.Fatalf("extent %d+%d after %d", o, l, at)
		}
		at += l
		if data {
			out = append(out, "d:"+itoa(o)+"+"+itoa(l))
		} else {
			out = append(out, "h:"+itoa(o)+"+"+itoa(l))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if at != off+n {
		t.Fatalf("extents of %d+%d end at %d", off, n, at)
	}
	return out
}

// TestDataMapRanges: a range's extents, wherever it starts and ends
// against the runs of data.
func TestDataMapRanges(t *testing.T) {
	const size = 1 << 20
	src, err := Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	defer Free(src)
	for _, page := range []int{1, 2, 5, 255} {
		src[page*4096+1] = 9
	}
	s, err := NewShared("test-bo", size, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	m, err := s.DataMap()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off, n uint64
		want   string
	}{
		{0, size, "h:0+4096 d:4096+8192 h:12288+8192 d:20480+4096 h:24576+1019904 d:1044480+4096"},
		{4096, 8192, "d:4096+8192"},
		{6000, 100, "d:6000+100"},
		{8192, 12288, "d:8192+4096 h:12288+8192"},
		{12288, 4096, "h:12288+4096"},
		{30000, 4096, "h:30000+4096"},
		{1040000, 8576, "h:1040000+4480 d:1044480+4096"},
	} {
		if got := strings.Join(extentsOf(t, m, tc.off, tc.n), " "); got != tc.want {
			t.Errorf("extents of %d+%d: %s, want %s", tc.off, tc.n, got, tc.want)
		}
	}
	empty, err := NewShared("test-empty", size, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Free()
	if m, err := empty.DataMap(); err != nil || len(m.data) != 0 {
		t.Errorf("never written memory: %v %v", m, err)
	}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// TestNewSharedCopiesOnlyWrittenPages: the memfd holds what was written,
// and the pages never written (or written with zeros) stay holes.
func TestNewSharedCopiesOnlyWrittenPages(t *testing.T) {
	const size = 64 << 20
	src, err := Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	defer Free(src)
	src[5*4096+7] = 0xab
	src[6*4096] = 0xcd
	src[40<<20] = 1
	src[41<<20] = 0 // written, but zero
	s, err := NewShared("test-bo", size, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	// Reading through a mapping would allocate the holes: pread.
	back := make([]byte, size)
	if n, err := unix.Pread(s.fd, back, 0); err != nil || n != size || !bytes.Equal(back, src) {
		t.Fatalf("shared memory differs from the source (%d bytes read, %v)", n, err)
	}
	var got []string
	for _, e := range dataExtents(t, s, size) {
		if strings.HasPrefix(e, "d:") {
			got = append(got, e)
		}
	}
	want := []string{"d:20480+8192", "d:41943040+4096"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("data extents %v, want %v", got, want)
	}
}

// TestSharedIsShared: a description from Open maps the same memory, and
// nobody holding it can resize the file.
func TestSharedIsShared(t *testing.T) {
	s, err := NewShared("test-bo", 8192, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	fd, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	m := mapFD(t, fd, 8192)
	defer unix.Munmap(m)
	m[4100] = 42
	if s.Bytes()[4100] != 42 {
		t.Fatal("a client's write is not in the kernel's memory")
	}
	s.Bytes()[9] = 7
	if m[9] != 7 {
		t.Fatal("the kernel's write is not in the client's mapping")
	}
	if err := unix.Ftruncate(fd, 4096); !errors.Is(err, unix.EPERM) {
		t.Fatalf("a client shrank the BO's memfd: %v", err)
	}
	if err := unix.Ftruncate(fd, 1<<20); !errors.Is(err, unix.EPERM) {
		t.Fatalf("a client grew the BO's memfd: %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); !errors.Is(err, unix.EPERM) {
		t.Fatalf("a client sealed the BO's memfd: %v", err)
	}
}

// TestInUse follows the descriptions handed out: open, mapped only, gone.
func TestInUse(t *testing.T) {
	s, err := NewShared("test-bo", 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	inUse := func(want bool, when string) {
		t.Helper()
		got, err := s.InUse()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: InUse %v, want %v", when, got, want)
		}
	}
	inUse(false, "nothing handed out")
	fd, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	inUse(true, "a description open")
	m := mapFD(t, fd, 4096)
	unix.Close(fd)
	inUse(true, "a description mapped, its fd closed")
	unix.Munmap(m)
	inUse(false, "unmapped")
}

// TestAdoptShared takes over a memfd made elsewhere, and refuses files
// that are not BO memfds.
func TestAdoptShared(t *testing.T) {
	orig, err := NewShared("test-bo", 8192, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Free()
	orig.Bytes()[100] = 5
	fd, err := orig.Open()
	if err != nil {
		t.Fatal(err)
	}
	s, err := AdoptShared(fd, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if s.Bytes()[100] != 5 {
		t.Fatal("adopted memory lacks the contents")
	}
	s.Free()

	refuse := func(fd int, size uint64, want string) {
		t.Helper()
		if _, err := AdoptShared(fd, size); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("AdoptShared: %v, want %q", err, want)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Fatal("a refused fd was not closed")
		}
	}
	fd, _ = orig.Open()
	refuse(fd, 4096, "the file has 8192 bytes, the BO 4096")
	unsealed, err := unix.MemfdCreate("other", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	unix.Ftruncate(unsealed, 4096)
	refuse(unsealed, 4096, "seals")
	p := make([]int, 2)
	unix.Pipe(p)
	unix.Close(p[1])
	refuse(p[0], 4096, "not a regular file")
}

// TestAdoptedInUse: adopted memory tells when nobody else holds it, also
// when the file handed over is memfd_create's own description, which
// Linux leaves out of the file's writers (found by FuzzClaim: the BO of
// such memory was never freed).
func TestAdoptedInUse(t *testing.T) {
	fd, err := unix.MemfdCreate("kernelsim-bo", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	unix.Ftruncate(fd, 4096)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, SealsRequired); err != nil {
		t.Fatal(err)
	}
	s, err := AdoptShared(fd, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	if inUse, err := s.InUse(); err != nil || inUse {
		t.Fatalf("adopted memory nobody else holds: InUse %v, %v", inUse, err)
	}
	other, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	if inUse, err := s.InUse(); err != nil || !inUse {
		t.Fatalf("adopted memory with a description handed out: InUse %v, %v", inUse, err)
	}
	unix.Close(other)
	if inUse, err := s.InUse(); err != nil || inUse {
		t.Fatalf("adopted memory whose description handed out is closed: InUse %v, %v", inUse, err)
	}
}
