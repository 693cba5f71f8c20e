package control

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// reconcile makes the kernel match the records: datapath attachments and
// config, then ipam, bridges, veths and finally the bindings map. It adds
// what is missing and prunes what is stale; of conntrack only the flows
// no binding would translate any more go, so established connections
// carry on.
func (a *Agent) reconcile() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cookie, err := loader.NetnsCookie()
	if err != nil {
		return err
	}
	dpConfig := maps.ConfigValue{HostNetnsCookie: cookie, SnatPortMin: a.snatPorts.First, SnatPortMax: a.snatPorts.Last}
	if !a.cfg.StackForwarding {
		dpConfig.Flags |= maps.ConfigFIBRedirect
	}
	dpConfig.Flags |= a.eventsFlag()
	if err := maps.NewConfig(a.dp.Maps.Config).Set(dpConfig); err != nil {
		return err
	}
	if err := a.disablePrefilter(); err != nil {
		return err
	}
	if err := a.dp.AttachCgroup(a.cfg.Cgroup); err != nil {
		return fmt.Errorf("attach socket hooks: %w", err)
	}
	if err := a.syncUplinks(); err != nil {
		return err
	}
	// A configured uplink is a promise: refuse to start without it. By
	// default an interface the programs do not fit is logged and retried.
	if err := a.uplinkErr(); err != nil && len(a.cfg.Uplinks) > 0 {
		return err
	}
	if err := a.syncHostAddrs(); err != nil {
		return err
	}
	if err := a.enableForwarding(); err != nil {
		return err
	}
	if err := a.reconcileIPAM(); err != nil {
		return err
	}
	if err := a.reconcileLinks(); err != nil {
		return err
	}
	if err := a.syncTopology(); err != nil {
		return err
	}
	want := a.wantBindings()
	added, removed, err := a.bindings.Sync(want)
	if err != nil {
		return fmt.Errorf("sync bindings: %w", err)
	}
	flushed := a.flushUntranslated(want)
	if err := a.syncAllowFrom(); err != nil {
		return err
	}
	if err := a.enablePrefilter(dpConfig, want); err != nil {
		return err
	}
	if err := a.syncBindingCounters(want); err != nil {
		return err
	}
	a.log.Info("reconciled", "networks", len(a.st.networks), "endpoints", len(a.st.endpoints),
		"mappings", len(a.st.ports), "bindings_added", added, "bindings_removed", removed,
		"flows_flushed", flushed)
	a.saveLastGood()
	return nil
}

// flushUntranslated forgets the flows that no binding of want would
// translate any more (maps.CT.DeleteUntranslated) and says how many went.
// A failure only leaves them to age out, as the unpublish's own flush
// does. ct_new is walked first: a flow moves from there to ct when
// answered, never back, so one answered during the walk is still seen.
func (a *Agent) flushUntranslated(want []maps.Binding) int {
	n, err := maps.NewCT(a.dp.Maps.CTNew, a.dp.Maps.CT).DeleteUntranslated(want)
	if err != nil {
		a.log.Warn("flush the flows no binding translates any more", "flushed", n, "err", err)
	}
	return n
}

// forwardSysctl is a forwarding switch the agent turns on and cleanup
// puts back: net.ipv4.ip_forward always, IPv6's only while a network
// needs the host to route IPv6 (forwarding=1 makes interfaces with
// accept_ra=1 ignore router advertisements, so it is not turned on for
// nothing).
type forwardSysctl struct {
	name, path string
	key        []byte // where the value found is recorded
}

var (
	ipForward   = forwardSysctl{"net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward", keyIPForward}
	ipv6Forward = forwardSysctl{"net.ipv6.conf.all.forwarding", "/proc/sys/net/ipv6/conf/all/forwarding", keyIPv6Forward}
)

// enableForwarding turns on forwarding for IPv4, whose translated packets
// are routed to the bridge, and for IPv6 when a network needs it.
func (a *Agent) enableForwarding() error {
	if err := a.enableSysctl(ipForward); err != nil {
		return err
	}
	if a.needsForwarding6() {
		return a.enableForwarding6()
	}
	return nil
}

// enableForwarding6 turns IPv6 forwarding on and warns, once per uplink,
// of the default route it may cost (raIgnored).
func (a *Agent) enableForwarding6() error {
	if err := a.enableSysctl(ipv6Forward); err != nil {
		return err
	}
	for idx, msg := range a.raIgnored() {
		if a.raWarned == nil {
			a.raWarned = map[int]bool{}
		}
		if !a.raWarned[idx] {
			a.raWarned[idx] = true
			a.log.Warn(msg, "uplink", a.uplinks[idx].Name)
		}
	}
	return nil
}

// raIgnored says, by uplink index, which uplinks have an IPv6 default
// route from router advertisements that they stop accepting while the
// host forwards IPv6 (accept_ra=1 means "unless forwarding"): the route
// then lapses at its lifetime and the host loses its IPv6 way out, and
// SLAAC addresses are no longer refreshed, so they deprecate and go
// (NAT66's address among them). The agent leaves accept_ra to the
// administrator.
func (a *Agent) raIgnored() map[int]string {
	out := map[int]string{}
	var candidates []int
	for idx, u := range a.uplinks {
		b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", u.Name, "accept_ra"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			candidates = append(candidates, idx)
		}
	}
	if len(candidates) == 0 {
		return out
	}
	routes, err := loader.RetryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: unix.RTPROT_RA}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return out
	}
	for _, r := range routes {
		if r.Dst != nil && !isDefault(r.Dst) {
			continue
		}
		links := []int{r.LinkIndex}
		for _, nh := range r.MultiPath {
			links = append(links, nh.LinkIndex)
		}
		for _, idx := range links {
			if slices.Contains(candidates, idx) {
				name := a.uplinks[idx].Name
				out[idx] = fmt.Sprintf("IPv6 forwarding is on, so uplink %s (accept_ra=1) ignores router advertisements: its default route and SLAAC addresses from them lapse (NAT66's address with them); set net.ipv6.conf.%s.accept_ra=2 or give it a static default route and addresses", name, name)
			}
		}
	}
	return out
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// needsForwarding6: a routed dual-stack network's IPv6 addresses are
// reached from outside, and reach out, through the host's IPv6 routing,
// as are IPv6 published ports and a --masquerade6 network's translated
// flows. Nothing else needs it (a --masquerade=false network's IPv6, like
// its IPv4, leaves by its own addresses only if the host forwards anyway),
// so forwarding stays as found (turning it on makes interfaces with
// accept_ra=1 ignore router advertisements).
func (a *Agent) needsForwarding6() bool {
	for _, n := range a.st.networks {
		if n.IPv6 && (n.Routed || n.Masquerade6) {
			return true
		}
	}
	for _, m := range a.st.ports {
		if m.publishesIPv6() {
			return true
		}
	}
	return false
}

// publishesIPv6: the mapping has a binding clients reach over IPv6 from
// outside the host.
func (m *PortMapping) publishesIPv6() bool {
	return m.Backend6.IsValid() || (m.HostIP.Is6() && !m.HostIP.Is4In6() && !m.HostIP.IsLoopback())
}

// enableSysctl turns forwarding on. The value found is recorded first, so
// `pontoon cleanup` can put it back. A "1" may be an earlier agent's
// doing, so it does not replace the record of that namespace; anything
// else is what the host has now (after a reboot, say) and does.
func (a *Agent) enableSysctl(fs forwardSysctl) error {
	b, err := os.ReadFile(fs.path)
	if err != nil {
		return fmt.Errorf("read %s: %w", fs.name, err)
	}
	found := strings.TrimSpace(string(b))
	rec, ok, err := getForwardRecord(a.store, fs.key)
	if err != nil {
		return err
	}
	if !ok || rec.Netns != a.netns || found != "1" {
		rec = forwardRecord{Value: found, Netns: a.netns}
		if err := a.store.Update(func(tx ipam.Tx) error { return put(tx, bucketMeta, string(fs.key), rec) }); err != nil {
			return fmt.Errorf("record %s: %w", fs.name, err)
		}
	}
	if found == "1" {
		return nil
	}
	if err := os.WriteFile(fs.path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable %s: %w", fs.name, err)
	}
	a.log.Info("enabled forwarding; 'pontoon cleanup' restores it", "sysctl", fs.name, "was", found)
	return nil
}

func (a *Agent) wantBindings() []maps.Binding {
	ports := make([]*PortMapping, 0, len(a.st.ports))
	for _, m := range a.st.ports {
		ports = append(ports, m)
	}
	return a.bindingsOf(ports)
}

// bindingsOf are the map entries of the mappings given; it reads nothing
// of the agent's but the log, so needs no lock.
func (a *Agent) bindingsOf(ports []*PortMapping) []maps.Binding {
	var want []maps.Binding
	for _, m := range ports {
		bs, err := mappingBindings(m)
		if err != nil {
			a.log.Warn("skip mapping", "mapping", portKey(m), "err", err)
			continue
		}
		want = append(want, bs...)
	}
	return want
}

func mappingBindings(m *PortMapping) ([]maps.Binding, error) {
	proto, err := maps.ParseProto(m.Proto)
	if err != nil {
		return nil, err
	}
	if m.HostIP.Is4() != m.Backend.Is4() || (m.Backend6.IsValid() && (!m.Backend6.Is6() || m.HostIP != netip.IPv4Unspecified())) {
		// The v6 datapath relies on it: an IPv6 key has an IPv6 backend.
		return nil, fmt.Errorf("host %s, backend %s and IPv6 backend %s are not of matching families", m.HostIP, m.Backend, m.Backend6)
	}
	bs, err := maps.PortRange(proto, m.HostIP, m.Host.First, m.Host.Last, m.Backend, m.Container.First, m.ID)
	if err == nil && m.Backend6.IsValid() {
		var bs6 []maps.Binding
		bs6, err = maps.PortRange(proto, netip.IPv6Unspecified(), m.Host.First, m.Host.Last, m.Backend6, m.Container.First, m.ID)
		bs = append(bs, bs6...)
	}
	for i := range bs {
		bs[i].Allowlist = len(m.AllowFrom) > 0
	}
	return bs, err
}

// wantAllowFrom is the allow_from map's content: each mapping's
// --allow-from prefixes under its binding id.
func (a *Agent) wantAllowFrom() map[uint32][]netip.Prefix {
	want := map[uint32][]netip.Prefix{}
	for _, m := range a.st.ports {
		if len(m.AllowFrom) > 0 {
			want[m.ID] = m.AllowFrom
		}
	}
	return want
}

// syncAllowFrom makes the allow_from map hold what the mappings say.
func (a *Agent) syncAllowFrom() error {
	if _, _, err := maps.NewAllowFrom(a.dp.Maps.AllowFrom).Sync(a.wantAllowFrom()); err != nil {
		return fmt.Errorf("sync allow-from lists: %w", err)
	}
	return nil
}

// reconcileIPAM releases allocations no record explains (a crash between
// the ipam write and the record write) and takes again any a record needs.
func (a *Agent) reconcileIPAM() error {
	for _, n := range a.ipam.Networks() {
		if _, ok := a.st.networks[n.ID]; ok {
			continue
		}
		ips, _ := a.ipam.IPs(n.ID)
		for _, ip := range ips {
			a.ipam.ReleaseIPs(n.ID, ip.Owner)
		}
		if err := a.ipam.RemoveNetwork(n.ID); err != nil {
			return fmt.Errorf("prune network %s from ipam: %w", n.ID, err)
		}
	}
	for _, n := range a.st.networks {
		if _, err := a.ipam.AddNetwork(ipamNetwork(n)); err != nil {
			return fmt.Errorf("restore network %s in ipam: %w", n.Name, err)
		}
		ips, err := a.ipam.IPs(n.Name)
		if err != nil {
			return err
		}
		for _, ip := range ips {
			if e := a.st.endpoints[ip.Owner]; e == nil || e.Network != n.Name || !slices.Contains(e.addrs(), ip.Addr) {
				if _, err := a.ipam.ReleaseIPs(n.Name, ip.Owner); err != nil {
					return fmt.Errorf("prune address %s: %w", ip.Addr, err)
				}
			}
		}
	}
	for _, e := range a.st.endpoints {
		if _, err := a.ipam.AllocateIPs(ipam.IPRequest{Network: e.Network, Owner: e.Name, Static: e.addrs()}); err != nil {
			return fmt.Errorf("restore address of endpoint %s: %w", e.Name, err)
		}
	}
	want := map[string]*PortMapping{}
	for _, m := range a.st.ports {
		want[portKey(m)] = m
	}
	for _, pa := range a.ipam.Ports("") {
		m := want[fmt.Sprintf("%s/%s/%d", pa.Proto, pa.HostIP, pa.Ports.First)]
		if m != nil && m.Endpoint == pa.Owner && m.Host == pa.Ports {
			delete(want, portKey(m))
			continue
		}
		if _, err := a.ipam.ReleasePorts(pa.Proto, pa.HostIP, pa.Ports); err != nil {
			return fmt.Errorf("prune ports %s: %w", pa, err)
		}
	}
	for _, m := range want {
		proto, _ := ipam.ParseProto(m.Proto)
		if _, err := a.ipam.AllocatePorts(ipam.PortRequest{Owner: m.Endpoint, Proto: proto, HostIP: m.HostIP, Ports: m.Host}); err != nil {
			return fmt.Errorf("restore ports %s: %w", portKey(m), err)
		}
	}
	return nil
}

func ipamNetwork(n *Network) ipam.Network {
	out := ipam.Network{ID: n.Name}
	for _, s := range n.subnets() {
		out.Subnets = append(out.Subnets, ipam.Subnet{Prefix: s.Subnet, Gateway: s.Gateway, Range: s.IPRange, Aux: s.AuxAddresses})
	}
	return out
}

// reconcileLinks repairs bridges and veths as heal does while the agent
// runs (a recreated bridge gets the veths still there enslaved again),
// drops endpoints whose namespace is gone and deletes labelled interfaces
// no record owns when they are provably Pontoon's (madeByPontoon).
func (a *Agent) reconcileLinks() error {
	// One broken network must not keep the agent, and every other
	// network, from starting: heal logs it and carries on.
	a.adoptEngineNamespaces()
	a.heal()
	if err := a.gcEndpoints(); err != nil {
		return err
	}
	links, err := a.bridgeLinks()
	if err != nil {
		return err
	}
	a.relabel(links)
	own, err := ownLinks()
	if err != nil {
		return err
	}
	for alias, l := range own {
		lbl, _ := parseLabel(alias)
		keep := false
		switch lbl.kind {
		case bridgeAlias:
			n := a.st.networks[lbl.name]
			keep = n != nil && n.Bridge == l.Attrs().Name
		case vethAlias:
			e := a.st.endpoints[lbl.name]
			keep = e != nil && e.HostIf == l.Attrs().Name
		case peerAlias:
			e := a.st.endpoints[lbl.name]
			keep = e != nil && e.NetnsInode == 0
		}
		if keep {
			continue
		}
		if lbl.adopted {
			// Another tool's interface no record holds: only the label
			// is ours.
			if err := netlink.LinkSetAlias(l, ""); err != nil {
				a.log.Warn("unlabel adopted interface", "name", l.Attrs().Name, "err", err)
			}
			continue
		}
		if ok, why := madeByPontoon(l, a.st); !ok {
			a.log.Warn("labelled interface left alone: nothing proves Pontoon made it", "name", l.Attrs().Name, "alias", alias, "why", why)
			continue
		}
		a.log.Info("prune stale interface", "name", l.Attrs().Name, "alias", alias)
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("delete stale %s: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

// recreateVeth rebuilds a lost veth pair with the address and MAC it had.
func (a *Agent) recreateVeth(e *Endpoint) error {
	fd, ns, err := openNetns(e.Netns)
	if err != nil {
		return err
	}
	defer closeFD(fd)
	if err := a.refuseHostNetns(ns, e.Netns); err != nil {
		return err
	}
	return createVeth(e, a.st.networks[e.Network], fd)
}

// gcEndpoints detaches endpoints whose network namespace is gone.
func (a *Agent) gcEndpoints() error {
	var gone []string
	for name, e := range a.st.endpoints {
		// An engine's endpoint whose namespace is not made yet is the
		// engine's to remove (Docker's Leave).
		if !netnsAlive(e) && !e.waiting() {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		a.log.Info("namespace gone, detaching endpoint", "endpoint", name, "netns", a.st.endpoints[name].Netns)
		if err := a.detach(name); err != nil {
			return err
		}
	}
	return nil
}

// syncHostAddrs gives the datapath the host's current addresses.
func (a *Agent) syncHostAddrs() error {
	addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	want := map[netip.Addr]uint32{}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok {
			want[ip.Unmap()] = uint32(ad.LinkIndex)
		}
	}
	if err := maps.NewHostAddrs(a.dp.Maps.HostAddrs).Sync(want); err != nil {
		return fmt.Errorf("sync host addresses: %w", err)
	}
	return nil
}
