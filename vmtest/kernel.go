package vmtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Kernel is one unpacked Debian kernel package in the cache.
type Kernel struct {
	Spec    string // what was asked for: "6.12" or a package name
	Package string // linux-image-6.12.117+deb12-amd64
	Release string // uname -r in the guest, the folder under lib/modules
	Root    string // where the package is unpacked
}

// Vmlinuz is the compressed kernel image qemu boots.
func (k *Kernel) Vmlinuz() string { return filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release) }

// ModulesRoot holds <Release>/ with the modules and depmod's index; the guest
// mounts it on /lib/modules.
func (k *Kernel) ModulesRoot() string { return filepath.Join(k.Root, "lib", "modules") }

func (k *Kernel) String() string { return k.Release }

// CacheDir is where kernels are kept: $PONTOON_VMTEST_CACHE, else
// pontoon-vmtest in the user's cache folder ($XDG_CACHE_HOME or ~/.cache).
func CacheDir() (string, error) {
	if d := os.Getenv("PONTOON_VMTEST_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache folder (set PONTOON_VMTEST_CACHE): %w", err)
	}
	return filepath.Join(d, "pontoon-vmtest"), nil
}

// readyFile marks a completely unpacked and indexed kernel; a fetch killed
// half-way leaves only a .fetch-* folder that the next fetch ignores.
const readyFile = ".pontoon-vmtest-ready"

// FetchKernel resolves spec to a package, downloads and unpacks it into the
// cache unless it is there already, and indexes its modules. Concurrent
// fetches (go test runs packages in parallel) serialise on a lock file.
// Progress goes to log.
func FetchKernel(ctx context.Context, spec string, log io.Writer) (*Kernel, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(cache, "kernels")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, fmt.Errorf("create kernel cache: %w", err)
	}
	unlock, err := lockFile(filepath.Join(cache, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	// Under the lock no fetch is under way: any .fetch-* folder is what a
	// killed fetch left behind, and kernels are hundreds of MiB unpacked.
	if stale, _ := filepath.Glob(filepath.Join(kdir, ".fetch-*")); len(stale) > 0 {
		for _, d := range stale {
			os.RemoveAll(d)
		}
	}

	pkg, aptOpts, err := resolveCached(ctx, cache, spec, log)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(kdir, pkg)
	if _, err := os.Stat(filepath.Join(root, readyFile)); err != nil {
		if err := unpackKernel(ctx, kdir, pkg, aptOpts, log); err != nil {
			return nil, err
		}
	}
	release, err := findRelease(root)
	if err != nil {
		return nil, err
	}
	return &Kernel{Spec: spec, Package: pkg, Release: release, Root: root}, nil
}

// resolveCached asks apt for the current package of spec and remembers the
// answer, so that a machine whose apt lists are gone (or that is offline when
// an older release's lists are due again) still finds its cached kernel. The
// apt options it returns are the ones to download the package with.
func resolveCached(ctx context.Context, cache, spec string, log io.Writer) (string, []string, error) {
	memo := filepath.Join(cache, "resolved", strings.ReplaceAll(spec, "/", "_"))
	var aptOpts []string
	var err error
	if suite := olderSuite(spec); suite != "" {
		aptOpts, err = privateApt(ctx, cache, suite, log)
	}
	var pkg string
	if err == nil {
		pkg, err = resolvePackage(ctx, aptOpts, spec)
	}
	if err == nil {
		if err := os.MkdirAll(filepath.Dir(memo), 0o755); err == nil {
			_ = os.WriteFile(memo, []byte(pkg+"\n"), 0o644)
		}
		return pkg, aptOpts, nil
	}
	if b, rerr := os.ReadFile(memo); rerr == nil {
		if p := strings.TrimSpace(string(b)); p != "" {
			if _, serr := os.Stat(filepath.Join(cache, "kernels", p, readyFile)); serr == nil {
				return p, aptOpts, nil
			}
		}
	}
	return "", nil, err
}

func unpackKernel(ctx context.Context, kdir, pkg string, aptOpts []string, log io.Writer) error {
	for _, tool := range []struct{ name, pkg string }{{"apt-get", "apt"}, {"dpkg-deb", "dpkg"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return &MissingError{Tool: tool.name, Package: tool.pkg}
		}
	}
	bb, err := findBusybox()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(kdir, ".fetch-")
	if err != nil {
		return fmt.Errorf("create download folder: %w", err)
	}
	defer os.RemoveAll(tmp)

	fmt.Fprintf(log, "vmtest: downloading %s\n", pkg)
	dl := exec.CommandContext(ctx, "apt-get", append(append([]string(nil), aptOpts...), "download", "-q", pkg)...)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s (run apt-get update?): %w\n%s", pkg, err, tail(string(out), 10))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files, want 1", pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return fmt.Errorf("unpack %s: %w\n%s", filepath.Base(debs[0]), err, tail(string(out), 10))
	}
	if err := normaliseModulesDir(root); err != nil {
		return err
	}
	release, err := findRelease(root)
	if err != nil {
		return err
	}
	// Packages ship no modules.dep (the postinst runs depmod); busybox's
	// depmod writes the text index that busybox's modprobe reads in the guest.
	if out, err := exec.CommandContext(ctx, bb, "depmod", "-b", root, release).CombinedOutput(); err != nil {
		return fmt.Errorf("index modules of %s: %w\n%s", pkg, err, tail(string(out), 10))
	}
	if err := os.WriteFile(filepath.Join(root, readyFile), []byte(pkg+"\n"), 0o644); err != nil {
		return fmt.Errorf("mark %s ready: %w", pkg, err)
	}
	final := filepath.Join(kdir, pkg)
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("remove stale %s: %w", final, err)
	}
	if err := os.Rename(root, final); err != nil {
		return fmt.Errorf("move %s into the cache: %w", pkg, err)
	}
	fmt.Fprintf(log, "vmtest: cached %s in %s\n", pkg, final)
	return nil
}

// normaliseModulesDir moves usr/lib/modules to lib/modules for packages built
// for a merged /usr, so that the rest of the code knows one layout.
func normaliseModulesDir(root string) error {
	usr := filepath.Join(root, "usr", "lib", "modules")
	if _, err := os.Stat(usr); err != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(root, "lib"), 0o755); err != nil {
		return fmt.Errorf("create lib: %w", err)
	}
	if err := os.Rename(usr, filepath.Join(root, "lib", "modules")); err != nil {
		return fmt.Errorf("move usr/lib/modules: %w", err)
	}
	return nil
}

// findRelease returns the one release folder under lib/modules.
func findRelease(root string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("read modules of %s: %w", root, err)
	}
	var rels []string
	for _, e := range ents {
		if e.IsDir() {
			rels = append(rels, e.Name())
		}
	}
	if len(rels) != 1 {
		return "", fmt.Errorf("%s has %d kernel releases under lib/modules, want 1", root, len(rels))
	}
	if _, err := os.Stat(filepath.Join(root, "boot", "vmlinuz-"+rels[0])); err != nil {
		return "", fmt.Errorf("kernel image of %s: %w", rels[0], err)
	}
	return rels[0], nil
}

// lockFile takes an exclusive flock; the kernel drops it if we die.
func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open cache lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
