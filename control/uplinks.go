package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// Uplinks are the interfaces the uplink programs run on. By default that
// is every way out of the host that is not Pontoon's own, so masquerade
// covers traffic leaving by any of them, whichever route chose it (Docker
// masquerades with `! -o docker0`): interfaces without a default route,
// each nexthop of a multipath route, tunnels, dummies and other bridges.

// defaultUplink reports whether l is a way out of the host: not loopback
// and not a port of a bridge, bond or team, whose master is the device
// packets are routed through. A VRF's members stay: they still route.
// byIndex holds every interface of the namespace, to find masters.
func defaultUplink(l netlink.Link, byIndex map[int]netlink.Link) bool {
	at := l.Attrs()
	if at.Flags&net.FlagLoopback != 0 {
		return false
	}
	if at.MasterIndex != 0 {
		master, ok := byIndex[at.MasterIndex]
		return ok && master.Type() == "vrf"
	}
	return true
}

// ownLinkNames names the interfaces Pontoon made or adopted: the networks'
// bridges and the endpoints' veths. They never carry uplink programs.
func (a *Agent) ownLinkNames() map[string]bool {
	own := map[string]bool{}
	for _, n := range a.st.networks {
		own[n.Bridge] = true
	}
	for _, e := range a.st.endpoints {
		own[e.HostIf] = true
	}
	return own
}

// wantUplinks maps the index of each interface that should carry the
// uplink programs to its name: the configured ones, or by default every
// way out of the host.
func (a *Agent) wantUplinks(links []netlink.Link) map[int]string {
	byIndex := make(map[int]netlink.Link, len(links))
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	own := a.ownLinkNames()
	want := map[int]string{}
	for _, l := range links {
		at := l.Attrs()
		if own[at.Name] || strings.HasPrefix(at.Alias, aliasPrefix) {
			continue
		}
		configured := len(a.cfg.Uplinks) > 0
		if (configured && slices.Contains(a.cfg.Uplinks, at.Name)) || (!configured && defaultUplink(l, byIndex)) {
			want[at.Index] = at.Name
		}
	}
	return want
}

// syncUplinks attaches the uplink programs to every interface that should
// carry them and does not yet (new, renamed, or recreated with a new
// index), and takes them off interfaces that no longer should (enslaved
// to a bridge, adopted as a network's bridge, renamed away from a
// configured name). The first sync also takes them off whatever a previous
// agent attached them to that is no uplink now. An interface the programs
// cannot be attached to is logged once and retried at every sync; the
// error is kept in a.uplinkErrs.
func (a *Agent) syncUplinks() error {
	links, err := loader.RetryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	want := a.wantUplinks(links)
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for idx, u := range a.uplinks {
		if want[idx] == u.Name {
			continue
		}
		delete(a.uplinks, idx)
		if name, ok := names[idx]; ok && want[idx] == "" {
			a.detachUplink(name, true)
		}
		// A deleted interface took its programs along; PruneGone
		// removes the pins naming it.
	}
	if !a.uplinksSynced {
		for idx, name := range names {
			if want[idx] == "" {
				a.detachUplink(name, false)
			}
		}
		a.uplinksSynced = true
	}
	order := make([]int, 0, len(want))
	for idx := range want {
		order = append(order, idx)
	}
	slices.Sort(order)
	for idx := range a.uplinkErrs {
		if want[idx] == "" {
			delete(a.uplinkErrs, idx)
		}
	}
	for _, idx := range order {
		name := want[idx]
		if u, ok := a.uplinks[idx]; ok && u.Name == name {
			continue
		}
		mode, err := a.dp.AttachUplink(name)
		if err != nil {
			err = fmt.Errorf("attach uplink %s: %w", name, err)
			if prev := a.uplinkErrs[idx]; prev == nil || prev.Error() != err.Error() {
				a.log.Error("attach uplink; retrying at every resync", "name", name, "err", err)
			}
			a.uplinkErrs[idx] = err
			continue
		}
		delete(a.uplinkErrs, idx)
		// XDP only speeds tc's work up: an uplink that cannot have it
		// (no such mode in the driver, no Ethernet header) runs on tc.
		xdp, err := a.attachUplinkXDP(name)
		if err != nil {
			a.log.Warn("uplink runs without XDP", "name", name, "err", err)
			xdp = loader.XDPOff
		}
		a.log.Info("attached uplink", "name", name, "mode", mode, "xdp", xdp)
		a.uplinks[idx] = Uplink{Name: name, Mode: string(mode), XDP: string(xdp)}
	}
	return nil
}

// uplinkErr joins the errors of uplinks that could not be attached.
func (a *Agent) uplinkErr() error {
	var errs []error
	for _, err := range a.uplinkErrs {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// attachUplinkXDP gives an uplink the XDP program as --xdp asks, or
// takes ours off it (--xdp=off). A device without an Ethernet header
// gets none: the program parses Ethernet.
func (a *Agent) attachUplinkXDP(name string) (loader.XDPMode, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return "", fmt.Errorf("find interface %s: %w", name, err)
	}
	mode := a.cfg.XDP
	if mode == "" {
		mode = loader.XDPOff
	}
	if mode != loader.XDPOff && l.Attrs().EncapType != "ether" {
		// Ours, if a run with another device type left one.
		return loader.XDPOff, a.dp.DetachUplinkXDP(l)
	}
	return a.dp.AttachUplinkXDP(l, mode)
}

// detachUplink takes the uplink programs off an interface that is no
// uplink (any more); one that has none is left as it is.
func (a *Agent) detachUplink(name string, attached bool) {
	if l, err := netlink.LinkByName(name); err == nil {
		if err := a.dp.DetachUplinkXDP(l); err != nil {
			a.log.Warn("detach uplink xdp program", "name", name, "err", err)
		}
	}
	err := a.dp.DetachUplink(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		a.log.Warn("detach uplink programs", "name", name, "err", err)
	case attached:
		a.log.Info("detached uplink", "name", name)
	}
}

// syncUplinkAddrs records each uplink's masquerade addresses in the
// uplinks and uplinks6 maps. An uplink without one of a family gets no
// entry there: the datapath then drops masqueraded flows of that family
// leaving by it rather than let private sources out.
func (a *Agent) syncUplinkAddrs() error {
	addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	byLink := map[int][]netlink.Addr{}
	for _, ad := range addrs {
		byLink[ad.LinkIndex] = append(byLink[ad.LinkIndex], ad)
	}
	// The map, not a.uplinks, holds the address in use: it outlives a
	// restart of the agent and a re-attach, and live flows use it.
	uplinks6 := maps.NewUplinks(a.dp.Maps.Uplinks6)
	cur6, err := uplinks6.All6()
	if err != nil {
		// Without it a fresh pick may move live NAT66 flows; still
		// better than leaving the IPv4 uplinks unsynced.
		a.log.Warn("read uplinks6 map; picking IPv6 masquerade addresses afresh", "err", err)
		cur6 = nil
	}
	want, want6 := map[uint32]netip.Addr{}, map[uint32]netip.Addr{}
	for idx, u := range a.uplinks {
		u.Addr = masqueradeAddr(byLink[idx])
		u.Addr6 = masqueradeAddr6(byLink[idx], cur6[uint32(idx)])
		a.uplinks[idx] = u
		if u.Addr.IsValid() {
			want[uint32(idx)] = u.Addr
		}
		if u.Addr6.IsValid() {
			want6[uint32(idx)] = u.Addr6
		}
	}
	if err := maps.NewUplinks(a.dp.Maps.Uplinks).Sync(want); err != nil {
		return fmt.Errorf("sync uplinks: %w", err)
	}
	if err := uplinks6.Sync(want6); err != nil {
		return fmt.Errorf("sync uplinks6: %w", err)
	}
	return nil
}

// masqueradeAddr picks the source of masqueraded flows from an
// interface's IPv4 addresses: the first primary global one, else the
// first secondary one, else none.
func masqueradeAddr(addrs []netlink.Addr) netip.Addr {
	var secondary netip.Addr
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP.To4())
		if !ok || !ip.IsGlobalUnicast() {
			continue
		}
		if ad.Flags&unix.IFA_F_SECONDARY == 0 {
			return ip
		}
		if !secondary.IsValid() {
			secondary = ip
		}
	}
	return secondary
}

// masqueradeAddr6 picks the source of NAT66 flows from an interface's
// global addresses: stable global first, then temporary global (privacy
// addresses rotate), then stable unique local, then temporary unique
// local (fc00::/7, which no one outside routes). A fresh pick skips
// tentative, failed and deprecated addresses. cur, the address in use,
// stays while it is on the interface and not tentative or failed, even
// deprecated (RFC 4862 keeps those for existing traffic): live flows'
// reverse entries name cur, and moving would orphan their replies.
func masqueradeAddr6(addrs []netlink.Addr, cur netip.Addr) netip.Addr {
	rank := func(ad netlink.Addr, ip netip.Addr) int {
		r := 0
		if ip.IsPrivate() {
			r += 2
		}
		if ad.Flags&unix.IFA_F_TEMPORARY != 0 {
			r++
		}
		return r
	}
	var best netip.Addr
	bestRank := 0
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || !ip.Is6() || ip.Is4In6() || !ip.IsGlobalUnicast() || ad.Scope != unix.RT_SCOPE_UNIVERSE ||
			ad.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		if ip == cur {
			return cur
		}
		if ad.Flags&unix.IFA_F_DEPRECATED != 0 {
			continue
		}
		if r := rank(ad, ip); !best.IsValid() || r < bestRank {
			best, bestRank = ip, r
		}
	}
	return best
}
