package control

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
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

// hostPrefixes are what a new subnet of a family (netlink.FAMILY_V4 or
// FAMILY_V6) must not overlap: the host's routes (all but default
// routes), the subnets of its addresses and its nameservers.
func hostPrefixes(family int) ([]netip.Prefix, error) {
	h, err := readHostNet(nil, nil, family)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range h.routes {
		out = append(out, r.dst)
	}
	for _, a := range h.addrs {
		out = append(out, a.prefix.Masked())
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

// reservedRanges are IPv4 ranges no network may overlap: the kernel
// treats their addresses specially, so a bridge there breaks the host.
// Class E holds the limited broadcast address 255.255.255.255.
var reservedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "the \"this network\" range"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the loopback range"},
	{netip.MustParsePrefix("169.254.0.0/16"), "the link-local range"},
	{netip.MustParsePrefix("224.0.0.0/4"), "the multicast range"},
	{netip.MustParsePrefix("240.0.0.0/4"), "the reserved class E range"},
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

const pickAdvice = "pick another subnet, such as one in 10.0.0.0/8, or leave out --subnet to get a free one"

const pickAdvice6 = "pick another subnet, such as a /64 in fd00::/8, or leave out --subnet6 to get a free one"

// adviceFor is pickAdvice for p's family.
func adviceFor(p netip.Prefix) string {
	if p.Addr().Is4() {
		return pickAdvice
	}
	return pickAdvice6
}

// checkSubnetShape refuses what no host could use as a network, whatever
// its interfaces: /0, too small a subnet, the reserved ranges, and a
// gateway on the network or broadcast address.
func checkSubnetShape(p netip.Prefix, gw netip.Addr) error {
	if p.Addr().Is6() {
		return checkSubnetShape6(p, gw)
	}
	switch {
	case p.Bits() == 0:
		return kindf(ErrInvalid, "subnet %s covers every address; %s", p, pickAdvice)
	case p.Bits() > 30:
		return kindf(ErrInvalid, "subnet %s is smaller than a /30 and leaves no address for endpoints; give a /30 or larger", p)
	}
	for _, r := range reservedRanges {
		if p.Overlaps(r.prefix) {
			what := r.what + " " + r.prefix.String()
			if p.Contains(limitedBroadcast) {
				what += " and holds the limited broadcast address " + limitedBroadcast.String()
			}
			return kindf(ErrInvalid, "subnet %s overlaps %s; %s", p, what, pickAdvice)
		}
	}
	if gw == p.Addr() || gw == lastAddr(p) {
		return kindf(ErrInvalid, "gateway %s is the network or broadcast address of %s; give a gateway between %s and %s", gw, p, p.Addr().Next(), lastAddr(p).Prev())
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := range b {
		b[i] |= byte(host >> (8 * (3 - i)))
	}
	return netip.AddrFrom4(b)
}

// hostAddr is an IPv4 address of one of the host's interfaces.
type hostAddr struct {
	link string
	// uplink names the interface an uplink in messages.
	uplink bool
	// prefix is the address with its prefix length, such as 198.51.100.1/24.
	prefix netip.Prefix
}

func (h hostAddr) String() string {
	role := "interface"
	if h.uplink {
		role = "uplink"
	}
	return fmt.Sprintf("%s %s's %s", role, h.link, h.prefix.Masked())
}

// hostRoute is an IPv4 route of the host.
type hostRoute struct {
	dst netip.Prefix
	// desc says where the route leads, for messages.
	desc string
	// connected routes are an interface's own subnet (or the local and
	// broadcast routes the kernel adds for an address): overlapping one
	// can never be forced.
	connected bool
}

// hostNet is what a new subnet must keep clear of, read in the agent's
// network namespace.
type hostNet struct {
	addrs  []hostAddr
	routes []hostRoute
}

// check refuses p when it overlaps an address or a route of the host; a
// route that is not a connected one only without force. A gateway that is
// an address of the host lies inside p and so is refused here too.
func (h hostNet) check(p netip.Prefix, force bool) error {
	for _, a := range h.addrs {
		if p.Overlaps(a.prefix.Masked()) {
			return kindf(ErrConflict, "subnet %s overlaps %s (address %s); %s", p, a, a.prefix.Addr(), adviceFor(p))
		}
	}
	for _, r := range h.routes {
		switch {
		case !p.Overlaps(r.dst):
		case r.connected:
			return kindf(ErrConflict, "subnet %s overlaps the host's connected route to %s; %s", p, r.desc, adviceFor(p))
		case !force:
			return kindf(ErrConflict, "subnet %s overlaps the host's route to %s; %s, or give --force to create it anyway (the host then reaches %s on the network's bridge)", p, r.desc, adviceFor(p), p)
		}
	}
	return nil
}

// validateSubnet refuses a subnet of a new network that the host could not
// route, or that would take addresses or routes from the host's own
// interfaces (the uplink's subnet would cut every network off). bridge is
// the network's bridge: its own addresses and routes do not count, as an
// adopted bridge may already carry the gateway; nor do the bridges of
// other networks, which ipam refuses by name. force lets p overlap routes
// that are not an interface's own subnet.
func (a *Agent) validateSubnet(p netip.Prefix, gw netip.Addr, force bool, bridge string) error {
	if err := checkSubnetShape(p, gw); err != nil {
		return err
	}
	skip := map[string]bool{bridge: true}
	for _, n := range a.st.networks {
		skip[n.Bridge] = true
	}
	uplinks := map[int]bool{}
	for idx := range a.uplinks {
		uplinks[idx] = true
	}
	var h hostNet
	if p.Addr().Is6() {
		var err error
		if h, err = readHostNet(skip, uplinks, netlink.FAMILY_V6); err != nil {
			return fmt.Errorf("check subnet %s against the host: %w", p, err)
		}
	} else {
		// IPv4, where a thousand networks make a thousand routes: the
		// listing is kept between creates (hostNetCache).
		raw, err := a.hostNet.get(skip)
		if err != nil {
			return fmt.Errorf("check subnet %s against the host: %w", p, err)
		}
		h = raw.view(skip, uplinks)
	}
	return h.check(p, force)
}

// readHostNet lists the host's addresses and routes of one family
// (netlink.FAMILY_V4 or FAMILY_V6; every table but default routes),
// leaving out those of the links in skip.
func readHostNet(skip map[string]bool, uplinks map[int]bool, family int) (hostNet, error) {
	raw, err := readRawHostNet(family)
	if err != nil {
		return hostNet{}, err
	}
	return raw.view(skip, uplinks), nil
}

// rawHostNet is the host's addresses and routes of one family as listed,
// those of every interface; view leaves out Pontoon's own.
type rawHostNet struct {
	addrs  []rawHostAddr
	routes []rawHostRoute
}

type rawHostAddr struct {
	link   string
	index  int
	prefix netip.Prefix
}

type rawHostRoute struct {
	hostRoute
	// dev is the interface's name, "" for a route through none.
	dev   string
	index int
}

// readRawHostNet lists the host's addresses and routes of one family.
// IPv6 link-local and multicast addresses and routes are every link's and
// say nothing about a subnet. Interfaces are named from their addresses'
// labels rather than by listing them: a link dump with 1,000 bridges
// costs more than everything else here together.
func readRawHostNet(family int) (*rawHostNet, error) {
	h := &rawHostNet{}
	addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	names := map[int]string{}
	own := map[int][]netip.Prefix{}
	// A link with routes but no IPv4 address is looked up by index, as is
	// the link of an IPv6 address: those have no label.
	nameOf := func(index int) string {
		if name, ok := names[index]; ok || index == 0 {
			return name
		}
		if l, err := netlink.LinkByIndex(index); err == nil {
			names[index] = l.Attrs().Name
		} else {
			names[index] = fmt.Sprintf("ifindex %d", index)
		}
		return names[index]
	}
	for _, ad := range addrs {
		ip, ok := familyAddr(ad.IP, family)
		if !ok || ip.Is6() && !routable6(ip) {
			continue
		}
		name, _, _ := strings.Cut(ad.Label, ":") // "eth0:1" is an address of eth0
		if name != "" {
			names[ad.LinkIndex] = name
		} else {
			name = nameOf(ad.LinkIndex)
		}
		ones, _ := ad.Mask.Size()
		pfx := netip.PrefixFrom(ip, ones)
		own[ad.LinkIndex] = append(own[ad.LinkIndex], pfx.Masked())
		h.addrs = append(h.addrs, rawHostAddr{link: name, index: ad.LinkIndex, prefix: pfx})
	}
	routes, err := loader.RetryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(family, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		// Local and broadcast routes lie inside their address's subnet,
		// which the addresses above cover.
		if r.Dst == nil || r.Type == unix.RTN_LOCAL || r.Type == unix.RTN_BROADCAST ||
			r.Type == unix.RTN_MULTICAST || r.Type == unix.RTN_ANYCAST {
			continue
		}
		ip, ok := familyAddr(r.Dst.IP, family)
		ones, _ := r.Dst.Mask.Size()
		if !ok || ones == 0 || ip.Is6() && !routable6(ip) {
			continue
		}
		dev := nameOf(r.LinkIndex)
		dst := netip.PrefixFrom(ip, ones).Masked()
		hr := hostRoute{dst: dst, desc: dst.String()}
		if gw, ok := familyAddr(r.Gw, family); ok {
			hr.desc += " via " + gw.String()
		}
		if dev != "" {
			hr.desc += " dev " + dev
		}
		hr.connected = r.Gw == nil && slices.Contains(own[r.LinkIndex], dst)
		h.routes = append(h.routes, rawHostRoute{hostRoute: hr, dev: dev, index: r.LinkIndex})
	}
	return h, nil
}

// view is what a new subnet must keep clear of: all but the addresses and
// routes of the links in skip.
func (raw *rawHostNet) view(skip map[string]bool, uplinks map[int]bool) hostNet {
	var h hostNet
	for _, a := range raw.addrs {
		if !skip[a.link] {
			h.addrs = append(h.addrs, hostAddr{link: a.link, uplink: uplinks[a.index], prefix: a.prefix})
		}
	}
	for _, r := range raw.routes {
		if !skip[r.dev] || r.index == 0 {
			h.routes = append(h.routes, r.hostRoute)
		}
	}
	return h
}

// familyAddr reads an address of the family asked for; an IPv4 address
// read for IPv6, or the other way round, is not one.
func familyAddr(ip net.IP, family int) (netip.Addr, bool) {
	if family == netlink.FAMILY_V4 {
		return netip.AddrFromSlice(ip.To4())
	}
	if ip.To4() != nil {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(ip.To16())
}

// routable6 is false for IPv6 addresses every link has a route for
// (link-local, multicast).
func routable6(a netip.Addr) bool {
	return !a.IsLinkLocalUnicast() && !a.IsMulticast()
}

// reservedRanges6 are IPv6 ranges no network may overlap.
var reservedRanges6 = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("::/8"), "the reserved range ::/8 (unspecified, loopback, IPv4-mapped)"},
	{netip.MustParsePrefix("fe80::/10"), "the link-local range fe80::/10"},
	{netip.MustParsePrefix("fec0::/10"), "the deprecated site-local range fec0::/10"},
	{netip.MustParsePrefix("ff00::/8"), "the multicast range ff00::/8"},
}

// Bounds of an IPv6 network's prefix length. One link is one /64 in IPv6
// (RFC 4291's 64-bit interface identifiers): a wider subnet on a bridge
// would claim other links' addresses as on-link. Narrower ones work, as
// the agent gives addresses statically, down to 256 addresses.
const (
	minBits6 = 64
	maxBits6 = 120
)

// checkSubnetShape6 is checkSubnetShape for IPv6: a /64 to /120 outside
// the reserved ranges, and a gateway that is not the subnet-router anycast
// address (the subnet's first, which RFC 4291 gives every router).
func checkSubnetShape6(p netip.Prefix, gw netip.Addr) error {
	switch {
	case p.Bits() < minBits6:
		return kindf(ErrInvalid, "subnet %s is wider than a /64, the size of one IPv6 link; give a /64 (or narrower, to /120), such as %s", p, netip.PrefixFrom(p.Addr(), 64))
	case p.Bits() > maxBits6:
		return kindf(ErrInvalid, "subnet %s is narrower than a /120; give a /64 (or up to a /120)", p)
	}
	for _, r := range reservedRanges6 {
		if p.Overlaps(r.prefix) {
			return kindf(ErrInvalid, "subnet %s overlaps %s; %s", p, r.what, pickAdvice6)
		}
	}
	if gw == p.Addr() {
		return kindf(ErrInvalid, "gateway %s is the subnet-router anycast address of %s; give another, such as %s", gw, p, p.Addr().Next())
	}
	return nil
}

// ulaCandidates are where an IPv6 network without --subnet6 gets its /64:
// the /64s of a unique local /48 (RFC 4193) whose global ID is taken from
// the machine id, so that hosts that route to each other's networks pick
// different ones, and one host always the same.
func ulaCandidates() []netip.Prefix {
	id, err := os.ReadFile("/etc/machine-id")
	if err != nil || len(bytes.TrimSpace(id)) == 0 {
		id = []byte("pontoon")
	}
	sum := sha256.Sum256(bytes.TrimSpace(id))
	var b [16]byte
	b[0] = 0xfd
	copy(b[1:6], sum[:5])
	out := make([]netip.Prefix, 0, 256)
	for i := 1; i <= 256; i++ {
		b[6], b[7] = byte(i>>8), byte(i)
		out = append(out, netip.PrefixFrom(netip.AddrFrom16(b), 64))
	}
	return out
}
