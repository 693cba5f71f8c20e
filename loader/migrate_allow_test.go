package loader_test

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// allowKeyV1 is struct allow_key before it had a family: IPv4 prefixes
// only, prefixlen counting the binding id's 32 bits and the prefix's.
type allowKeyV1 struct {
	Prefixlen uint32
	BindingID uint32
	Addr      [16]byte
}

// TestAllowFromUpgrade: an allow_from pin of the layout before IPv6
// prefixes is upgraded in place with its prefixes, where Load used to
// refuse it and leave `pontoon cleanup` as the only way on.
func TestAllowFromUpgrade(t *testing.T) {
	testenv.RequirePrivileges(t)
	pins := testenv.PinDir(t)
	if err := os.MkdirAll(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	obj, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		t.Fatal(err)
	}
	spec := obj.Maps["allow_from"].Copy()
	old, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.LPMTrie, KeySize: uint32(binary.Size(allowKeyV1{})), ValueSize: spec.ValueSize,
		MaxEntries: 16, Flags: unix.BPF_F_NO_PREALLOC,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	for _, e := range []struct {
		id uint32
		p  string
	}{{7, "192.0.2.0/24"}, {7, "198.51.100.9/32"}, {8, "203.0.113.0/25"}} {
		p := netip.MustParsePrefix(e.p)
		k := allowKeyV1{Prefixlen: uint32(32 + p.Bits()), BindingID: e.id}
		a4 := p.Addr().As4()
		copy(k.Addr[:], a4[:])
		if err := old.Put(k, make([]byte, spec.ValueSize)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(pins, "allow_from")
	if err := old.Pin(path); err != nil {
		t.Fatal(err)
	}
	if err := spec.Compatible(old); err == nil {
		t.Fatal("the old layout passes as this build's: the test proves nothing")
	}
	if !loader.CanUpgradeAllowFrom("allow_from", spec, old) || loader.CanUpgradeAllowFrom("ct", spec, old) {
		t.Fatal("CanUpgradeAllowFrom: want it for allow_from of the old layout only")
	}

	upgraded, err := loader.UpgradeAllowFrom(path, spec, old)
	if err != nil {
		t.Fatal(err)
	}
	defer upgraded.Close()
	got, err := maps.NewAllowFrom(upgraded).All()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32][]netip.Prefix{
		7: {netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.9/32")},
		8: {netip.MustParsePrefix("203.0.113.0/25")},
	}
	for _, ps := range got {
		slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("upgraded prefixes %v, want %v", got, want)
	}
	pinned, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if err := spec.Compatible(pinned); err != nil {
		t.Fatalf("the pin is not this build's layout after the upgrade: %v", err)
	}
	// The longest-prefix lookup the programs make finds what it found before.
	for src, allowed := range map[string]bool{"192.0.2.77": true, "198.51.100.9": true, "198.51.100.10": false} {
		k := maps.AllowFromKey{Prefixlen: 64 + 32, BindingID: 7, Family: unix.AF_INET}
		a4 := netip.MustParseAddr(src).As4()
		copy(k.Addr[:], a4[:])
		var v maps.AllowFromValue
		if err := pinned.Lookup(k, &v); (err == nil) != allowed {
			t.Errorf("binding 7 from %s: lookup err %v, want allowed=%v", src, err, allowed)
		}
	}
}
