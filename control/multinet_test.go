package control

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// TestRecordsFromBeforeSeveralSubnetsAndEndpoints: a state file written
// before networks had several subnets and namespaces several endpoints
// reads as one subnet, and as eth0 holding the default route.
func TestRecordsFromBeforeSeveralSubnetsAndEndpoints(t *testing.T) {
	var n Network
	old := `{"name":"net","subnet":"10.77.0.0/24","gateway":"10.77.0.1","bridge":"pt-net","mtu":1500,"icc":true,"masquerade":true,"routed":false,"adopted":false}`
	if err := json.Unmarshal([]byte(old), &n); err != nil {
		t.Fatal(err)
	}
	subs := n.subnets()
	if len(subs) != 1 || subs[0].Subnet != netip.MustParsePrefix("10.77.0.0/24") || subs[0].Gateway != netip.MustParseAddr("10.77.0.1") {
		t.Errorf("old network record reads as subnets %+v", subs)
	}
	ipn := ipamNetwork(&n)
	if len(ipn.Subnets) != 1 || ipn.Subnets[0].Prefix != n.Subnet || ipn.Subnets[0].Range.IsValid() || ipn.Subnets[0].Aux != nil {
		t.Errorf("old network record gives ipam %+v", ipn)
	}
	if s, ok := n.subnetOf(netip.MustParseAddr("10.77.0.9")); !ok || s.Gateway != n.Gateway {
		t.Errorf("subnetOf an address of the old record's subnet: %+v %v", s, ok)
	}

	var e Endpoint
	oldEP := `{"name":"c1","network":"net","netns":"/run/netns/c1","netns_inode":4026532000,"host_interface":"ptv0123456789","ip":"10.77.0.2","prefix_len":24,"gateway":"10.77.0.1","mac":"02:42:0a:4d:00:02","host_mac":"02:42:0a:4d:00:99","mtu":1500}`
	if err := json.Unmarshal([]byte(oldEP), &e); err != nil {
		t.Fatal(err)
	}
	if e.ifName() != "eth0" || e.NoDefaultRoute {
		t.Errorf("old endpoint record reads as %s, no default route %v; want eth0 holding it", e.ifName(), e.NoDefaultRoute)
	}
}

// TestNewRecordFields: the new fields persist under snake_case names and
// come back as they went in.
func TestNewRecordFields(t *testing.T) {
	n := Network{
		Name: "n", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"),
		Subnets: []NetworkSubnet{
			{Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"), IPRange: netip.MustParsePrefix("10.1.0.128/25"),
				AuxAddresses: map[string]netip.Addr{"router": netip.MustParseAddr("10.1.0.2")}},
			{Subnet: netip.MustParsePrefix("10.2.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1")},
		},
	}
	e := Endpoint{Name: "c1b", IfName: "eth1", NoDefaultRoute: true}
	for _, c := range []struct {
		v    any
		keys []string
	}{{n, []string{`"subnets"`, `"ip_range"`, `"aux_addresses"`}}, {e, []string{`"ifname"`, `"no_default_route"`}}} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range c.keys {
			if !strings.Contains(string(b), key) {
				t.Errorf("%s lacks %s", b, key)
			}
		}
	}
	b, _ := json.Marshal(n)
	var back Network
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, want := ipamNetwork(&back), ipamNetwork(&n)
	if len(got.Subnets) != 2 || got.Subnets[0].Range != want.Subnets[0].Range || got.Subnets[0].Aux["router"] != want.Subnets[0].Aux["router"] || got.Subnets[1].Prefix != want.Subnets[1].Prefix {
		t.Errorf("round trip gave %+v, want %+v", got, want)
	}
}
