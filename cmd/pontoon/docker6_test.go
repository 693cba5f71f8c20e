package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/control"
)

// TestDockerIPv6: `docker network create --ipv6` makes a dual-stack
// Pontoon network (the subnets given, or a unique local /64 picked);
// containers get both addresses and the IPv6 gateway; -p without host IP
// is published on both families, [::]:P and [::1]:P on IPv6; an outside
// IPv6 client reaches the container with its address kept; -o
// routed=true lets the LAN and the container reach each other by their
// own IPv6 addresses; an IPv4-only
// network refuses [::]:P alone with the reason and takes 0.0.0.0:P with
// [::]:P as one binding of both families.
func TestDockerIPv6(t *testing.T) {
	w := newWorld(t, 0)
	hostV6, outsideV6 := netip.MustParseAddr("fd00:fe::1"), netip.MustParseAddr("fd00:fe::2")
	w.host.IP(t, "-6", "addr", "add", hostV6.String()+"/64", "dev", w.uplink, "nodad")
	w.outside.IP(t, "-6", "addr", "add", outsideV6.String()+"/64", "dev", "eth0", "nodad")
	plugin := "pontoon-test6-" + w.id
	d := newDockerd(t, w, plugin)
	w.startAgent("--docker-plugin=" + plugin)
	d.startDockerd()
	image := "pontoon-busybox:" + w.id
	d.importBusybox(image)

	dual, v4only := "dual-"+w.id, "v4-"+w.id
	dualID := d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "--ipv6",
		"--subnet", "10.233.0.0/24", "--subnet", "fd00:233::/64", dual)
	d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", "10.234.0.0/24", v4only)
	gw6 := netip.MustParseAddr("fd00:233::1")

	t.Run("--ipv6 makes a dual-stack network; without --subnet it gets a unique local /64", func(t *testing.T) {
		var n control.NetworkInfo
		w.okJSON(&n, "network", "inspect", "docker-"+dualID[:12])
		if got := subnetsOf(n); !slices.Equal(got, []string{"10.233.0.0/24 via 10.233.0.1", "fd00:233::/64 via fd00:233::1"}) {
			t.Errorf("network %s subnets %v", n.Name, got)
		}
		autoID := d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "--ipv6", "auto-"+w.id)
		var auto control.NetworkInfo
		w.okJSON(&auto, "network", "inspect", "docker-"+autoID[:12])
		ula := 0
		for _, s := range auto.Subnets {
			if s.Subnet.Addr().Is6() && s.Subnet.Bits() == 64 && netip.MustParsePrefix("fc00::/7").Contains(s.Subnet.Addr()) {
				ula++
			}
		}
		if ula != 1 {
			t.Errorf("network made with --ipv6 and no IPv6 subnet has subnets %v, want one unique local /64", subnetsOf(auto))
		}
		d.ok("network", "rm", "auto-"+w.id)
		if _, err := d.docker("network", "create", "-d", plugin, "--ipam-driver", plugin, "--ipv6", "--subnet", "fd00:233:1::/64", "--subnet", "10.233.0.0/25", "overlap6-"+w.id); err == nil || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("an overlapping IPv4 subnet beside an IPv6 one: %v", err)
		}
	})

	web := "web6-" + w.id
	d.ok("run", "-d", "--name", web, "--network", dual, "--ip6", "fd00:233::50",
		"-p", "8080:80", "-p", "[::]:8081:80", "-p", "[::1]:8082:80", image, "/bin/sleep", "3600")
	ms := w.waitContainerNamed(web)
	ctr := d.containerNetns(web, "ptc6"+w.id)
	ctr.ServeTCP(t, "[::]:80")

	t.Run("the container has both addresses and an IPv6 default route", func(t *testing.T) {
		var eps []control.Endpoint
		w.okJSON(&eps, "endpoint", "ls")
		if len(eps) != 1 || eps[0].IPv6 != netip.MustParseAddr("fd00:233::50") || eps[0].Gateway6 != gw6 || !eps[0].IP.Is4() {
			t.Fatalf("endpoints: %+v", eps)
		}
		if route := ctr.Exec(t, "ip", "-6", "route", "show", "default"); !strings.Contains(route, "via "+gw6.String()) {
			t.Errorf("container's IPv6 default route %q, want one via %s", route, gw6)
		}
		if got := hostPorts(ms); !slices.Equal(got, []string{"tcp 0.0.0.0:8080->80", "tcp ::1:8082->80", "tcp :::8081->80"}) {
			t.Errorf("published %v", got)
		}
		bindings := strings.Join(w.bindings(), "\n")
		for _, want := range []string{"[::]:8080/tcp -> [fd00:233::50]:80", "[::]:8081/tcp -> [fd00:233::50]:80", "[::1]:8082/tcp -> [fd00:233::50]:80"} {
			if !strings.Contains(bindings, want) {
				t.Errorf("bindings map lacks %s:\n%s", want, bindings)
			}
		}
		if strings.Contains(bindings, "0.0.0.0:8081") {
			t.Errorf("[::]:8081 was published on IPv4 too:\n%s", bindings)
		}
	})

	t.Run("an outside IPv6 client keeps its address; [::1] from the host", func(t *testing.T) {
		for _, port := range []string{"8080", "8081"} {
			addr := "[" + hostV6.String() + "]:" + port
			res, err := w.outside.Dial("tcp", addr)
			expectEcho(t, res, err, outsideV6, addr)
		}
		res, err := w.host.DialFrom(t, w.cgroup, "tcp", "[::1]:8082")
		expectEcho(t, res, err, gw6, "[::1]:8082")
	})

	t.Run("an IPv4-only network refuses [::]:P alone and joins it with 0.0.0.0:P", func(t *testing.T) {
		before := w.snapshot()
		_, err := d.docker("run", "-d", "--name", "v6only-"+w.id, "--network", v4only, "-p", "[::]:9090:80", image, "/bin/sleep", "3600")
		if err == nil || !strings.Contains(err.Error(), "the container has IPv4 only on this network; create the network with --ipv6") {
			t.Errorf("[::]:9090 on an IPv4-only network: %v", err)
		}
		d.docker("rm", "-f", "v6only-"+w.id)
		sameSnapshot(t, "a refused docker run", before, w.snapshot())
		both := "both-" + w.id
		d.ok("run", "-d", "--name", both, "--network", v4only, "-p", "0.0.0.0:9091:80", "-p", "[::]:9091:80", image, "/bin/sleep", "3600")
		got := w.waitContainerNamedOf(both)
		var mine []string
		for _, m := range got {
			if m.ContainerName == both {
				mine = append(mine, hostPorts([]control.PortMapping{m})...)
			}
		}
		if !slices.Equal(mine, []string{"tcp 0.0.0.0:9091->80"}) {
			t.Errorf("0.0.0.0:9091 and [::]:9091 on an IPv4-only container published %v, want one binding of both families", mine)
		}
		c := d.containerNetns(both, "ptc4"+w.id)
		c.ServeTCP(t, ":80")
		res, err := w.host.DialFrom(t, w.cgroup, "tcp", "[::1]:9091")
		expectEcho(t, res, err, netip.MustParseAddr("10.234.0.1"), "[::1]:9091")
		d.ok("rm", "-f", both)
	})

	t.Run("-o routed=true: the LAN and the container reach each other over IPv6", func(t *testing.T) {
		routed := "routed-" + w.id
		d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "--ipv6", "-o", "routed=true",
			"--subnet", "10.235.0.0/24", "--subnet", "fd00:235::/64", routed)
		w.outside.IP(t, "-6", "route", "add", "fd00:235::/64", "via", hostV6.String())
		name := "routed6-" + w.id
		d.ok("run", "-d", "--name", name, "--network", routed, "--ip6", "fd00:235::9", image, "/bin/sleep", "3600")
		c := d.containerNetns(name, "ptr6"+w.id)
		in := "[fd00:235::9]:81"
		c.ServeTCP(t, in)
		res, err := w.outside.Dial("tcp", in)
		expectEcho(t, res, err, outsideV6, in)
		out := "[" + outsideV6.String() + "]:82"
		w.outside.ServeTCP(t, out)
		res, err = c.Dial("tcp", out)
		expectEcho(t, res, err, netip.MustParseAddr("fd00:235::9"), out)
		d.ok("rm", "-f", name)
		d.ok("network", "rm", routed)
	})

	t.Run("rm and network rm leave nothing", func(t *testing.T) {
		d.ok("rm", "-f", web)
		d.ok("network", "rm", dual, v4only)
		var nets []control.NetworkInfo
		w.okJSON(&nets, "network", "ls")
		if len(nets) != 0 || len(w.bindings()) != 0 {
			t.Errorf("left after rm: networks %+v, bindings %v", nets, w.bindings())
		}
	})
}

// subnetsOf lists a network's subnets with their gateways.
func subnetsOf(n control.NetworkInfo) []string {
	var out []string
	for _, s := range n.Subnets {
		out = append(out, s.Subnet.String()+" via "+s.Gateway.String())
	}
	slices.Sort(out)
	return out
}
