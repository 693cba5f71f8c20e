package control

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// TestMappingsFromBindings: bindings are grouped back into the mappings
// publish made (a range is one mapping under one id), and a binding to no
// endpoint is reported, not invented.
func TestMappingsFromBindings(t *testing.T) {
	st := &state{ports: map[string]*PortMapping{}, endpoints: map[string]*Endpoint{
		"web": {Name: "web", IP: netip.MustParseAddr("10.1.0.2")},
	}, nextID: 1}
	var bs []maps.Binding
	rng, _ := maps.PortRange(maps.UDP, netip.IPv4Unspecified(), 9000, 9002, netip.MustParseAddr("10.1.0.2"), 7000, 5)
	bs = append(bs, rng...)
	one, _ := maps.PortRange(maps.TCP, netip.MustParseAddr("127.0.0.1"), 9090, 9090, netip.MustParseAddr("10.1.0.2"), 80, 2)
	bs = append(bs, one...)
	stray, _ := maps.PortRange(maps.TCP, netip.IPv4Unspecified(), 7777, 7777, netip.MustParseAddr("10.1.0.99"), 1, 9)
	bs = append(bs, stray...)
	rep := &RebuildReport{}
	mappingsFromBindings(st, bs, rep)

	want := map[string]PortMapping{
		"udp/0.0.0.0/9000": {Endpoint: "web", Proto: "udp", HostIP: netip.IPv4Unspecified(), Host: ipam.PortRange{First: 9000, Last: 9002},
			Container: ipam.PortRange{First: 7000, Last: 7002}, Backend: netip.MustParseAddr("10.1.0.2"), ID: 5},
		"tcp/127.0.0.1/9090": {Endpoint: "web", Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), Host: ipam.PortRange{First: 9090, Last: 9090},
			Container: ipam.PortRange{First: 80, Last: 80}, Backend: netip.MustParseAddr("10.1.0.2"), ID: 2},
	}
	if len(st.ports) != len(want) {
		t.Fatalf("got %d mappings, want %d: %v", len(st.ports), len(want), rep.Mappings)
	}
	for k, w := range want {
		if got := st.ports[k]; got == nil || !reflect.DeepEqual(*got, w) {
			t.Errorf("mapping %s: got %+v, want %+v", k, got, w)
		}
	}
	if st.nextID != 6 {
		t.Errorf("next binding id %d, want 6", st.nextID)
	}
	if len(rep.Lost) != 1 {
		t.Errorf("lost %v, want the one binding to no endpoint", rep.Lost)
	}
}
