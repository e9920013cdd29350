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

// Version is the image format this code writes and reads.
const Version = 1

// File names.
const (
	InventoryName = "drm-inventory.img"
	filePrefix    = "drm-file-"
	dmabufPrefix  = "drm-dmabuf-"
	boPrefix      = "drm-bo-"
	imgSuffix     = ".img"
	pagesSuffix   = ".pages"
)

// FileName is the image of the drm file with client inode ino.
func FileName(ino uint64) string { return filePrefix + strconv.FormatUint(ino, 10) + imgSuffix }

// DmaBufName is the image of the dma-buf with inode ino.
func DmaBufName(ino uint64) string { return dmabufPrefix + strconv.FormatUint(ino, 10) + imgSuffix }

// BoName is the image of BO id.
func BoName(id uint64) string { return boPrefix + strconv.FormatUint(id, 10) + imgSuffix }

// PagesName is the contents of BO id.
func PagesName(id uint64) string { return boPrefix + strconv.FormatUint(id, 10) + pagesSuffix }

// ErrNotDRMImage is returned for a file name that is not one of ours.
var ErrNotDRMImage = errors.New("not a DRM plugin image")

// Kind is what an image file holds, from its name.
type Kind int

const (
	KindUnknown Kind = iota
	KindInventory
	KindFile
	KindDmaBuf
	KindBo
	KindPages
)

// KindOf classifies an image by its base name.
func KindOf(name string) Kind {
	base := filepath.Base(name)
	switch {
	case base == InventoryName:
		return KindInventory
	case strings.HasPrefix(base, filePrefix) && strings.HasSuffix(base, imgSuffix):
		return KindFile
	case strings.HasPrefix(base, dmabufPrefix) && strings.HasSuffix(base, imgSuffix):
		return KindDmaBuf
	case strings.HasPrefix(base, boPrefix) && strings.HasSuffix(base, imgSuffix):
		return KindBo
	case strings.HasPrefix(base, boPrefix) && strings.HasSuffix(base, pagesSuffix):
		return KindPages
	}
	return KindUnknown
}

// NewMessage returns an empty message of the kind, or an error for kinds
// that are not protobuf images.
func NewMessage(k Kind) (proto.Message, error) {
	switch k {
	case KindInventory:
		return &Inventory{}, nil
	case KindFile:
		return &DrmFile{}, nil
	case KindDmaBuf:
		return &DmaBuf{}, nil
	case KindBo:
		return &Bo{}, nil
	}
	return nil, ErrNotDRMImage
}

// versioned is every image message.
type versioned interface {
	proto.Message
	GetVersion() uint32
}

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
	if st.Size() > 64<<20 {
		return fmt.Errorf("image %s: %d bytes is too large for a metadata image", name, st.Size())
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
