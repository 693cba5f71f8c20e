package control

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// candidateSubnets is where a network without --subnet gets its range,
// in the order the original Docker tried them.
func candidateSubnets() []netip.Prefix {
	var out []netip.Prefix
	for i := 17; i <= 31; i++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(i), 0, 0}), 16))
	}
	for i := 0; i < 256; i += 16 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 20))
	}
	return out
}

// hostPrefixes are what a new subnet must not overlap: the host's routes
// (all but default routes), the subnets of its addresses and its
// nameservers.
func hostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if ok && ones > 0 {
			out = append(out, netip.PrefixFrom(ip.Unmap(), ones).Masked())
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	for _, ns := range nameservers("/etc/resolv.conf") {
		out = append(out, netip.PrefixFrom(ns, ns.BitLen()))
	}
	return out, nil
}

func nameservers(path string) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// pickSubnet returns the first candidate overlapping nothing in taken.
func pickSubnet(candidates, taken []netip.Prefix) (netip.Prefix, bool) {
next:
	for _, c := range candidates {
		for _, t := range taken {
			if c.Overlaps(t) {
				continue next
			}
		}
		return c, true
	}
	return netip.Prefix{}, false
}
