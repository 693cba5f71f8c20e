package control

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// TestDatapathNetworksNAT66: --masquerade is IPv4's and also keeps IPv6
// sources in; --masquerade6 translates IPv6 (MASQUERADE with NAT66) and
// leaves IPv4 alone; the flags come back from the map as they went in.
func TestDatapathNetworksNAT66(t *testing.T) {
	subnets := []NetworkSubnet{
		{Subnet: netip.MustParsePrefix("10.66.0.0/24"), Gateway: netip.MustParseAddr("10.66.0.1")},
		{Subnet: netip.MustParsePrefix("fd00:66::/64"), Gateway: netip.MustParseAddr("fd00:66::1")},
	}
	type flags struct{ masq4, masq6, nat66 bool }
	for _, c := range []struct {
		name        string
		masq, masq6 bool
		want        flags
	}{
		{"masquerade", true, false, flags{true, true, false}},
		{"masquerade and masquerade6", true, true, flags{true, true, true}},
		{"masquerade6 alone", false, true, flags{false, true, true}},
		{"neither", false, false, flags{false, false, false}},
	} {
		n := &Network{Name: "nat66-" + c.name, Subnets: subnets, IPv6: true, ICC: true, Masquerade: c.masq, Masquerade6: c.masq6}
		nws, _ := datapathNetworks(n)
		if len(nws) != 2 {
			t.Fatalf("%s: %d entries, want 2", c.name, len(nws))
		}
		got := flags{nws[0].Masquerade, nws[1].Masquerade, nws[1].NAT66}
		if nws[0].NAT66 || got != c.want {
			t.Errorf("%s: IPv4 masquerade %v nat66 %v, IPv6 masquerade %v nat66 %v; want %+v", c.name, nws[0].Masquerade, nws[0].NAT66, got.masq6, got.nat66, c.want)
		}

		// A rebuild from the pinned map recovers both flags.
		m := newDatapathMap(t, "networks")
		for _, nw := range nws {
			if err := maps.NewNetworks(m).Put(nw); err != nil {
				t.Fatal(err)
			}
		}
		pm := newPinnedMaps()
		pm.readNetworks(m)
		back, err := networkFromBridge(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "pt-x", MTU: 1500}}, n.Name, pm)
		if err != nil {
			t.Fatal(err)
		}
		if back.Masquerade != c.masq || back.Masquerade6 != c.masq6 || !back.IPv6 {
			t.Errorf("%s: rebuilt masquerade %v masquerade6 %v ipv6 %v, want %v %v true", c.name, back.Masquerade, back.Masquerade6, back.IPv6, c.masq, c.masq6)
		}
	}
}

// TestMasquerade6Refusals: --masquerade6 without an IPv6 subnet or with
// --routed is refused in one line that says what to do, and leaves no
// record, no ipam network and no state behind.
func TestMasquerade6Refusals(t *testing.T) {
	a := testAgent(t)
	for _, c := range []struct {
		req  NetworkCreate
		want string
	}{
		{NetworkCreate{Name: "v4", Subnet: "10.66.0.0/24", Masquerade6: true}, "--masquerade6 needs an IPv6 subnet: add --ipv6 or --subnet6"},
		{NetworkCreate{Name: "v4b", Subnets: []string{"10.66.0.0/24", "10.67.0.0/24"}, Masquerade6: true}, "needs an IPv6 subnet"},
		{NetworkCreate{Name: "routed", Subnet: "10.66.0.0/24", Subnet6: "fd00:66::/64", Routed: true, Masquerade6: true}, "--routed and --masquerade6 exclude each other"},
	} {
		_, err := a.CreateNetwork(c.req)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", c.req.Name)
			continue
		case !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n"):
			t.Errorf("%s:\n got %q\nwant one line with %q", c.req.Name, err, c.want)
		case !errors.Is(err, ErrInvalid):
			t.Errorf("%s: %v is not ErrInvalid", c.req.Name, err)
		}
		if len(a.st.networks) != 0 {
			t.Errorf("%s: %d networks in the state after a refusal", c.req.Name, len(a.st.networks))
		}
		var records int
		if err := a.store.View(func(tx ipam.Tx) error {
			return tx.ForEach(bucketNetworks, func(k, v []byte) error { records++; return nil })
		}); err != nil {
			t.Fatal(err)
		}
		if records != 0 {
			t.Errorf("%s: %d network records after a refusal", c.req.Name, records)
		}
		if ns := a.ipam.Networks(); len(ns) != 0 {
			t.Errorf("%s: ipam holds %d networks after a refusal", c.req.Name, len(ns))
		}
	}
}
