// Package testenv builds throwaway worlds for privileged tests: network
// namespaces joined by veths and bridges, a child cgroup v2 for socket
// hooks and a private bpffs directory. Everything is named uniquely and
// removed by t.Cleanup, also when the test fails; nothing touches the
// host's own interfaces, routes, firewall or root cgroup.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
)

// RequirePrivileges skips the test unless it runs as root on a host with
// bpffs and cgroup v2 and the tools the worlds are built with.
func RequirePrivileges(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: run 'sudo make test' (builds network namespaces and loads BPF)")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: run 'make deps'", tool)
		}
	}
	if _, err := loader.CgroupV2Root(); err != nil {
		t.Skipf("needs cgroup v2: %v", err)
	}
}

// UniqueID is short enough to fit interface names (15 bytes) with a prefix.
func UniqueID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Run runs a command and fails the test with its output when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// PinDir returns a fresh directory on bpffs; its pins and attachments are
// removed at cleanup.
func PinDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", "pontoon-test-"+UniqueID(t))
	t.Cleanup(func() {
		// Legacy tc filters live in the test's namespaces, which go with
		// them; forget them here so that Cleanup, running in this
		// process's namespace, never looks at the host's interfaces.
		os.RemoveAll(filepath.Join(dir, "progs"))
		if err := loader.Cleanup(dir); err != nil {
			t.Errorf("clean up pins: %v", err)
		}
	})
	return dir
}

// Tmpfs mounts a tmpfs with opts (such as "size=1m", for a file system
// a test fills) on a fresh directory, unmounted at cleanup.
func Tmpfs(t testing.TB, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s: %v %s", dir, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// Cgroup creates a child cgroup of the v2 root for the socket hooks, so the
// test's hooks only see the processes the test puts there.
func Cgroup(t testing.TB) string {
	t.Helper()
	root, err := loader.CgroupV2Root()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "pontoon-test-"+UniqueID(t))
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		// Helper processes have exited by now; a cgroup with none left
		// can be removed, and its BPF links detach with it.
		if err := unix.Rmdir(path); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("remove cgroup %s: %v", path, err)
		}
	})
	return path
}

// Netns is a named network namespace (ip netns add).
type Netns struct {
	Name string
}

// NewNetns creates a namespace with its loopback up.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	n := &Netns{Name: name}
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// Path is the namespace's bind mount, usable with setns(2) and nsenter.
func (n *Netns) Path() string { return filepath.Join("/run/netns", n.Name) }

// IP runs an ip(8) command inside the namespace.
func (n *Netns) IP(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// TryIP runs an ip(8) command inside the namespace and returns its error
// instead of failing the test: for polling a device that comes and goes.
func (n *Netns) TryIP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Exec runs any command inside the namespace.
func (n *Netns) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// Sysctl sets a sysctl of the namespace (net.* ones are per namespace).
func (n *Netns) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.Exec(t, "sysctl", "-qw", key+"="+value)
}

// Do runs fn on a thread inside the namespace (loader.InNetns). Sockets
// created by fn stay in the namespace afterwards.
func (n *Netns) Do(fn func() error) error { return loader.InNetns(n.Path(), fn) }

// Veth joins two namespaces with a veth pair.
func Veth(t testing.TB, a *Netns, aName string, b *Netns, bName string) {
	t.Helper()
	a.IP(t, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.IP(t, "link", "set", aName, "up")
	b.IP(t, "link", "set", bName, "up")
}
