package main

import (
	"net/netip"
	"strings"
	"testing"
)

// TestIPv6AllowFromFromOutside: --allow-from on dual-stack mappings with
// lists mixing IPv4 and IPv6 prefixes, from an outside client that has an
// address of each family. Its IPv6 address is let in where listed and
// dropped (drop_not_allowed) where only another IPv6 prefix is, while its
// IPv4 address gets in on the same mapping by the list's IPv4 half (XDP
// decides IPv4, tc IPv6). A v4-mapped prefix is refused in one line with
// nothing changed, as is an IPv6 prefix on a mapping published on IPv4 alone.
func TestIPv6AllowFromFromOutside(t *testing.T) {
	w := newWorld(t, 1)
	hostV6, outsideV6 := netip.MustParseAddr("fd00:ff::1"), netip.MustParseAddr("fd00:ff::2")
	w.host.IP(t, "-6", "addr", "add", hostV6.String()+"/64", "dev", w.uplink, "nodad")
	w.outside.IP(t, "-6", "addr", "add", outsideV6.String()+"/64", "dev", "eth0", "nodad")
	w.startAgent("--xdp", "native")
	c0 := w.containers[0]
	w.ok("network", "create", "dual", "--subnet", "10.89.0.0/24", "--subnet6", "fd00:89::/64")
	w.ok("endpoint", "attach", "dual", "e0", "--netns", c0.Path())
	c0.ServeTCP(t, "[::]:80")
	w.ok("port", "publish", "e0", "8081:80", "--allow-from", outsideV6.String(), "--allow-from", "203.0.113.0/24")
	w.ok("port", "publish", "e0", "8082:80", "--allow-from", "2001:db8::/32", "--allow-from", w.outsideIP.String()+"/32")

	listed := netip.AddrPortFrom(hostV6, 8081).String()
	res, err := w.outside.Dial("tcp", listed)
	expectEcho(t, res, err, outsideV6, listed)

	before := w.counter("drop_not_allowed")
	if res, err := w.outside.Dial("tcp", netip.AddrPortFrom(hostV6, 8082).String()); err == nil {
		t.Errorf("an IPv6 source outside --allow-from got through: %+v", res)
	}
	if after := w.counter("drop_not_allowed"); after <= before {
		t.Errorf("drop_not_allowed stayed at %d after an unlisted IPv6 client", after)
	}
	v4 := netip.AddrPortFrom(w.hostIP, 8082).String()
	res, err = w.outside.Dial("tcp", v4)
	expectEcho(t, res, err, w.outsideIP, v4)

	if out := w.ok("port", "ls", "e0"); !strings.Contains(out, "(allow-from 2001:db8::/32,"+w.outsideIP.String()+"/32)") {
		t.Errorf("port ls does not show the mixed list:\n%s", out)
	}

	for _, bad := range [][]string{
		{"8083:80", "--allow-from", "::ffff:203.0.113.0/120"},
		{"0.0.0.0:8083:80", "--allow-from", "2001:db8::/32"},
	} {
		before := w.snapshot()
		r := w.pt(append([]string{"port", "publish", "e0"}, bad...)...)
		if r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "--allow-from") {
			t.Errorf("publish %v: exit %d, stderr %q; want a one-line refusal about --allow-from", bad, r.code, r.stderr)
		}
		sameSnapshot(t, strings.Join(bad, " "), before, w.snapshot())
	}
}
