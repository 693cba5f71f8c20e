package vmtest

import (
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed guest
var guestFS embed.FS

// File is a file put into the guest before its init starts, at Dst (an
// absolute path in the guest), from the host file Src or from Data.
type File struct {
	Dst  string
	Src  string
	Data []byte
	Mode fs.FileMode // 0 means 0644
}

// share is a host folder mounted read-write at the same path in the guest.
type share struct {
	Tag  string
	Path string
}

// bootModules are what stage 1 needs to mount the host root: the rest load
// on demand from the package's tree once the guest is up.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}

// guestApplets get busybox links in /run/pontoon-vmtest/bin: what the guest
// scripts use, and the module tools that read busybox depmod's index.
var guestApplets = []string{
	"sh", "ip", "hostname", "mount", "poweroff", "stty", "sync", "cat", "mkfifo", "sleep", "kill",
	"modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo",
}

const (
	modeCommand = "command"
	modeSystemd = "systemd"
	jobTTY      = "/dev/ttyS1"
)

// guestSpec is everything the initramfs carries for one run.
type guestSpec struct {
	Busybox string // host path of a static busybox
	Release string
	ModRoot string   // host path holding <Release>/, mounted on /lib/modules
	Modules []string // module files to insmod, relative to ModRoot/<Release>, in order
	Nonce   string
	Mode    string
	Shares  []share
	Files   []File
	Job     string // job.sh
	// Limits are "soft hard" pairs for ulimit, by its flag (n: open files,
	// l: locked memory in KiB), so the command inherits the host's limits
	// rather than the kernel's defaults for PID 1 (1024 open files).
	Limits map[string]string
}

// writeInitramfs writes the initramfs for spec as an uncompressed cpio:
// decompressing it would cost more than reading it under TCG.
func writeInitramfs(w io.Writer, s guestSpec) error {
	c := newCPIOWriter(w)
	for _, d := range []string{"bin", "dev", "proc", "sys", "mnt", "newroot", "pontoon", "pontoon/files", "lib", "lib/modules"} {
		c.Dir(d, 0o755)
	}
	// The kernel opens /dev/console for init's stdio before devtmpfs exists.
	c.CharDev("dev/console", 0o600, 5, 1)

	bb, err := os.ReadFile(s.Busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	c.File("bin/busybox", 0o755, bb)
	c.Symlink("bin/sh", "busybox")

	for _, name := range []string{"init.sh", "stage2.sh", "run.sh", "pontoon-vmtest.target", "pontoon-vmtest.service"} {
		b, err := guestFS.ReadFile("guest/" + name)
		if err != nil {
			return fmt.Errorf("read embedded %s: %w", name, err)
		}
		dst := "pontoon/" + name
		if name == "init.sh" {
			dst = "init"
		}
		c.File(dst, 0o755, b)
	}
	c.File("pontoon/config", 0o644, []byte(s.config()))
	c.File("pontoon/job.sh", 0o755, []byte(s.Job))

	var shares strings.Builder
	for _, sh := range s.Shares {
		if strings.ContainsAny(sh.Path, "\t\n") {
			return fmt.Errorf("cannot share %q: tabs and newlines are not supported in shared paths", sh.Path)
		}
		fmt.Fprintf(&shares, "%s\t%s\n", sh.Tag, sh.Path)
	}
	c.File("pontoon/shares", 0o644, []byte(shares.String()))

	var list strings.Builder
	for i, f := range s.Files {
		if !filepath.IsAbs(f.Dst) || strings.ContainsAny(f.Dst, "\t\n") {
			return fmt.Errorf("guest file %q: want an absolute path without tabs or newlines", f.Dst)
		}
		body := f.Data
		if f.Src != "" {
			if body, err = os.ReadFile(f.Src); err != nil {
				return fmt.Errorf("read file for the guest: %w", err)
			}
		}
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		c.File(fmt.Sprintf("pontoon/files/%d", i), mode, body)
		fmt.Fprintf(&list, "%d\t%o\t%s\n", i, mode, filepath.Clean(f.Dst))
	}
	c.File("pontoon/files.list", 0o644, []byte(list.String()))

	if err := addModules(c, s); err != nil {
		return err
	}
	return c.Close()
}

// addModules copies the boot modules to lib/modules/<release>/ at their
// relative paths, creating the folders on the way.
func addModules(c *cpioWriter, s guestSpec) error {
	base := "lib/modules/" + s.Release
	dirs := map[string]bool{base: true}
	for _, m := range s.Modules {
		for d := filepath.Dir(base + "/" + m); d != base; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents sort before their children
	for _, d := range sorted {
		c.Dir(d, 0o755)
	}
	for _, m := range s.Modules {
		b, err := os.ReadFile(filepath.Join(s.ModRoot, s.Release, m))
		if err != nil {
			return fmt.Errorf("read module: %w", err)
		}
		c.File(base+"/"+m, 0o644, b)
	}
	return nil
}

// config is sourced by the guest scripts.
func (s guestSpec) config() string {
	var b strings.Builder
	kv := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, shellQuote(v)) }
	kv("MARKER", markerWord)
	kv("NONCE", s.Nonce)
	kv("KVER", s.Release)
	kv("MODULES", strings.Join(s.Modules, " "))
	kv("MODROOT", s.ModRoot)
	kv("MODE", s.Mode)
	kv("JOBTTY", jobTTY)
	kv("GUEST_APPLETS", strings.Join(guestApplets, " "))
	flags := make([]string, 0, len(s.Limits))
	for f := range s.Limits {
		flags = append(flags, f)
	}
	sort.Strings(flags)
	var limits []string
	for _, f := range flags {
		limits = append(limits, f+":"+strings.ReplaceAll(s.Limits[f], " ", ":"))
	}
	kv("LIMITS", strings.Join(limits, " "))
	return b.String()
}

// jobScript is the shell script that runs argv in dir with exactly env,
// through the host's env(1) at envPath: Debian's static busybox prefers its
// own applets, so a bare "env" would run busybox's, and its "ip", "sh"...
func jobScript(envPath, dir string, env, argv []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cd %s || { echo %s; exit 125; }\n",
		shellQuote(dir), shellQuote("vmtest: cannot enter "+dir+" in the guest: share it with -rw"))
	b.WriteString("exec " + shellQuote(envPath) + " -i")
	for _, e := range env {
		b.WriteString(" " + shellQuote(e))
	}
	for _, a := range argv {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
