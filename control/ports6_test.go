package control

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestPublishIPv6: a spec without a host IP publishes a dual-stack
// endpoint on both families under one mapping and one binding id, an IPv6
// host IP on its IPv6 address alone, 0.0.0.0 on IPv4 alone; every IPv6
// key gets an IPv6 backend; an IPv4-only endpoint gets no IPv6 host IP;
// the two halves of a wildcard mapping go together and come back from the
// map as one mapping.
func TestPublishIPv6(t *testing.T) {
	a := testAgentCT(t)
	a.st.networks["net"] = &Network{Name: "net", Subnets: []NetworkSubnet{
		{Subnet: netip.MustParsePrefix("10.88.0.0/24"), Gateway: netip.MustParseAddr("10.88.0.1")},
		{Subnet: netip.MustParsePrefix("fd00:88::/64"), Gateway: netip.MustParseAddr("fd00:88::1")},
	}, IPv6: true}
	v4, v6 := netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")
	a.st.endpoints["dual"] = &Endpoint{Name: "dual", Network: "net", IP: v4, IPv6: v6}
	a.st.endpoints["dual2"] = &Endpoint{Name: "dual2", Network: "net", IP: netip.MustParseAddr("10.88.0.4"), IPv6: netip.MustParseAddr("fd00:88::4")}
	hostV6 := netip.MustParseAddr("2001:db8::1")
	if err := maps.NewHostAddrs(a.dp.Maps.HostAddrs).Sync(map[netip.Addr]uint32{hostV6: 1}); err != nil {
		t.Fatal(err)
	}

	ms, err := a.Publish(PublishRequest{Endpoint: "dual", Specs: []string{"8080:80", "[::1]:8081:80", "[2001:db8::1]:8082:53/udp", "0.0.0.0:8083:80", "[::]:8084:80"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 5 {
		t.Fatalf("%d mappings, want 5", len(ms))
	}
	if ms[0].HostIP != netip.IPv4Unspecified() || ms[0].Backend != v4 || ms[0].Backend6 != v6 {
		t.Errorf("8080:80: host %s backend %s backend6 %s, want 0.0.0.0 to %s and %s", ms[0].HostIP, ms[0].Backend, ms[0].Backend6, v4, v6)
	}
	if ms[3].Backend6.IsValid() || ms[4].Backend != v6 {
		t.Errorf("0.0.0.0 took IPv6 (%s) or [::] not the IPv6 backend (%s)", ms[3].Backend6, ms[4].Backend)
	}
	got := bindingLines(t, a)
	want := []string{
		"0.0.0.0:8080/tcp -> 10.88.0.3:80",
		"0.0.0.0:8083/tcp -> 10.88.0.3:80",
		"[2001:db8::1]:8082/udp -> [fd00:88::3]:53",
		"[::1]:8081/tcp -> [fd00:88::3]:80",
		"[::]:8080/tcp -> [fd00:88::3]:80",
		"[::]:8084/tcp -> [fd00:88::3]:80",
	}
	if !slices.Equal(got, want) {
		t.Errorf("bindings:\n got %q\nwant %q", got, want)
	}
	all, _ := a.bindings.All()
	ids := map[string]uint32{}
	for _, b := range all {
		if b.Host.Addr().Is6() != b.Backend.Addr().Is6() {
			t.Errorf("binding %s: host and backend of different families", b)
		}
		if b.Host.Port() == 8080 {
			ids[b.Host.Addr().String()] = b.ID
		}
	}
	if ids["0.0.0.0"] != ids["::"] || ids["::"] != ms[0].ID {
		t.Errorf("the wildcard's two bindings have ids %v, want both %d", ids, ms[0].ID)
	}
	if lines := DockerLines(ms[:1]); len(lines) != 1 || lines[0] != "80/tcp -> 0.0.0.0:8080, [::]:8080" {
		t.Errorf("one line for both families: %q", lines)
	}
	for _, m := range a.st.ports {
		if err := checkMappingFamilies(m, a.st.endpoints[m.Endpoint]); err != nil {
			t.Errorf("record %s fails the integrity check: %v", portKey(m), err)
		}
	}
	bad := *ms[0]
	bad.Backend6 = v4
	if checkMappingFamilies(&bad, a.st.endpoints["dual"]) == nil {
		t.Error("a record with an IPv4 address as IPv6 backend passes the integrity check")
	}

	// A state rebuilt from the map has the same mappings.
	st := &state{networks: a.st.networks, endpoints: a.st.endpoints, ports: map[string]*PortMapping{}}
	mappingsFromBindings(st, all, &RebuildReport{})
	for k, m := range a.st.ports {
		r := st.ports[k]
		if r == nil || r.Backend != m.Backend || r.Backend6 != m.Backend6 || r.Host != m.Host || r.ID != m.ID {
			t.Errorf("rebuilt %s: %+v, want %+v", k, r, m)
		}
	}
	if len(st.ports) != len(a.st.ports) {
		t.Errorf("rebuilt %d mappings, want %d", len(st.ports), len(a.st.ports))
	}

	for _, c := range []struct {
		endpoint, spec string
		kind           error
		want           string
	}{
		{"web", "[::1]:9000:80", ErrUnsupported, "host IP ::1 is IPv6 and endpoint web has IPv4 only"},
		{"web", "[::]:9000:80", ErrUnsupported, "has IPv4 only"},
		{"dual", "[2001:db8::2]:9000:80", ErrInvalid, "2001:db8::2 is not an address of this host"},
		{"dual2", "[::]:8080:80", ErrConflict, "a mapping without a host IP holds it on [::] already"},
		{"dual2", "[2001:db8::1]:8080:80", ErrConflict, "a mapping without a host IP holds it on [::] already"},
		{"dual2", "8084:80", ErrConflict, "published on an IPv6 address already"},
		{"dual2", "8082:80/udp", ErrConflict, "published on an IPv6 address already"},
	} {
		before := bindingLines(t, a)
		_, err := a.Publish(PublishRequest{Endpoint: c.endpoint, Specs: []string{c.spec}})
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %s: %v, want one line (%v) saying %q", c.endpoint, c.spec, err, c.kind, c.want)
		}
		if after := bindingLines(t, a); !slices.Equal(before, after) {
			t.Errorf("%s %s changed the bindings: %q", c.endpoint, c.spec, after)
		}
	}
	// IPv4 alone on 0.0.0.0 leaves [::] free.
	if _, err := a.Publish(PublishRequest{Endpoint: "dual2", Specs: []string{"[::]:8083:80"}}); err != nil {
		t.Errorf("[::]:8083 beside 0.0.0.0:8083: %v", err)
	}

	gone, err := a.Unpublish(UnpublishRequest{Endpoint: "dual", Spec: "8080:80"})
	if err != nil || len(gone) != 1 {
		t.Fatalf("unpublish 8080:80: %v %v", gone, err)
	}
	for _, l := range bindingLines(t, a) {
		if strings.Contains(l, ":8080/") {
			t.Errorf("after unpublish: %s", l)
		}
	}
}

// bindingLines is the bindings map, without ids, sorted.
func bindingLines(t *testing.T, a *Agent) []string {
	t.Helper()
	all, err := a.bindings.All()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range all {
		out = append(out, b.Host.String()+"/"+b.Proto.String()+" -> "+b.Backend.String())
	}
	slices.Sort(out)
	return out
}
