package maps

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// putFlow writes a DNAT flow's entry as the datapath keys it: by its reply
// tuple, backend -> client, with the address the client dialled.
func putFlow(t *testing.T, m *ebpf.Map, proto Proto, dialled, backend, client string, id uint32) {
	t.Helper()
	d, b, c := netip.MustParseAddrPort(dialled), netip.MustParseAddrPort(backend), netip.MustParseAddrPort(client)
	family, saddr := rawAddr(b.Addr())
	_, daddr := rawAddr(c.Addr())
	_, nat := rawAddr(d.Addr())
	k := CTKey{Family: family, Proto: proto, Sport: netPort(b.Port()), Dport: netPort(c.Port()), Saddr: saddr, Daddr: daddr}
	v := CTValue{NatAddr: nat, NatPort: netPort(d.Port()), Flags: CTDNATReply, BindingID: id}
	if err := m.Put(k, v); err != nil {
		t.Fatal(err)
	}
}

// TestCTDeleteUntranslated: a restart keeps the flows some binding still
// translates the same way, whatever id they carry (the kept parts of a
// split range carry the old mapping's), and forgets the rest: a binding
// gone, moved to another backend, or of the other protocol.
func TestCTDeleteUntranslated(t *testing.T) {
	tables := newCTTables(t)
	ct, newFlows := tables[0], tables[1]
	bindings := []Binding{
		{Proto: TCP, Host: netip.MustParseAddrPort("192.0.2.1:80"), Backend: netip.MustParseAddrPort("10.88.0.2:8080"), ID: 1},
		{Proto: TCP, Host: netip.MustParseAddrPort("0.0.0.0:443"), Backend: netip.MustParseAddrPort("10.88.0.3:443"), ID: 2},
		{Proto: UDP, Host: netip.MustParseAddrPort("[::]:53"), Backend: netip.MustParseAddrPort("[fd00::3]:53"), ID: 3},
		// The kept part of a split range: a new id, flows under the old.
		{Proto: TCP, Host: netip.MustParseAddrPort("0.0.0.0:9001"), Backend: netip.MustParseAddrPort("10.88.0.4:9001"), ID: 9},
	}
	const client = "198.51.100.7:40000"
	putFlow(t, ct, TCP, "192.0.2.1:80", "10.88.0.2:8080", client, 1)
	putFlow(t, newFlows, TCP, "192.0.2.1:443", "10.88.0.3:443", client, 2)
	putFlow(t, ct, UDP, "[2001:db8::1]:53", "[fd00::3]:53", "[2001:db8::7]:5000", 3)
	putFlow(t, ct, TCP, "192.0.2.1:9001", "10.88.0.4:9001", client, 8)
	// Stale: a port no longer published, a binding moved to another
	// backend, another protocol, a wildcard of the other family.
	putFlow(t, ct, TCP, "192.0.2.1:8081", "10.88.0.2:8081", client, 4)
	putFlow(t, newFlows, TCP, "192.0.2.1:80", "10.88.0.9:8080", client, 1)
	putFlow(t, ct, UDP, "192.0.2.1:443", "10.88.0.3:443", client, 2)
	putFlow(t, ct, TCP, "[2001:db8::1]:443", "[fd00::3]:443", "[2001:db8::7]:5000", 2)

	n, err := NewCT(ct, newFlows).DeleteUntranslated(bindings)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("flushed %d flows, want the 4 no binding translates", n)
	}
	left, err := NewCT(ct, newFlows).All()
	if err != nil {
		t.Fatal(err)
	}
	kept := map[uint32]bool{}
	for _, e := range left {
		kept[e.BindingID] = true
		if e.Backend.Port() == 8081 || e.Backend.Addr() == netip.MustParseAddr("10.88.0.9") ||
			(e.Proto == UDP && e.Dialled.Addr().Is4()) || (e.Proto == TCP && e.Dialled.Addr().Is6()) {
			t.Errorf("flow %+v survived though no binding translates it", e)
		}
	}
	for _, id := range []uint32{1, 2, 3, 8} {
		if !kept[id] {
			t.Errorf("the flow carrying id %d was flushed though a binding still translates it", id)
		}
	}
}
