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

// Version is the image format this code writes. Version 1 kept two files
// per BO; version 2 packs contents into pages files with an index
// (drm-bo-index.img); version 3 seals every image in the inventory and
// records the dump's devices and fds in flight; version 4 records any
// number of requests and replies in flight per connection
// (PendingIO.requests, unread_replies) and reply channels
// (drm-channel-<inode>.img), which a reader of version 3 would silently
// drop.
const Version = 4

// MinVersion is the oldest image format this code reads: a version 3
// image reads as a version 4 one without reply channels and with at most
// one request and one reply in flight per drm file.
const MinVersion = 3

// MappedBoVersion is the version of the BO index records of BOs whose
// memory criu saves (Bo.cpu_mapped): above every version a plugin that
// predates them reads (4), so that such a plugin, which would look for
// their contents in a pages file, refuses them.
const MappedBoVersion = 5

// File names.
const (
	InventoryName = "drm-inventory.img"
	IndexName     = "drm-bo-index.img"
	filePrefix    = "drm-file-"
	channelPrefix = "drm-channel-"
	dmabufPrefix  = "drm-dmabuf-"
	pagesPrefix   = "drm-pages-"
	imgSuffix     = ".img"
)

// FileName is the image of the drm file with client inode ino.
func FileName(ino uint64) string { return filePrefix + strconv.FormatUint(ino, 10) + imgSuffix }

// ChannelName is the image of the reply channel with client inode ino.
func ChannelName(ino uint64) string {
	return channelPrefix + strconv.FormatUint(ino, 10) + imgSuffix
}

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
	KindChannel
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
	case numbered(channelPrefix):
		return KindChannel
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
	case KindChannel:
		return &DrmChannel{}, nil
	}
	return nil, ErrNotDRMImage
}

// Versioned is every image message.
type Versioned interface {
	proto.Message
	GetVersion() uint32
}

// MaxMessage bounds one metadata message: an image of a drm file or
// dma-buf, the inventory, a record of the index. A drm file image takes
// about 60 bytes per handle, so this allows about a million handles in
// one drm file; the index is a stream of small records and has no limit.
const MaxMessage = 64 << 20

// Dir is an images directory, opened by fd (CRIU hands plugins one) or by
// path. Every image is opened inside it (see OpenRegular).
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

// checkName refuses anything but a plain file name: an image never lives
// outside the directory.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q is not a file name of the images directory", name)
	}
	return nil
}

// openBeneath opens name in the directory with openat2: beneath it and
// through no symlink (RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS), or, on a
// kernel without openat2, with O_NOFOLLOW on the plain name.
func (d *Dir) openBeneath(name string, flags int, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	for {
		fd, err := unix.Openat2(d.fd, name, &unix.OpenHow{
			Flags:   uint64(flags),
			Mode:    uint64(mode),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch err {
		case unix.EINTR, unix.EAGAIN: // EAGAIN: a concurrent rename; retry
			continue
		case unix.ENOSYS:
			for {
				fd, err = unix.Openat(d.fd, name, flags, mode)
				if err != unix.EINTR {
					return fd, err
				}
			}
		}
		return fd, err
	}
}

// Create creates (truncating) a regular file in the directory. It follows
// no symlink and does not block on a FIFO planted under the name.
func (d *Dir) Create(name string) (*os.File, error) {
	fd, err := d.openBeneath(name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NONBLOCK, 0o600)
	if err == nil {
		err = isRegular(fd)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create image %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OpenRegular opens an image for reading: only inside the directory,
// through no symlink, only a regular file, and never with an open that
// can block or act on a device. It looks first (O_PATH), then opens the
// same file with O_NONBLOCK: a FIFO or device put in an image's place is
// refused without being opened, so it cannot hang criu or a tool. Every
// image the plugin and drmcrit read is opened this way.
func (d *Dir) OpenRegular(name string) (*os.File, error) {
	f, err := d.openRegular(name)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", name, err)
	}
	return f, nil
}

func (d *Dir) openRegular(name string) (*os.File, error) {
	pfd, err := d.openBeneath(name, unix.O_PATH, 0)
	if err != nil {
		return nil, err
	}
	var before unix.Stat_t
	err = unix.Fstat(pfd, &before)
	unix.Close(pfd)
	if err != nil {
		return nil, err
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, notRegular(before.Mode)
	}
	fd, err := d.openBeneath(name, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Dev != before.Dev || st.Ino != before.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, errors.New("replaced while being opened")
	}
	return os.NewFile(uintptr(fd), name), nil
}

func isRegular(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return notRegular(st.Mode)
	}
	return nil
}

func notRegular(mode uint32) error {
	what := map[uint32]string{
		unix.S_IFIFO: "a FIFO", unix.S_IFCHR: "a character device", unix.S_IFBLK: "a block device",
		unix.S_IFDIR: "a directory", unix.S_IFSOCK: "a socket", unix.S_IFLNK: "a symlink",
	}[mode&unix.S_IFMT]
	if what == "" {
		what = fmt.Sprintf("of mode %#o", mode)
	}
	return fmt.Errorf("not a regular file (%s)", what)
}

// Write stores an image message; its version is the caller's to set.
func (d *Dir) Write(name string, m Versioned) error {
	_, err := d.WriteImage(name, m)
	return err
}

// WriteImage stores an image message and returns its seal, which the
// inventory records.
func (d *Dir) WriteImage(name string, m Versioned) (*ImageSeal, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode image %s: %w", name, err)
	}
	if err := d.WriteBytes(name, data); err != nil {
		return nil, err
	}
	return SealOf(name, data), nil
}

// WriteBytes stores an image's bytes.
func (d *Dir) WriteBytes(name string, data []byte) error {
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

// ReadBytes reads a metadata image whole: at most MaxMessage bytes.
func (d *Dir) ReadBytes(name string) ([]byte, error) {
	f, err := d.OpenRegular(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	if st.Size() > MaxMessage {
		return nil, fmt.Errorf("image %s: %d bytes is more than the %d a metadata image may have", name, st.Size(), MaxMessage)
	}
	data := make([]byte, st.Size())
	if n, err := f.ReadAt(data, 0); n < len(data) {
		return nil, fmt.Errorf("read image %s: %w", name, err)
	}
	return data, nil
}

// Read loads an image message and checks its version, not its seal: for
// tools that edit images. A restore reads with ReadSealed.
func (d *Dir) Read(name string, m Versioned) error {
	data, err := d.ReadBytes(name)
	if err != nil {
		return err
	}
	return Decode(name, data, m)
}

// ReadSealed loads an image message, checks it against the seal the
// inventory recorded for it (nil: none) and checks its version. A seal
// that does not match, or none, is a problem, not an error: the message
// is still decoded, so that drmcrit can tell what else is wrong with it;
// a restore refuses the image either way.
func (d *Dir) ReadSealed(name string, seal *ImageSeal, m Versioned) ([]Problem, error) {
	data, err := d.ReadBytes(name)
	if err != nil {
		return nil, err
	}
	probs := CheckSeal(name, seal, uint64(len(data)), Digest(data))
	return probs, Decode(name, data, m)
}

// Decode parses an image message and checks its version.
func Decode(name string, data []byte, m Versioned) error {
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	if v := m.GetVersion(); v < MinVersion || v > Version {
		return fmt.Errorf("image %s: format version %d, this plugin reads versions %d to %d", name, v, MinVersion, Version)
	}
	return nil
}

// Names lists the DRM plugin's images in the directory, sorted.
func (d *Dir) Names() ([]string, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	f := os.NewFile(uintptr(fd), ".")
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
