package control

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
)

// Interfaces the agent creates carry an alias naming what they belong to,
// so a restarted agent (or cleanup) can tell its own from everyone else's.
const (
	aliasPrefix = "pontoon:"
	bridgeAlias = aliasPrefix + "net:"
	vethAlias   = aliasPrefix + "ep:"
	// peerAlias labels the container side of an engine's endpoint while
	// it waits in the host namespace for the engine to move it.
	peerAlias    = aliasPrefix + "peer:"
	containerIf  = "eth0"
	defaultMTU   = 1500
	maxIfNameLen = 15
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func checkName(what, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %s name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", ErrInvalid, what, name)
	}
	return nil
}

// shortID names interfaces after a network or endpoint within IFNAMSIZ.
func shortID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])[:10]
}

func defaultBridgeName(network string) string {
	if len("pt-"+network) <= maxIfNameLen && !strings.ContainsAny(network, ".") {
		return "pt-" + network
	}
	return "pt-" + shortID(network)
}

func hostIfName(endpoint string) string { return "ptv" + shortID(endpoint) }

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// ensureBridge creates the network's bridge, or checks an adopted one, and
// gives it the gateway address, the MTU and link up.
func ensureBridge(n *Network) error {
	l, err := netlink.LinkByName(n.Bridge)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound) && n.Adopted:
		return kindf(ErrNotFound, "adopted bridge %s of network %s is gone; recreate it or remove the network", n.Bridge, n.Name)
	case errors.As(err, &notFound):
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = n.Bridge, n.MTU
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
		}
		if l, err = netlink.LinkByName(n.Bridge); err != nil {
			return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
		}
	case err != nil:
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	case l.Type() != "bridge":
		return kindf(ErrConflict, "%s is a %s interface, not a bridge; name another --bridge", n.Bridge, l.Type())
	}
	if err := setLabel(l, networkLabel(n)); err != nil {
		return fmt.Errorf("label bridge %s: %w", n.Bridge, err)
	}
	if !n.Adopted && l.Attrs().MTU != n.MTU {
		if err := netlink.LinkSetMTU(l, n.MTU); err != nil {
			return fmt.Errorf("set MTU of %s: %w", n.Bridge, err)
		}
	}
	for _, s := range n.subnets() {
		if err := netlink.AddrReplace(l, gatewayAddr(s)); err != nil {
			return fmt.Errorf("add gateway %s to %s: %w", s.Gateway, n.Bridge, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", n.Bridge, err)
	}
	return nil
}

// gatewayAddr is a subnet's gateway as the bridge carries it. An IPv6
// address skips duplicate address detection: it is ours by allocation,
// and a tentative address (a second or more, and until the bridge has a
// port) would be unusable for the endpoints' first packets.
func gatewayAddr(s NetworkSubnet) *netlink.Addr {
	return staticAddr(s.Gateway, s.Subnet.Bits())
}

func staticAddr(a netip.Addr, bits int) *netlink.Addr {
	addr := &netlink.Addr{IPNet: ipNet(a, bits)}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

// bridgeHasAddr reports whether an existing bridge already carries a.
func bridgeHasAddr(name string, a netip.Addr) (exists, has bool, err error) {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("find bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return true, false, kindf(ErrConflict, "%s is a %s interface, not a bridge; name another --bridge", name, l.Type())
	}
	addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return true, false, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a {
			return true, true, nil
		}
	}
	return true, false, nil
}

// removeBridge deletes a bridge the agent made, or takes the gateway off
// an adopted one when the agent put it there.
func removeBridge(n *Network) error {
	l, err := netlink.LinkByName(n.Bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	if !n.Adopted {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("delete bridge %s: %w", n.Bridge, err)
		}
		return nil
	}
	if err := clearLabel(n.Bridge); err != nil {
		return fmt.Errorf("unlabel bridge %s: %w", n.Bridge, err)
	}
	if n.AddedGateway {
		for _, s := range n.subnets() {
			err := netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(s.Gateway, s.Subnet.Bits())})
			if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove gateway %s from %s: %w", s.Gateway, n.Bridge, err)
			}
		}
	}
	return nil
}

// createVeth makes the endpoint's veth pair with the peer born inside the
// namespace under the endpoint's interface name, and configures both ends;
// the default route only when the endpoint holds it. It fills in e.MAC.
func createVeth(e *Endpoint, n *Network, nsFD int) error {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(nsFD))
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", e.Netns, err)
	}
	defer h.Close()
	ifName := e.ifName()
	if _, err := h.LinkByName(ifName); err == nil {
		return kindf(ErrConflict, "namespace %s already has an %s; name another with --ifname", e.Netns, ifName)
	}

	if err := addVethPair(e, br, ifName, netlink.NsFd(nsFD)); err != nil {
		return err
	}
	peer, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifName, e.Netns, err)
	}
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(e.IP, e.PrefixLen)}); err != nil {
		return fmt.Errorf("add %s to %s in %s: %w", e.IP, ifName, e.Netns, err)
	}
	if e.IPv6.IsValid() {
		if err := h.AddrAdd(peer, staticAddr(e.IPv6, e.PrefixLen6)); err != nil {
			return fmt.Errorf("add %s to %s in %s: %w", e.IPv6, ifName, e.Netns, err)
		}
	}
	for _, l := range []string{"lo", ifName} {
		link, err := h.LinkByName(l)
		if err == nil {
			err = h.LinkSetUp(link)
		}
		if err != nil {
			return fmt.Errorf("set %s up in %s: %w", l, e.Netns, err)
		}
	}
	// The network's other subnets are on the same bridge: reached
	// directly, frames addressed to the peer (the endpoint programs hand
	// same-network frames straight to the peer's veth as they are).
	siblings := siblingSubnets(n, e, true)
	if e.IPv6.IsValid() {
		siblings = append(siblings, siblingSubnets(n, e, false)...)
	}
	for _, p := range siblings {
		r := &netlink.Route{LinkIndex: peer.Attrs().Index, Dst: ipNet(p.Addr(), p.Bits()), Scope: netlink.SCOPE_LINK}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("add route to %s via %s in %s: %w", p, ifName, e.Netns, err)
		}
	}
	if err := sourceRoute(h, e, n, peer.Attrs().Index); err != nil {
		return err
	}
	if !e.NoDefaultRoute {
		if err := replaceDefaultRoute(h, e, peer.Attrs().Index); err != nil {
			return err
		}
	}
	e.MAC = peer.Attrs().HardwareAddr.String()
	return nil
}

// addVethPair makes the endpoint's pair, the host side labelled, up and
// on bridge br, the peer named peerName in peerNS (nil: this namespace).
// It fills in e.HostMAC.
func addVethPair(e *Endpoint, br netlink.Link, peerName string, peerNS any) error {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.MasterIndex = e.HostIf, e.MTU, br.Attrs().Index
	if e.HostMAC != "" {
		if mac, err := net.ParseMAC(e.HostMAC); err == nil {
			la.HardwareAddr = mac
		}
	}
	veth := &netlink.Veth{LinkAttrs: la, PeerName: peerName, PeerNamespace: peerNS, PeerMTU: uint32(e.MTU)}
	if e.MAC != "" {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			return fmt.Errorf("%w MAC %q: write it as 02:42:ac:11:00:02", ErrInvalid, e.MAC)
		}
		veth.PeerHardwareAddr = mac
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", e.HostIf, err)
	}
	host, err := netlink.LinkByName(e.HostIf)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", e.HostIf, err)
	}
	e.HostMAC = host.Attrs().HardwareAddr.String()
	if err := setLabel(host, endpointLabel(e)); err != nil {
		return fmt.Errorf("label veth %s: %w", e.HostIf, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("set %s up: %w", e.HostIf, err)
	}
	return nil
}

// createPeerVeth makes the pair of an engine's endpoint: the peer stays
// here as peerName, labelled (so it is never taken for an uplink) and
// unconfigured, for the engine to move into its namespace. It fills in
// e.MAC with the peer's.
func createPeerVeth(e *Endpoint, n *Network, peerName string) error {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.Bridge, err)
	}
	if err := addVethPair(e, br, peerName, nil); err != nil {
		return err
	}
	peer, err := netlink.LinkByName(peerName)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", peerName, err)
	}
	if err := netlink.LinkSetAlias(peer, peerAlias+e.Name); err != nil {
		return fmt.Errorf("label veth %s: %w", peerName, err)
	}
	e.MAC = peer.Attrs().HardwareAddr.String()
	return nil
}

// peerIfName is the name an engine endpoint's peer has until the engine
// moves it.
func peerIfName(endpoint string) string { return "ptp" + shortID(endpoint) }

// siblingSubnets are the subnets of n of one family (IPv4 or not) other
// than the one holding e's address of that family.
func siblingSubnets(n *Network, e *Endpoint, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range n.subnets() {
		if s.Subnet.Addr().Is4() == v4 && !s.Subnet.Contains(e.IP) && !s.Subnet.Contains(e.IPv6) {
			out = append(out, s.Subnet.Masked())
		}
	}
	return out
}

// sourceRulePriority places the endpoints' source rules before the main
// table (32766).
const sourceRulePriority = 100

// sourceTable is the endpoint's routing table in its namespace: its IPv4
// address as a number. That is unique among the namespace's endpoints
// (their networks do not overlap), the same after a restart recreates the
// pair, and clear of the reserved tables (0, 253-255) for any address a
// subnet hands out.
func sourceTable(e *Endpoint) int {
	b := e.IP.As4()
	return int(binary.BigEndian.Uint32(b[:]))
}

// sourceRoute sends what leaves from the endpoint's address through its
// own interface: a namespace on several networks has one default route,
// and without this a reply from a second endpoint's address (to a client
// of a port published on it) would leave by the first, whose veth drops
// packets from addresses not its own. A table per endpoint with its subnet
// and a default route via its gateway, and a rule "from IP" selecting it;
// a rule left by an earlier pair (recreated after a restart) goes first.
func sourceRoute(h *netlink.Handle, e *Endpoint, n *Network, ifindex int) error {
	if err := deleteSourceRules(h, e); err != nil {
		return err
	}
	table := sourceTable(e)
	own := netip.PrefixFrom(e.IP, e.PrefixLen).Masked()
	var routes []*netlink.Route
	for _, p := range append([]netip.Prefix{own}, siblingSubnets(n, e, true)...) {
		routes = append(routes, &netlink.Route{LinkIndex: ifindex, Dst: ipNet(p.Addr(), p.Bits()), Src: e.IP.AsSlice(), Scope: netlink.SCOPE_LINK, Table: table})
	}
	routes = append(routes, &netlink.Route{LinkIndex: ifindex, Gw: e.Gateway.AsSlice(), Table: table})
	for _, r := range routes {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s to table %d in %s: %w", r, table, e.Netns, err)
		}
	}
	rule := netlink.NewRule()
	rule.Src, rule.Table, rule.Priority = ipNet(e.IP, e.IP.BitLen()), table, sourceRulePriority
	if err := h.RuleAdd(rule); err != nil {
		return fmt.Errorf("add rule from %s in %s: %w", e.IP, e.Netns, err)
	}
	return nil
}

// deleteSourceRules removes the rules sourceRoute made for e's address;
// its table goes with the interface.
func deleteSourceRules(h *netlink.Handle, e *Endpoint) error {
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list rules in %s: %w", e.Netns, err)
	}
	for _, r := range rules {
		if r.Priority != sourceRulePriority || r.Src == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(r.Src.IP); !ok || ip.Unmap() != e.IP {
			continue
		}
		if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete rule from %s in %s: %w", e.IP, e.Netns, err)
		}
	}
	return nil
}

// removeSourceRoute takes e's source rule out of its namespace, if the
// namespace is still there.
func removeSourceRoute(e *Endpoint) error {
	fd, _, err := openNetns(e.Netns)
	if err != nil {
		return nil // gone: so is the rule
	}
	defer closeFD(fd)
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", e.Netns, err)
	}
	defer h.Close()
	return deleteSourceRules(h, e)
}

// replaceDefaultRoute points the namespace's one default route at the
// endpoint's gateway. Replace, not add: a default route via another
// endpoint's interface is the same route to the kernel and is taken over.
func replaceDefaultRoute(h *netlink.Handle, e *Endpoint, ifindex int) error {
	for _, gw := range []netip.Addr{e.Gateway, e.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		route := &netlink.Route{LinkIndex: ifindex, Gw: gw.AsSlice()}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("add default route via %s in %s: %w", gw, e.Netns, err)
		}
	}
	return nil
}

// ensureSourceRoute gives an endpoint already in the namespace at nsFD its
// source rule and table (sourceRoute); endpoints attached by an agent that
// did not make them have none.
func ensureSourceRoute(e *Endpoint, n *Network, nsFD int) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(nsFD))
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", e.Netns, err)
	}
	defer h.Close()
	l, err := h.LinkByName(e.ifName())
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", e.ifName(), e.Netns, err)
	}
	return sourceRoute(h, e, n, l.Attrs().Index)
}

// moveDefaultRoute gives the default route of the namespace at nsFD to e.
func moveDefaultRoute(e *Endpoint, nsFD int) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(nsFD))
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", e.Netns, err)
	}
	defer h.Close()
	l, err := h.LinkByName(e.ifName())
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", e.ifName(), e.Netns, err)
	}
	return replaceDefaultRoute(h, e, l.Attrs().Index)
}

// freeIfName is the first of eth0, eth1, ... that neither an endpoint
// record of the namespace (taken) nor an interface in it uses.
func freeIfName(nsFD int, path string, taken map[string]bool) (string, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(nsFD))
	if err != nil {
		return "", fmt.Errorf("open netlink in %s: %w", path, err)
	}
	defer h.Close()
	links, err := loader.RetryDump(h.LinkList)
	if err != nil {
		return "", fmt.Errorf("list interfaces in %s: %w", path, err)
	}
	for _, l := range links {
		taken[l.Attrs().Name] = true
	}
	for i := 0; ; i++ {
		if name := fmt.Sprintf("eth%d", i); !taken[name] {
			return name, nil
		}
	}
}

// checkIfName refuses an --ifname the kernel would not take or that would
// replace the namespace's loopback.
func checkIfName(name string) error {
	if len(name) > maxIfNameLen || !nameRE.MatchString(name) || name == "lo" {
		return fmt.Errorf("%w interface name %q: give 1-15 letters, digits, '_', '.' or '-', not lo, such as eth1", ErrInvalid, name)
	}
	return nil
}

// deleteLink removes an interface by name; a missing one is fine.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// madeByPontoon says whether a labelled interface is provably one the
// agent made. An alias is no proof on its own (anyone can set one): its
// kind and name must also be what the agent gives such an interface. A
// veth labelled for endpoint E is named hostIfName(E); a bridge labelled
// for network N is the bridge N's record names, or, with no record (a
// crash between deleting the record and the bridge), defaultBridgeName(N).
// A bridge any network adopted is never the agent's to delete. st may be
// nil (no state file). When it says no, why says what does not fit.
func madeByPontoon(l netlink.Link, st *state) (ok bool, why string) {
	at := l.Attrs()
	name := at.Name
	lbl, ok := parseLabel(at.Alias)
	switch {
	case !ok:
		return false, "not an alias Pontoon gives"
	case lbl.adopted:
		return false, "adopted: another tool made it"
	case lbl.kind == vethAlias:
		ep := lbl.name
		if l.Type() != "veth" {
			return false, fmt.Sprintf("a %s, not a veth", l.Type())
		}
		if name != hostIfName(ep) {
			return false, fmt.Sprintf("endpoint %s's veth would be %s", ep, hostIfName(ep))
		}
		return true, ""
	case lbl.kind == peerAlias:
		ep := lbl.name
		if l.Type() != "veth" || name != peerIfName(ep) {
			return false, fmt.Sprintf("endpoint %s's waiting peer would be the veth %s", ep, peerIfName(ep))
		}
		return true, ""
	case lbl.kind == bridgeAlias:
		nw := lbl.name
		if l.Type() != "bridge" {
			return false, fmt.Sprintf("a %s, not a bridge", l.Type())
		}
		var rec *Network
		if st != nil {
			for _, n := range st.networks {
				if n.Adopted && n.Bridge == name {
					return false, fmt.Sprintf("network %s adopted it", n.Name)
				}
			}
			rec = st.networks[nw]
		}
		switch {
		case rec != nil && rec.Bridge == name:
			return true, ""
		case rec == nil && name == defaultBridgeName(nw):
			return true, ""
		case rec != nil:
			return false, fmt.Sprintf("network %s's bridge is %s", nw, rec.Bridge)
		}
		return false, fmt.Sprintf("no record of network %s, and its bridge would be %s", nw, defaultBridgeName(nw))
	}
	return false, "not an alias Pontoon gives"
}

// ownLinks lists interfaces the agent labelled, by alias.
func ownLinks() (map[string]netlink.Link, error) {
	links, err := loader.RetryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := map[string]netlink.Link{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, aliasPrefix) {
			out[l.Attrs().Alias] = l
		}
	}
	return out, nil
}
