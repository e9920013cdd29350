package containers

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	for _, prefix := range []string{"drmcr-TestX/sub test", "", "///", strings.Repeat("a", 100), "a.b_c-d"} {
		a, b := UniqueName(prefix), UniqueName(prefix)
		if a == b {
			t.Errorf("UniqueName(%q) gave %q twice", prefix, a)
		}
		if !valid.MatchString(a) || len(a) > 60 {
			t.Errorf("UniqueName(%q) = %q: not a valid runc and podman name of at most 60 characters", prefix, a)
		}
	}
	if got := UniqueName("drmcr-TestX/sub test"); !strings.HasPrefix(got, "drmcr-TestX-sub-test-") {
		t.Errorf("UniqueName keeps the readable part: %q", got)
	}
}

func TestWriteCriuConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "criu.conf")
	lib := filepath.Join(dir, "lib dir#1")
	if err := WriteCriuConfig(path, lib); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "lib \"" + lib + "\"\n"; string(b) != want {
		t.Errorf("config is %q, want %q", b, want)
	}
	for _, bad := range []string{`/a"b`, `/a\b`, "/a\nb"} {
		if err := WriteCriuConfig(path, bad); err == nil {
			t.Errorf("WriteCriuConfig accepted %q", bad)
		}
	}
}

func TestWriteCriuWrapper(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake criu")
	script := "#!/bin/sh\necho \"K=$DRMCR_TEST_K\"\nfor a in \"$@\"; do echo \"arg=$a\"; done\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper, err := WriteCriuWrapper(filepath.Join(dir, "bin"), fake, []string{"DRMCR_TEST_K=it's a $value"})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(wrapper) != "criu" {
		t.Errorf("wrapper is %s: podman looks for criu on PATH by that name", wrapper)
	}
	out, err := exec.Command(wrapper, "swrk", "a b", `"q"`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "K=it's a $value\narg=swrk\narg=a b\narg=\"q\"\n"
	if string(out) != want {
		t.Errorf("wrapper ran criu with\n%s\nwant\n%s", out, want)
	}
	for _, bad := range []string{"NOEQUALS", "=v", "A B=c", "A$=c"} {
		if _, err := WriteCriuWrapper(filepath.Join(dir, "bad"), fake, []string{bad}); err == nil {
			t.Errorf("WriteCriuWrapper accepted the environment entry %q", bad)
		}
	}
}

func TestTarball(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "prog"), []byte("#!x\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "rootfs.tar")
	if err := Tarball(root, dst); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s is owned by %d:%d, not root", hdr.Name, hdr.Uid, hdr.Gid)
		}
		if hdr.Name == "bin/prog" {
			if hdr.Mode&0o777 != 0o755 {
				t.Errorf("bin/prog has mode %o", hdr.Mode)
			}
			b, _ := io.ReadAll(tr)
			if string(b) != "#!x\n" {
				t.Errorf("bin/prog holds %q", b)
			}
		}
	}
	if !slices.Equal(names, []string{"bin/", "bin/prog"}) {
		t.Errorf("tarball holds %v", names)
	}
	// Anything but directories and regular files is refused.
	if err := os.Symlink("prog", filepath.Join(root, "bin", "link")); err != nil {
		t.Fatal(err)
	}
	if err := Tarball(root, dst); err == nil {
		t.Error("Tarball accepted a symbolic link")
	}
}

func TestBuildRootfsIsStatic(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	module := filepath.Dir(filepath.Dir(wd))
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := BuildRootfs(module, root, Binary{Name: "counter", Package: "./internal/containers/counter"}); err != nil {
		t.Fatal(err)
	}
	if err := checkStatic(filepath.Join(root, "bin", "counter")); err != nil {
		t.Error(err)
	}
	// Debian's sh is dynamically linked: refused.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStatic(sh); err == nil {
		t.Errorf("checkStatic accepted %s, which is dynamically linked", sh)
	}
}

func TestNewBundle(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		// not skipped: `make containers` provides runc
		t.Fatalf("runc missing (run `make containers`): %v", err)
	}
	dir := filepath.Join(t.TempDir(), "bundle")
	b, err := NewBundle(runc, dir, "rootfs", "/bin/counter", "-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	b.Bind("/host/run", "/run/kernelsim")
	b.Annotate(CriuConfigAnnotation, "/etc/x.conf")
	b.Setenv("A=1", "PATH=/bin")
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	var ns []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.NetworkNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace} {
		if !slices.Contains(ns, want) {
			t.Errorf("the default spec's %s namespace is gone: %v", want, ns)
		}
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts["/dev"]; m.Type != "tmpfs" {
		t.Errorf("/dev is %+v, not the default tmpfs", m)
	}
	if _, ok := mounts["/sys/fs/cgroup"]; !ok {
		t.Error("the default cgroup mount is gone")
	}
	if m := mounts["/run/kernelsim"]; m.Source != "/host/run" || m.Type != "bind" {
		t.Errorf("bind mount is %+v", m)
	}
	if !filepath.IsAbs(s.Root.Path) || filepath.Base(s.Root.Path) != "rootfs" {
		t.Errorf("root is %q, want an absolute rootfs", s.Root.Path)
	}
	if s.Process.Terminal || !slices.Equal(s.Process.Args, []string{"/bin/counter", "-interval", "1s"}) {
		t.Errorf("process: terminal %v, args %v", s.Process.Terminal, s.Process.Args)
	}
	if s.Annotations[CriuConfigAnnotation] != "/etc/x.conf" {
		t.Errorf("annotations: %v", s.Annotations)
	}
	var paths int
	for _, e := range s.Process.Env {
		if strings.HasPrefix(e, "PATH=") {
			paths++
			if e != "PATH=/bin" {
				t.Errorf("Setenv kept %s", e)
			}
		}
	}
	if paths != 1 || !slices.Contains(s.Process.Env, "A=1") {
		t.Errorf("env: %v", s.Process.Env)
	}
	if _, err := NewBundle(runc, dir, "rootfs"); err == nil {
		t.Error("NewBundle accepted a bundle without process arguments")
	}
}

func TestOutput(t *testing.T) {
	in, out, o, release, err := stdio()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "read x; echo \"read:$?\"; echo one; echo two >&2; printf partial")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	release()
	if !o.WaitClosed(10 * time.Second) {
		t.Fatal("output not closed after its last writer exited")
	}
	// stdin has no writer: read sees end of file (status 1).
	if got := o.Lines(); !slices.Equal(got, []string{"read:1", "one", "two"}) {
		t.Errorf("lines %q", got)
	}
	if !strings.HasSuffix(o.String(), "partial") {
		t.Errorf("output %q", o.String())
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:           "/a/b",
		`/a\040b`:        "/a b",
		`/t\011\134x`:    "/t\t\\x",
		`/bad\08`:        `/bad\08`,
		`/end\04`:        `/end\04`,
		`/x\012y\040\04`: "/x\ny \\04",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
