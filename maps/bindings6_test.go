package maps

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// TestBindingsIPv6: IPv6 bindings are keyed by family 10 and all sixteen
// bytes, in network byte order like IPv4 ones, loopback ones flagged
// local-only; they read back as written beside IPv4 ones, print as
// bpftool's dump lists them, and Sync prunes them like any other.
func TestBindingsIPv6(t *testing.T) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.Hash, KeySize: uint32(binary.Size(BindingKey{})), ValueSize: uint32(binary.Size(BindingValue{})), MaxEntries: 64,
	})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	t.Cleanup(func() { m.Close() })
	ap := netip.MustParseAddrPort
	want := []Binding{
		{Proto: TCP, Host: ap("0.0.0.0:8080"), Backend: ap("10.85.0.2:80"), ID: 7},
		{Proto: TCP, Host: ap("[::]:8080"), Backend: ap("[fd00:85::2]:80"), ID: 7},
		{Proto: TCP, Host: ap("[::1]:8081"), Backend: ap("[fd00:85::2]:80"), ID: 8},
		{Proto: UDP, Host: ap("[2001:db8::1]:5353"), Backend: ap("[fd00:85::2]:53"), ID: 9, Allowlist: true},
	}
	b := NewBindings(m)
	if err := b.PutBatch(want); err != nil {
		t.Fatal(err)
	}

	k := want[2].Key()
	if k.Family != familyInet6 || k.Addr != netip.IPv6Loopback().As16() || k.Port != netPort(8081) {
		t.Errorf("key of %s: %+v", want[2], k)
	}
	if got := k.String(); got != "[::1]:8081/tcp" {
		t.Errorf("key prints %q", got)
	}
	if v := want[2].value(); v.Flags&bindingLocalOnly == 0 || v.BackendAddr != netip.MustParseAddr("fd00:85::2").As16() {
		t.Errorf("[::1]'s value %s: want local-only, the IPv6 backend", v)
	}
	if v := want[1].value(); v.Flags&bindingLocalOnly != 0 {
		t.Errorf("[::]'s value %s is local-only", v)
	}
	if got := (BindingValue{BackendAddr: netip.MustParseAddr("fd00:85::2").As16(), BackendPort: netPort(80), ID: 7}).String(); got != "backend=[fd00:85::2]:80 flags=0x0 id=7" {
		t.Errorf("value prints %q", got)
	}

	got, err := b.All()
	if err != nil {
		t.Fatal(err)
	}
	sortBindings := func(bs []Binding) {
		slices.SortFunc(bs, func(x, y Binding) int { return x.Host.Compare(y.Host) })
	}
	sortBindings(got)
	sortBindings(want)
	if !slices.Equal(got, want) {
		t.Errorf("read back:\n got %v\nwant %v", got, want)
	}
	one, err := b.Lookup(UDP, ap("[2001:db8::1]:5353"))
	if err != nil || one.Backend != ap("[fd00:85::2]:53") || !one.Allowlist {
		t.Errorf("lookup: %v %v", one, err)
	}

	// An unpublish of the wildcard: both families' entries go.
	added, removed, err := b.Sync(want[2:])
	if err != nil || added != 0 || removed != 2 {
		t.Errorf("sync: added %d removed %d %v, want 0 and 2", added, removed, err)
	}
	if left, _ := b.All(); len(left) != 2 {
		t.Errorf("after sync: %v", left)
	}
}

// TestPrefilterIPv6: an IPv6 binding marks its port as an IPv4 one does
// (the port bits are per protocol, not per family), so the prefilter never
// hides it; IPv6 subnets set no IPv4 /16 bit.
func TestPrefilterIPv6(t *testing.T) {
	var bits PrefilterBits
	bits.AddBinding(Binding{Proto: TCP, Host: netip.MustParseAddrPort("[::]:8080")})
	bits.AddBinding(Binding{Proto: UDP, Host: netip.MustParseAddrPort("[::1]:5353")})
	if bits[prefilterTCPPorts+8080/64]&(1<<(8080%64)) == 0 {
		t.Error("TCP port 8080 of [::] not marked")
	}
	if bits[prefilterUDPPorts+5353/64]&(1<<(5353%64)) == 0 {
		t.Error("UDP port 5353 of [::1] not marked")
	}
	var nets PrefilterBits
	nets.AddNetwork(netip.MustParsePrefix("fd00:85::/64"))
	if nets != (PrefilterBits{}) {
		t.Error("an IPv6 subnet set prefilter bits")
	}
}

// TestPrefilterAdd: Add sets the new bits and keeps the old ones, both
// when it looks up the few words a publish touches and when it reads the
// whole map for many.
func TestPrefilterAdd(t *testing.T) {
	for _, ports := range []int{1, 3 * prefilterFewWords * 64} {
		t.Run(fmt.Sprintf("%d ports", ports), func(t *testing.T) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: prefilterWords})
			if err != nil {
				t.Skipf("needs root (CAP_BPF) to create BPF maps: %v", err)
			}
			defer m.Close()
			f := NewPrefilter(m)
			var old, add, want PrefilterBits
			old.AddBinding(Binding{Proto: TCP, Host: netip.MustParseAddrPort("0.0.0.0:80")})
			old.AddNetwork(netip.MustParsePrefix("10.88.0.0/16"))
			if err := f.Write(&old); err != nil {
				t.Fatal(err)
			}
			for p := range ports {
				add.AddBinding(Binding{Proto: UDP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(1000+p))})
			}
			want = old
			want.Or(&add)
			if err := f.Add(&add); err != nil {
				t.Fatal(err)
			}
			got, err := f.Read()
			if err != nil {
				t.Fatal(err)
			}
			if *got != want {
				t.Fatal("the map does not hold the old bits and the new ones")
			}
		})
	}
}
