package control

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestPublishAllowFrom: --allow-from is stored with the mapping, flags its
// bindings and fills the allow_from map; unpublish takes the list away;
// a bad list is refused with nothing changed.
func TestPublishAllowFrom(t *testing.T) {
	a := testAgentCT(t)
	allow := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32")}
	ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8080:80", "9000-9001:9000-9001/udp"}, AllowFrom: []string{"203.0.113.0/24", "198.51.100.7"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !reflect.DeepEqual(m.AllowFrom, allow) {
			t.Errorf("mapping %s allows %v, want %v", portKey(m), m.AllowFrom, allow)
		}
	}
	bs, err := a.bindings.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if !b.Allowlist {
			t.Errorf("binding %s has no allowlist flag", b)
		}
	}
	got, err := maps.NewAllowFrom(a.dp.Maps.AllowFrom).All()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32][]netip.Prefix{ms[0].ID: allow, ms[1].ID: allow}
	if !samePrefixes(got, want) {
		t.Errorf("allow_from map %v, want %v", got, want)
	}
	if lines := DockerLines(ms[:1]); len(lines) != 1 || lines[0] != "80/tcp -> 0.0.0.0:8080 (allow-from 203.0.113.0/24,198.51.100.7/32)" {
		t.Errorf("docker lines %q", lines)
	}

	// A mapping published without a list stays open to all.
	open, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8081:80"}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := a.bindings.Lookup(maps.TCP, netip.MustParseAddrPort("0.0.0.0:8081")); err != nil || b.Allowlist || open[0].AllowFrom != nil {
		t.Errorf("binding without --allow-from: %+v, %v, mapping allows %v", b, err, open[0].AllowFrom)
	}

	for _, bad := range [][]string{{"2001:db8::/32"}, {"203.0.113.1/24"}, {"not-a-cidr"}, {"::ffff:1.2.3.4"}} {
		before := len(a.st.ports)
		_, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8090:80"}, AllowFrom: bad})
		if err == nil || !(errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnsupported)) {
			t.Errorf("--allow-from %v: error %v, want a refusal", bad, err)
		}
		if len(a.st.ports) != before {
			t.Errorf("--allow-from %v: a refused publish changed the mappings", bad)
		}
	}

	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "8080:80"}); err != nil {
		t.Fatal(err)
	}
	got, err = maps.NewAllowFrom(a.dp.Maps.AllowFrom).All()
	if err != nil {
		t.Fatal(err)
	}
	if want := (map[uint32][]netip.Prefix{ms[1].ID: allow}); !samePrefixes(got, want) {
		t.Errorf("after unpublish the allow_from map holds %v, want %v", got, want)
	}
}

func samePrefixes(got, want map[uint32][]netip.Prefix) bool {
	if len(got) != len(want) {
		return false
	}
	for id, ps := range want {
		set := map[netip.Prefix]bool{}
		for _, p := range got[id] {
			set[p] = true
		}
		if len(set) != len(ps) {
			return false
		}
		for _, p := range ps {
			if !set[p] {
				return false
			}
		}
	}
	return true
}

// TestPublishAllowFromIPv6: a dual-stack mapping takes a list mixing IPv4
// and IPv6 prefixes, and the allow_from map holds both under its one
// binding id; IPv6 prefixes for a mapping published on IPv4 alone, v4-mapped
// and zoned prefixes are refused with nothing changed.
func TestPublishAllowFromIPv6(t *testing.T) {
	a := testAgentCT(t)
	a.st.networks["net"] = &Network{Name: "net", Subnets: []NetworkSubnet{
		{Subnet: netip.MustParsePrefix("10.88.0.0/24"), Gateway: netip.MustParseAddr("10.88.0.1")},
		{Subnet: netip.MustParsePrefix("fd00:88::/64"), Gateway: netip.MustParseAddr("fd00:88::1")},
	}, IPv6: true}
	a.st.endpoints["dual"] = &Endpoint{Name: "dual", Network: "net", IP: netip.MustParseAddr("10.88.0.3"), IPv6: netip.MustParseAddr("fd00:88::3")}

	ms, err := a.Publish(PublishRequest{Endpoint: "dual", Specs: []string{"8080:80"}, AllowFrom: []string{"203.0.113.0/24", "2001:db8:100::/48", "2001:db8::7"}})
	if err != nil {
		t.Fatal(err)
	}
	allow := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:100::/48"), netip.MustParsePrefix("2001:db8::7/128")}
	if !reflect.DeepEqual(ms[0].AllowFrom, allow) {
		t.Errorf("mapping allows %v, want %v", ms[0].AllowFrom, allow)
	}
	for _, host := range []string{"0.0.0.0:8080", "[::]:8080"} {
		if b, err := a.bindings.Lookup(maps.TCP, netip.MustParseAddrPort(host)); err != nil || !b.Allowlist || b.ID != ms[0].ID {
			t.Errorf("binding %s: %+v, %v; want the allowlist flag under id %d", host, b, err, ms[0].ID)
		}
	}
	got, err := maps.NewAllowFrom(a.dp.Maps.AllowFrom).All()
	if err != nil {
		t.Fatal(err)
	}
	if want := (map[uint32][]netip.Prefix{ms[0].ID: allow}); !samePrefixes(got, want) {
		t.Errorf("allow_from map %v, want %v", got, want)
	}

	for _, bad := range []struct{ spec, allow string }{
		{"0.0.0.0:8090:80", "2001:db8::/32"}, // published on IPv4 alone
		{"8090:80", "::ffff:198.51.100.0/120"},
		{"8090:80", "fe80::/64%eth0"},
		{"8090:80", "fe80::1%eth0"},
		{"8090:80", "2001:db8::1/32"},
	} {
		before := len(a.st.ports)
		_, err := a.Publish(PublishRequest{Endpoint: "dual", Specs: []string{bad.spec}, AllowFrom: []string{bad.allow}})
		if err == nil || !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s --allow-from %s: error %v, want a one-line refusal", bad.spec, bad.allow, err)
		}
		if len(a.st.ports) != before {
			t.Errorf("%s --allow-from %s: a refused publish changed the mappings", bad.spec, bad.allow)
		}
	}
	if got2, _ := maps.NewAllowFrom(a.dp.Maps.AllowFrom).All(); !samePrefixes(got2, got) {
		t.Errorf("refused publishes changed the allow_from map: %v, was %v", got2, got)
	}
}
