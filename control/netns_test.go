package control

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenNetns: only a network namespace is accepted, by what the file
// is (NS_GET_NSTYPE), not by its path.
func TestOpenNetns(t *testing.T) {
	fd, id, err := openNetns("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("own namespace: %v", err)
	}
	closeFD(fd)
	own, err := ownNetns()
	if err != nil || own != id {
		t.Errorf("identity %v, ownNetns %v (%v)", id, own, err)
	}

	regular := filepath.Join(t.TempDir(), "netns")
	os.WriteFile(regular, nil, 0o644)
	for _, c := range []struct{ path, want string }{
		{regular, "is not a network namespace"},
		{t.TempDir(), "is not a network namespace"},
		{"/proc/self/ns/uts", "is a uts namespace, not a network namespace"},
		{"/proc/self/ns/mnt", "is a mount namespace, not a network namespace"},
		{"/proc/self/ns/user", "is a user namespace, not a network namespace"},
	} {
		_, _, err := openNetns(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want an invalid-input error saying %q", c.path, err, c.want)
		}
		if err2 := CheckNetnsFile(c.path); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("%s: the CLI's check says %v, the agent's %v", c.path, err2, err)
		}
	}
	if _, _, err := openNetns("/run/netns/pontoon-no-such"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	if err := CheckNetnsFile("/run/netns/pontoon-no-such"); err != nil {
		t.Errorf("the CLI refuses a path it cannot open instead of leaving it to the agent: %v", err)
	}
}

// TestRefuseHostNetns: the agent's own namespace is refused whatever path
// names it.
func TestRefuseHostNetns(t *testing.T) {
	own, err := ownNetns()
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{netns: own}
	for _, path := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net"} {
		_, id, err := openNetns(path)
		if err != nil {
			t.Fatal(err)
		}
		err = a.refuseHostNetns(id, path)
		if err == nil || !strings.Contains(err.Error(), "the agent's own network namespace") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", path, err)
		}
	}
	other := &Agent{netns: nsID{Dev: own.Dev, Ino: own.Ino + 1}}
	init, err := statNetns("/proc/1/ns/net")
	if err == nil && init == own {
		if err := other.refuseHostNetns(own, "x"); err == nil || !strings.Contains(err.Error(), "PID 1") {
			t.Errorf("PID 1's namespace: %v", err)
		}
	} else if err := other.refuseHostNetns(own, "x"); err != nil {
		t.Errorf("a namespace that is neither the agent's nor PID 1's: %v", err)
	}
}
