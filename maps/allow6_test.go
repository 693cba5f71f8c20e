package maps

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// TestAllowFromFamilies: IPv4 and IPv6 prefixes of one binding are keyed
// by their family and read back as written (what a rebuild from the pins
// relies on); an IPv4 source never matches an IPv6 prefix's bits nor the
// other way round; v4-mapped and invalid prefixes are refused.
func TestAllowFromFamilies(t *testing.T) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.LPMTrie, KeySize: uint32(binary.Size(AllowFromKey{})), ValueSize: uint32(binary.Size(AllowFromValue{})),
		MaxEntries: 64, Flags: 1, // BPF_F_NO_PREALLOC, which LPM tries require
	})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	t.Cleanup(func() { m.Close() })
	a := NewAllowFrom(m)
	v4, v6 := netip.MustParsePrefix("32.1.13.184/29"), netip.MustParsePrefix("2001:db8::/32") // the same first 29 bits
	want := map[uint32][]netip.Prefix{7: {v4, v6}}
	if _, _, err := a.Sync(want); err != nil {
		t.Fatal(err)
	}
	got, err := a.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(got[7]) != 2 || !(got[7][0] == v4 && got[7][1] == v6 || got[7][0] == v6 && got[7][1] == v4) {
		t.Errorf("read back %v, want %v", got, want)
	}

	// Lookups as the datapath makes them: a full-length key of the source.
	lookup := func(src netip.Addr) bool {
		k, err := allowKey(7, netip.PrefixFrom(src, src.BitLen()))
		if err != nil {
			t.Fatal(err)
		}
		var v AllowFromValue
		return m.Lookup(k, &v) == nil
	}
	for src, in := range map[string]bool{
		"32.1.13.190": true, "32.1.14.1": false,
		"2001:db8:5::1": true, "2001:db9::1": false,
		"::2001:db8": false, // an IPv6 address whose last bits look like the IPv4 prefix: still IPv6
	} {
		if got := lookup(netip.MustParseAddr(src)); got != in {
			t.Errorf("source %s allowed %v, want %v", src, got, in)
		}
	}
	for _, bad := range []netip.Prefix{netip.MustParsePrefix("::ffff:1.2.3.0/120"), {}} {
		if err := a.Put(8, bad); err == nil {
			t.Errorf("put %s: accepted", bad)
		}
	}
}
