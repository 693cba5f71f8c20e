package main

import (
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
)

// TestIPv6Networks: `network create --ipv6` gives a network a unique local
// /64 (or the one given) besides its IPv4 subnet, the bridge carries the
// IPv6 gateway, listings show it, and every bad IPv6 subnet is refused with
// one line and no change.
func TestIPv6Networks(t *testing.T) {
	w := newWorld(t, 0)
	veth := "ppe" + w.id
	w.host.IP(t, "link", "add", veth, "type", "veth", "peer", "name", "ppf"+w.id)
	w.host.IP(t, "link", "set", veth, "up")
	w.host.IP(t, "-6", "addr", "add", "fd00:99::1/64", "dev", veth, "nodad")
	w.host.IP(t, "-6", "route", "add", "fd00:98::/64", "via", "fd00:99::fe", "dev", veth)
	w.startAgent()

	var picked control.NetworkInfo
	w.okJSON(&picked, "network", "create", "picked", "--ipv6")
	if !picked.IPv6 || len(picked.Subnets) != 2 || !picked.Subnets[0].Subnet.Addr().Is4() {
		t.Fatalf("network create --ipv6: %+v, want an IPv4 subnet then an IPv6 one", picked.Network)
	}
	ula := picked.Subnets[1]
	if ula.Subnet.Bits() != 64 || ula.Subnet.Addr().As16()[0] != 0xfd || ula.Gateway != ula.Subnet.Addr().Next() {
		t.Errorf("picked IPv6 subnet %s gateway %s, want a unique local /64 (fdxx::) with its first address as gateway", ula.Subnet, ula.Gateway)
	}
	if out := w.host.IP(t, "-6", "addr", "show", "dev", picked.Bridge); !strings.Contains(out, ula.Gateway.String()+"/64") {
		t.Errorf("bridge %s does not carry %s/64:\n%s", picked.Bridge, ula.Gateway, out)
	}

	var given control.NetworkInfo
	w.okJSON(&given, "network", "create", "given", "--subnet", "10.70.0.0/24", "--subnet6", "fd00:70::/64", "--gateway6", "fd00:70::fe")
	if len(given.Subnets) != 2 || given.Subnets[1].Subnet != netip.MustParsePrefix("fd00:70::/64") || given.Subnets[1].Gateway != netip.MustParseAddr("fd00:70::fe") {
		t.Errorf("given subnets %+v", given.Subnets)
	}
	var implied control.NetworkInfo
	w.okJSON(&implied, "network", "create", "implied", "--subnet", "fd00:71::/64")
	if !implied.IPv6 || len(implied.Subnets) != 2 || !implied.Subnets[0].Subnet.Addr().Is4() || implied.Subnets[1].Subnet != netip.MustParsePrefix("fd00:71::/64") {
		t.Errorf("an IPv6 --subnet alone: %+v, want a picked IPv4 subnet first and the IPv6 one", implied.Network)
	}
	if ls := w.ok("network", "ls"); !strings.Contains(ls, "fd00:70::/64") || !strings.Contains(ls, "fd00:70::fe") {
		t.Errorf("network ls shows no IPv6 subnet and gateway:\n%s", ls)
	}
	if out := w.ok("network", "inspect", "given"); !strings.Contains(out, "fd00:70::/64") || !strings.Contains(out, "ipv6:") {
		t.Errorf("network inspect:\n%s", out)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"wider than a /64", []string{"--subnet6", "fd00:72::/48"}, "subnet fd00:72::/48 is wider than a /64, the size of one IPv6 link; give a /64"},
		{"narrower than a /120", []string{"--subnet6", "fd00:72::/124"}, "narrower than a /120"},
		{"link-local", []string{"--subnet6", "fe80::/64"}, "overlaps the link-local range fe80::/10"},
		{"multicast", []string{"--subnet6", "ff05::/64"}, "overlaps the multicast range ff00::/8"},
		{"reserved", []string{"--subnet6", "::/64"}, "overlaps the reserved range ::/8"},
		{"IPv4-mapped", []string{"--subnet6", "::ffff:10.0.0.0/120"}, "IPv4-mapped"},
		{"another network's", []string{"--subnet6", "fd00:70::/64"}, "fd00:70::/64"},
		{"an interface's own subnet", []string{"--subnet6", "fd00:99::/64"}, "subnet fd00:99::/64 overlaps interface " + veth + "'s fd00:99::/64 (address fd00:99::1)"},
		{"a gatewayed route", []string{"--subnet6", "fd00:98::/64"}, "overlaps the host's route to fd00:98::/64 via fd00:99::fe dev " + veth},
		{"IPv4 as --subnet6", []string{"--subnet6", "10.72.0.0/24"}, "--subnet6 10.72.0.0/24 is an IPv4 subnet"},
		{"gateway outside", []string{"--subnet6", "fd00:72::/64", "--gateway6", "fd00:73::1"}, "gateway fd00:73::1: outside"},
		{"gateway on the anycast address", []string{"--subnet6", "fd00:72::/64", "--gateway6", "fd00:72::"}, "fd00:72::"},
		{"gateway without its subnet", []string{"--ipv6", "--gateway6", "fd00:72::1"}, "--gateway6 fd00:72::1 needs the subnet it lies in; give --subnet6"},
		{"malformed", []string{"--subnet6", "fd00:72::/64x"}, "parse subnet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.snapshot()
			r := w.pt(append([]string{"network", "create", "x"}, c.args...)...)
			expectOneLineError(t, r, c.want)
			sameSnapshot(t, strings.Join(c.args, " "), before, w.snapshot())
		})
	}
}

// TestIPv6Endpoints: an endpoint of a dual-stack network gets an address
// of each family, the IPv6 gateway as a default route too, both in its
// record and listing, both in the endpoints map; the agent restarts onto
// them and a detach takes them away.
func TestIPv6Endpoints(t *testing.T) {
	w := newWorld(t, 3)
	w.startAgent()
	c0, c1 := w.containers[0], w.containers[1]
	w.ok("network", "create", "dual", "--subnet", "10.74.0.0/24", "--subnet6", "fd00:74::/64")
	var e0, e1 control.Endpoint
	w.okJSON(&e0, "endpoint", "attach", "dual", "e0", "--netns", c0.Path())
	w.okJSON(&e1, "endpoint", "attach", "dual", "e1", "--netns", c1.Path(), "--ip6", "fd00:74::99")
	if e0.IP != netip.MustParseAddr("10.74.0.2") || e0.IPv6 != netip.MustParseAddr("fd00:74::2") || e0.Gateway6 != netip.MustParseAddr("fd00:74::1") || e0.PrefixLen6 != 64 {
		t.Errorf("e0: %s/%d via %s, %s/%d via %s", e0.IP, e0.PrefixLen, e0.Gateway, e0.IPv6, e0.PrefixLen6, e0.Gateway6)
	}
	if e1.IPv6 != netip.MustParseAddr("fd00:74::99") {
		t.Errorf("e1 asked for fd00:74::99, got %s", e1.IPv6)
	}
	if out := c0.IP(t, "-6", "addr", "show", "dev", "eth0"); !strings.Contains(out, "fd00:74::2/64") {
		t.Errorf("e0's eth0:\n%s", out)
	}
	if out := c0.IP(t, "-6", "route", "show", "default"); !strings.Contains(out, "via fd00:74::1 dev eth0") {
		t.Errorf("e0's IPv6 default route:\n%s", out)
	}
	if ls := w.ok("endpoint", "ls"); !strings.Contains(ls, "10.74.0.2,fd00:74::2") {
		t.Errorf("endpoint ls shows no IPv6 address:\n%s", ls)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--ip6", "fd00:75::5"}, "outside every subnet"},
		{[]string{"--ip6", "10.74.0.9"}, "IPv6 address \"10.74.0.9\""},
		{[]string{"--ip6", "fd00:74::99"}, "fd00:74::99"},
	} {
		before := w.snapshot()
		r := w.pt(append([]string{"endpoint", "attach", "dual", "bad", "--netns", w.containers[2].Path()}, bad.args...)...)
		expectOneLineError(t, r, bad.want)
		sameSnapshot(t, strings.Join(bad.args, " "), before, w.snapshot())
	}
	if got := w.endpointKeys(); !strings.Contains(got, "fd00:74::2") || !strings.Contains(got, "fd00:74::99") {
		t.Errorf("endpoints map lacks the IPv6 addresses: %s", got)
	}

	before := w.snapshot()
	w.agent.stop(syscall.SIGKILL)
	w.startAgent()
	sameSnapshot(t, "a restart", before, w.snapshot())
	if got := w.endpointKeys(); !strings.Contains(got, "fd00:74::2") {
		t.Errorf("after a restart the endpoints map lacks fd00:74::2: %s", got)
	}

	w.ok("endpoint", "detach", "e0")
	if got := w.endpointKeys(); strings.Contains(got, "fd00:74::2") {
		t.Errorf("after detach the endpoints map still has fd00:74::2: %s", got)
	}
	// The address is free again, handed out next-fit: not straight away.
	var e2 control.Endpoint
	w.okJSON(&e2, "endpoint", "attach", "dual", "e2", "--netns", c0.Path())
	if e2.IPv6 != netip.MustParseAddr("fd00:74::3") {
		t.Errorf("next-fit after fd00:74::2: got %s, want fd00:74::3", e2.IPv6)
	}
}

// endpointKeys lists the addresses in the pinned endpoints map.
func (w *world) endpointKeys() string {
	w.t.Helper()
	var out []string
	for a := range w.endpointMACs() {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
