// Package images is the versioned format of the DRM plugin's images: the
// files it writes into CRIU's images directory next to CRIU's own (see
// images.proto for the list). Reading checks each image's version.
package images

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Version is the image format this code writes and reads. Version 1 kept
// two files per BO; version 2 packs contents into pages files with an
// index (drm-bo-index.img).
const Version = 2

// File names.
const (
	InventoryName = "drm-inventory.img"
	IndexName     = "drm-bo-index.img"
	filePrefix    = "drm-file-"
	dmabufPrefix  = "drm-dmabuf-"
	pagesPrefix   = "drm-pages-"
	imgSuffix     = ".img"
)

// FileName is the image of the drm file with client inode ino.
func FileName(ino uint64) string { return filePrefix + strconv.FormatUint(ino, 10) + imgSuffix }

// DmaBufName is the image of the dma-buf with inode ino.
func DmaBufName(ino uint64) string { return dmabufPrefix + strconv.FormatUint(ino, 10) + imgSuffix }

// PagesName is the n-th pages file (from 1).
func PagesName(n int) string { return pagesPrefix + strconv.Itoa(n) + imgSuffix }

// ErrNotDRMImage is returned for a file name that is not one of ours.
var ErrNotDRMImage = errors.New("not a DRM plugin image")

// Kind is what an image file holds, from its name.
type Kind int

const (
	KindUnknown Kind = iota
	KindInventory
	KindFile
	KindDmaBuf
	KindIndex
	KindPages
)

// KindOf classifies an image by its base name.
func KindOf(name string) Kind {
	base := filepath.Base(name)
	numbered := func(prefix string) bool {
		if !strings.HasPrefix(base, prefix) || !strings.HasSuffix(base, imgSuffix) {
			return false
		}
		_, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(base, prefix), imgSuffix), 10, 64)
		return err == nil
	}
	switch {
	case base == InventoryName:
		return KindInventory
	case base == IndexName:
		return KindIndex
	case numbered(filePrefix):
		return KindFile
	case numbered(dmabufPrefix):
		return KindDmaBuf
	case numbered(pagesPrefix):
		return KindPages
	}
	return KindUnknown
}

// NewMessage returns an empty message of the kind, or an error for kinds
// that are not single protobuf messages (the index is a stream of them,
// pages files are raw).
func NewMessage(k Kind) (proto.Message, error) {
	switch k {
	case KindInventory:
		return &Inventory{}, nil
	case KindFile:
		return &DrmFile{}, nil
	case KindDmaBuf:
		return &DmaBuf{}, nil
	}
	return nil, ErrNotDRMImage
}

// versioned is every image message.
type versioned interface {
	proto.Message
	GetVersion() uint32
}

// MaxMessage bounds one metadata message: an image of a drm file or
// dma-buf, the inventory, a record of the index. A drm file image takes
// about 60 bytes per handle, so this allows about a million handles in
// one drm file; the index is a stream of small records and has no limit.
const MaxMessage = 64 << 20

// Dir is an images directory, opened by fd (CRIU hands plugins one) or by
// path.
type Dir struct {
	fd int
}

// OpenDir opens an images directory by path.
func OpenDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open images directory %s: %w", path, err)
	}
	return &Dir{fd: fd}, nil
}

// DirFromFD uses an open directory fd, which stays the caller's.
func DirFromFD(fd int) *Dir { return &Dir{fd: fd} }

// Close closes a directory opened by OpenDir.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Create creates (truncating) a file in the directory.
func (d *Dir) Create(name string) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create image %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Open opens a file of the directory for reading.
func (d *Dir) Open(name string) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OpenRegular opens a regular file of the directory for reading, without
// following a symlink and without blocking on a FIFO or device: pages
// files are handed to the kernel, whose loader must not hang on one.
func (d *Dir) OpenRegular(name string) (*os.File, error) {
	if filepath.Base(name) != name || name == "." || name == ".." {
		return nil, fmt.Errorf("open image %s: not a file name of the directory", name)
	}
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = fmt.Errorf("not a regular file (mode %#o)", st.Mode)
		}
		return nil, fmt.Errorf("open image %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Write stores an image message; its version is the caller's to set.
func (d *Dir) Write(name string, m versioned) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode image %s: %w", name, err)
	}
	f, err := d.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write image %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write image %s: %w", name, err)
	}
	return nil
}

// Read loads an image message and checks its version.
func (d *Dir) Read(name string, m versioned) error {
	f, err := d.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	if st.Size() > MaxMessage {
		return fmt.Errorf("image %s: %d bytes is more than the %d a metadata image may have", name, st.Size(), MaxMessage)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return fmt.Errorf("read image %s: %w", name, err)
	}
	return Decode(name, data, m)
}

// Decode parses an image message and checks its version.
func Decode(name string, data []byte, m versioned) error {
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	if v := m.GetVersion(); v != Version {
		return fmt.Errorf("image %s: format version %d, this plugin reads version %d", name, v, Version)
	}
	return nil
}

// Names lists the DRM plugin's images in the directory, sorted.
func (d *Dir) Names() ([]string, error) {
	f, err := d.Open(".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []string
	for _, n := range names {
		if KindOf(n) != KindUnknown {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}
