package control

import (
	"errors"
	"net/netip"
	"reflect"
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
