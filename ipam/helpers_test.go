package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
)

// testPorts is a small dynamic range so tests can fill it.
var testPorts = PortRange{50000, 50099}

func newMem(t testing.TB) *Allocator {
	t.Helper()
	a, err := Open(NewMemStore(), Options{DynamicPorts: testPorts})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// openBoltFast opens a bolt store without fsync (of its log or of
// bbolt), for tests that exercise logic rather than durability (the
// crash test keeps fsync on).
func openBoltFast(t testing.TB, path string) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s.db.NoSync = true
	s.log.noSync = true
	t.Cleanup(func() { s.Close() })
	return s
}

// eachStore runs f against a memory and a bolt store.
func eachStore(t *testing.T, f func(t *testing.T, s Store)) {
	t.Run("mem", func(t *testing.T) { f(t, NewMemStore()) })
	t.Run("bolt", func(t *testing.T) {
		f(t, openBoltFast(t, filepath.Join(t.TempDir(), "ipam.db")))
	})
}

func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func addNet(t testing.TB, a *Allocator, id string, subnets ...string) Network {
	t.Helper()
	n := Network{ID: id}
	for _, s := range subnets {
		n.Subnets = append(n.Subnets, Subnet{Prefix: mustPrefix(s)})
	}
	got, err := a.AddNetwork(n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func alloc(t testing.TB, a *Allocator, network, owner string, static ...netip.Addr) []netip.Addr {
	t.Helper()
	got, err := a.AllocateIPs(IPRequest{Network: network, Owner: owner, Static: static})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func allocPorts(t testing.TB, a *Allocator, req PortRequest) PortAllocation {
	t.Helper()
	got, err := a.AllocatePorts(req)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// snapshot is everything observable about an allocator and its store.
type snapshot struct {
	networks []Network
	ips      []IPAllocation
	ports    []PortAllocation
	store    map[string]string
	nextIPs  map[string][]netip.Addr
}

var allBuckets = []string{bucketMeta, bucketNetworks, bucketIPs, bucketIPCursors, bucketPorts, bucketPortCursors}

func dumpStore(t testing.TB, s Store) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := s.View(func(tx Tx) error {
		for _, b := range allBuckets {
			err := tx.ForEach(b, func(k, v []byte) error {
				out[fmt.Sprintf("%s/%x", b, k)] = fmt.Sprintf("%x", v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func takeSnapshot(t testing.TB, a *Allocator) snapshot {
	t.Helper()
	s := snapshot{networks: a.Networks(), ports: a.Ports(""), store: dumpStore(t, a.store), nextIPs: map[string][]netip.Addr{}}
	for _, n := range s.networks {
		ips, err := a.IPs(n.ID)
		if err != nil {
			t.Fatal(err)
		}
		s.ips = append(s.ips, ips...)
		// Where next-fit would go next is state too.
		a.mu.Lock()
		for _, p := range a.networks[n.ID].pools {
			next, _ := p.next()
			s.nextIPs[n.ID] = append(s.nextIPs[n.ID], next)
		}
		a.mu.Unlock()
	}
	return s
}

func sameSnapshot(t testing.TB, before, after snapshot) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("state changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// wantErr checks err wraps kind (nil kind wants no error).
func wantErr(t testing.TB, err, kind error) {
	t.Helper()
	switch {
	case kind == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case kind != nil && !errors.Is(err, kind):
		t.Fatalf("error %v, want one wrapping %q", err, kind)
	}
}
