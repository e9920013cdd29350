package containers

import (
	"archive/tar"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// Binary is a program of a root filesystem: the Go package Package, built
// with CGO_ENABLED=0 into /bin/Name.
type Binary struct {
	Name    string
	Package string // import path or ./relative to the module directory
}

// BuildRootfs makes dir a root filesystem that holds the binaries, built
// from the Go module in moduleDir. It holds nothing else: runc creates the
// mount points of the bundle's mounts, and static binaries need no libc or
// loader.
func BuildRootfs(moduleDir, dir string, bins ...Binary) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	for _, b := range bins {
		out := filepath.Join(dir, "bin", b.Name)
		cmd := exec.Command(goTool, "build", "-o", out, b.Package)
		cmd.Dir = moduleDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if _, err := runCmd(cmd); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
		if err := checkStatic(out); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	return nil
}

// checkStatic refuses a binary that needs a dynamic loader: in a root
// filesystem without one, exec fails with a misleading ENOENT.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it has an ELF interpreter)", path)
		}
	}
	return nil
}

// Tarball writes the root filesystem dir as an uncompressed tar archive
// (what `podman import` takes), every entry owned by root.
func Tarball(dir, dst string) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("tarball: %w", cerr)
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("%s: only directories and regular files go into a root filesystem tarball", path)
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("tarball of %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	return nil
}
