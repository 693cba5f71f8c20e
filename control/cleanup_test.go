package control

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestMadeByPontoon: an alias alone proves nothing; kind and name must be
// what the agent gives the interface it names.
func TestMadeByPontoon(t *testing.T) {
	link := func(kind, name, alias string) netlink.Link {
		la := netlink.NewLinkAttrs()
		la.Name, la.Alias = name, alias
		switch kind {
		case "veth":
			return &netlink.Veth{LinkAttrs: la}
		case "bridge":
			return &netlink.Bridge{LinkAttrs: la}
		}
		return &netlink.Dummy{LinkAttrs: la}
	}
	st := &state{networks: map[string]*Network{
		"custom":  {Name: "custom", Bridge: "br-custom"},
		"adopter": {Name: "adopter", Bridge: "pt-old", Adopted: true},
	}}
	for _, c := range []struct {
		name string
		l    netlink.Link
		st   *state
		want bool
	}{
		{"endpoint veth", link("veth", hostIfName("web"), vethAlias+"web"), nil, true},
		{"veth named for another endpoint", link("veth", hostIfName("db"), vethAlias+"web"), nil, false},
		{"endpoint label on a bridge", link("bridge", hostIfName("web"), vethAlias+"web"), nil, false},
		{"endpoint label on the uplink", link("dummy", "eth0", vethAlias+"web"), nil, false},
		{"default bridge without a record", link("bridge", "pt-net", bridgeAlias+"net"), nil, true},
		{"default bridge, no record in the state", link("bridge", "pt-net", bridgeAlias+"net"), st, true},
		{"custom bridge its record names", link("bridge", "br-custom", bridgeAlias+"custom"), st, true},
		{"custom bridge without a record", link("bridge", "br-custom", bridgeAlias+"custom"), nil, false},
		{"another bridge with the label", link("bridge", "pt-custom", bridgeAlias+"custom"), st, false},
		{"bridge a network adopted", link("bridge", "pt-old", bridgeAlias+"old"), st, false},
		{"network label on a veth", link("veth", "pt-net", bridgeAlias+"net"), nil, false},
		{"unknown pontoon label", link("dummy", "d0", aliasPrefix+"something"), nil, false},
		{"endpoint veth with engine fields", link("veth", hostIfName("web"), vethAlias+"web owner=docker cid=0123 cname=web"), nil, true},
		{"default bridge with an owner", link("bridge", "pt-net", bridgeAlias+"net owner=docker"), nil, true},
		{"adopted bridge named like a default one", link("bridge", "pt-net", bridgeAlias+"net adopted"), nil, false},
		{"adopted veth", link("veth", hostIfName("web"), vethAlias+"web adopted owner=cni"), nil, false},
	} {
		ok, why := madeByPontoon(c.l, c.st)
		if ok != c.want || (!ok && why == "") {
			t.Errorf("%s: %v (%s), want %v", c.name, ok, why, c.want)
		}
	}
}

// TestLockHolder: a held state file lock is seen at once, with the pid
// holding it; a free one is left free.
func TestLockHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pontoon.db")
	if held, _, err := lockHolder(path); held || err != nil {
		t.Fatalf("missing file: held %v, %v", held, err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if held, _, err := lockHolder(path); held || err != nil {
		t.Fatalf("unlocked file: held %v, %v", held, err)
	}
	// flock locks belong to open files: a second open of the same file
	// conflicts even within this process, as bbolt's does with cleanup.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	held, pid, err := lockHolder(path)
	if !held || err != nil || pid != os.Getpid() {
		t.Errorf("locked file: held %v, pid %d (want %d), %v", held, pid, os.Getpid(), err)
	}
	// The probe left the holder's lock alone.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("the holder lost its lock: %v", err)
	}
}

func TestFlockPid(t *testing.T) {
	locks := filepath.Join(t.TempDir(), "locks")
	os.WriteFile(locks, []byte(`1: POSIX  ADVISORY  WRITE 111 fd:01:42 0 EOF
2: FLOCK  ADVISORY  WRITE 222 fd:01:43 0 EOF
3: FLOCK  ADVISORY  WRITE 333 fd:01:42 0 EOF
3: -> FLOCK  ADVISORY  WRITE 444 fd:01:42 0 EOF
`), 0o644)
	st := unix.Stat_t{Dev: unix.Mkdev(0xfd, 1), Ino: 42}
	if got := flockPid(locks, st); got != 333 {
		t.Errorf("pid %d, want 333", got)
	}
	st.Ino = 44
	if got := flockPid(locks, st); got != 0 {
		t.Errorf("pid %d for an unlisted file, want 0", got)
	}
}
