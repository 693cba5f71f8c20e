package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
)

// The same addresses in every world: each datapath gets its own set of
// namespaces, so nothing it installs (conntrack, rules, proxies, hooks)
// can slow down or help another.
//
//	outside --veth-- host --bridge-- container
//	198.18.0.2   198.18.0.1  10.89.0.1 \  10.89.0.2
//	2001:2::2    2001:2::1   fd89::1    \ fd89::2
//	                                     \- peer (the hairpin rows' client)
//	                                         10.89.0.3, fd89::3
//
// The network is dual-stack, as `network create --ipv6` makes it; the
// uplink's IPv6 subnet is RFC 5180's benchmarking prefix.
var (
	hostIP      = netip.MustParseAddr("198.18.0.1")
	outsideIP   = netip.MustParseAddr("198.18.0.2")
	gatewayIP   = netip.MustParseAddr("10.89.0.1")
	containerIP = netip.MustParseAddr("10.89.0.2")
	peerIP      = netip.MustParseAddr("10.89.0.3")
	loopbackIP  = netip.MustParseAddr("127.0.0.1")

	hostIP6      = netip.MustParseAddr("2001:2::1")
	outsideIP6   = netip.MustParseAddr("2001:2::2")
	gatewayIP6   = netip.MustParseAddr("fd89::1")
	containerIP6 = netip.MustParseAddr("fd89::2")
	peerIP6      = netip.MustParseAddr("fd89::3")
	loopbackIP6  = netip.IPv6Loopback()
)

// Interface names only need to be unique inside their namespace.
const (
	uplinkName = "uplink0"
	bridgeName = "pbr0"
	vethName   = "veth0"
	peerVeth   = "veth1"
	subnet     = "10.89.0.0/24"
	subnet6    = "fd89::/64"
)

// netns is a named network namespace (ip netns add).
type netns string

func (n netns) path() string { return filepath.Join("/run/netns", string(n)) }

// world is one datapath's host, container and outside namespaces, and a
// second container on the same bridge.
type world struct {
	host, container, outside, peer netns
}

// newWorld builds a world whose namespace names start with prefix.
func newWorld(ctx context.Context, cl *cleanups, prefix string) (*world, error) {
	w := &world{
		host:      netns(prefix + "-host"),
		container: netns(prefix + "-ctr"),
		outside:   netns(prefix + "-out"),
		peer:      netns(prefix + "-peer"),
	}
	for _, n := range []netns{w.host, w.container, w.outside, w.peer} {
		if err := run(ctx, "ip", "netns", "add", string(n)); err != nil {
			return nil, err
		}
		cl.add("netns "+string(n), func() error {
			return run(context.Background(), "ip", "netns", "del", string(n))
		})
		if err := ipIn(ctx, n, "link", "set", "lo", "up"); err != nil {
			return nil, err
		}
	}
	steps := [][]string{
		{"host", "link", "add", uplinkName, "type", "veth", "peer", "name", "eth0", "netns", string(w.outside)},
		{"host", "addr", "add", hostIP.String() + "/24", "dev", uplinkName},
		{"host", "link", "set", uplinkName, "up"},
		{"outside", "addr", "add", outsideIP.String() + "/24", "dev", "eth0"},
		{"outside", "link", "set", "eth0", "up"},
		// Only "direct" uses this route: the outside client dialling the
		// container's own address through the host.
		{"outside", "route", "add", subnet, "via", hostIP.String()},
		{"host", "link", "add", bridgeName, "type", "bridge"},
		{"host", "addr", "add", gatewayIP.String() + "/24", "dev", bridgeName},
		{"host", "link", "set", bridgeName, "up"},
		{"host", "link", "add", vethName, "type", "veth", "peer", "name", "eth0", "netns", string(w.container)},
		{"host", "link", "set", vethName, "master", bridgeName},
		{"host", "link", "set", vethName, "up"},
		{"container", "link", "set", "eth0", "addrgenmode", "none"},
		{"container", "addr", "add", containerIP.String() + "/24", "dev", "eth0"},
		{"container", "link", "set", "eth0", "up"},
		{"container", "route", "add", "default", "via", gatewayIP.String()},
		{"host", "link", "add", peerVeth, "type", "veth", "peer", "name", "eth0", "netns", string(w.peer)},
		{"host", "link", "set", peerVeth, "master", bridgeName},
		{"host", "link", "set", peerVeth, "up"},
		{"peer", "link", "set", "eth0", "addrgenmode", "none"},
		{"peer", "addr", "add", peerIP.String() + "/24", "dev", "eth0"},
		{"peer", "link", "set", "eth0", "up"},
		{"peer", "route", "add", "default", "via", gatewayIP.String()},
		// IPv6: nodad, so no address waits out duplicate address
		// detection; the containers make no link-local address, so all
		// they send comes from the one address the endpoints map holds
		// for them (the agent holds them to that and their MAC's
		// link-local, which the bench does not track).
		{"host", "addr", "add", hostIP6.String() + "/64", "dev", uplinkName, "nodad"},
		{"outside", "addr", "add", outsideIP6.String() + "/64", "dev", "eth0", "nodad"},
		{"outside", "route", "add", subnet6, "via", hostIP6.String()},
		{"host", "addr", "add", gatewayIP6.String() + "/64", "dev", bridgeName, "nodad"},
		{"container", "addr", "add", containerIP6.String() + "/64", "dev", "eth0", "nodad"},
		{"container", "route", "add", "default", "via", gatewayIP6.String()},
		{"peer", "addr", "add", peerIP6.String() + "/64", "dev", "eth0", "nodad"},
		{"peer", "route", "add", "default", "via", gatewayIP6.String()},
	}
	byName := map[string]netns{"host": w.host, "outside": w.outside, "container": w.container, "peer": w.peer}
	for _, s := range steps {
		if err := ipIn(ctx, byName[s[0]], s[1:]...); err != nil {
			return nil, err
		}
	}
	sysctls := []struct {
		ns       netns
		key, val string
	}{
		{w.host, "net.ipv4.ip_forward", "1"},
		// As the agent does while an IPv6 published port needs it; the
		// direct rows route IPv6 through the host too.
		{w.host, "net.ipv6.conf.all.forwarding", "1"},
		// Connect-rate runs open tens of thousands of connections; the
		// clients' TIME_WAIT ports become reusable after a second.
		{w.host, "net.ipv4.tcp_tw_reuse", "1"},
		{w.outside, "net.ipv4.tcp_tw_reuse", "1"},
	}
	for _, s := range sysctls {
		if err := sysctl(ctx, s.ns, s.key, s.val); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func ipIn(ctx context.Context, n netns, args ...string) error {
	return run(ctx, "ip", append([]string{"-n", string(n)}, args...)...)
}

func sysctl(ctx context.Context, n netns, key, val string) error {
	return inNetns(ctx, n, "sysctl", "-qw", key+"="+val)
}

// inNetns runs a command inside a namespace and waits for it.
func inNetns(ctx context.Context, n netns, name string, args ...string) error {
	argv := nsenterArgv(n, name, args...)
	return run(ctx, argv[0], argv[1:]...)
}

// run runs a command and returns its output in the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = childAttr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
