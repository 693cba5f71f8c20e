package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// RebuildReport says what Rebuild wrote and what it could not recover.
type RebuildReport struct {
	// Path is the new state file; MovedAside where the old one went ("" if
	// there was none).
	Path, MovedAside string
	// Networks, Endpoints and Mappings are what the new file holds, one
	// line each.
	Networks, Endpoints, Mappings []string
	// Lost are things the kernel shows but the file could not be given,
	// each with why and what to do.
	Lost []string
}

// Rebuild writes a new state file from what the kernel of this network
// namespace still holds: bridges and veths with Pontoon's alias (names,
// MTUs, MACs, addresses, which bridge each veth is on), and the pinned
// networks, endpoints and bindings maps (flags, container addresses,
// published ports and their binding ids). The old file, when there is one,
// is moved aside, never deleted. It refuses while an agent holds the
// file, and, unless force, when the file is whole.
func Rebuild(stateDir, pinDir string, force bool) (*RebuildReport, error) {
	path := StatePath(stateDir)
	held, pid, err := lockHolder(path)
	if err != nil {
		return nil, err
	}
	if held {
		return nil, fmt.Errorf("an agent holds %s (pid %d): stop it first ('systemctl stop pontoon'); rebuild only replaces the file of a stopped agent", path, pid)
	}
	_, err = os.Stat(path)
	exists := err == nil
	if exists && !force {
		store, _, _, err := openState(path, pinDir, ipam.Options{})
		if err == nil {
			store.Close()
			return nil, fmt.Errorf("state file %s is whole: start the agent on it; add --force to replace it with one rebuilt from the kernel anyway", path)
		}
		if !errors.Is(err, ErrStateDamaged) {
			return nil, err
		}
	}

	rep := &RebuildReport{Path: path}
	st, err := stateFromKernel(pinDir, rep)
	if err != nil {
		return nil, err
	}
	rep.Lost = append(rep.Lost, "the net.ipv4.ip_forward value found before the first agent: 'pontoon cleanup' leaves forwarding as the next agent finds it")
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("rebuilt records disagree (%v): nothing written; report this", err)
	}

	tmp := path + ".rebuild"
	os.Remove(tmp)
	if err := writeState(tmp, st); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if exists {
		rep.MovedAside = path + ".corrupt-" + time.Now().Format("20060102T150405")
		if err := os.Rename(path, rep.MovedAside); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("move the old state file aside: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("put the rebuilt state file in place: %w", err)
	}
	if d, err := os.Open(stateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return rep, nil
}

// writeState writes records into a new file. Only the agent's records:
// the agent takes the addresses and ports they hold in ipam at start.
func writeState(path string, st *state) error {
	store, err := ipam.OpenBolt(path)
	if err != nil {
		return err
	}
	err = store.Update(func(tx ipam.Tx) error {
		for _, n := range st.networks {
			if err := put(tx, bucketNetworks, n.Name, n); err != nil {
				return err
			}
		}
		for _, e := range st.endpoints {
			if err := put(tx, bucketEndpoints, e.Name, e); err != nil {
				return err
			}
		}
		for k, m := range st.ports {
			if err := put(tx, bucketPorts, k, m); err != nil {
				return err
			}
		}
		return putNextID(tx, st.nextID)
	})
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write the rebuilt state file: %w", err)
	}
	return nil
}

// pinnedMaps are the datapath's maps a rebuild reads; any may be missing.
type pinnedMaps struct {
	networks   map[uint32]maps.NetworkValue
	nat66      map[uint32]bool            // an IPv6 entry has NETWORK_F_NAT66
	subnets    map[uint32][]NetworkSubnet // one networks-map entry each
	endpoints  map[uint32]netip.Addr      // host veth ifindex -> container address
	endpoints6 map[uint32]netip.Addr      // host veth ifindex -> container IPv6 address
	macs       map[uint32][6]byte
	bindings   []maps.Binding
	allow      map[uint32][]netip.Prefix // binding id -> --allow-from
}

func newPinnedMaps() *pinnedMaps {
	return &pinnedMaps{networks: map[uint32]maps.NetworkValue{}, nat66: map[uint32]bool{}, subnets: map[uint32][]NetworkSubnet{}, endpoints: map[uint32]netip.Addr{}, endpoints6: map[uint32]netip.Addr{}, macs: map[uint32][6]byte{}}
}

// readNetworks takes the flags from the IPv4 entries, NAT66 from the IPv6
// ones (the only family it means something for), and every subnet.
func (pm *pinnedMaps) readNetworks(m *ebpf.Map) {
	var (
		k maps.NetworkKey
		v maps.NetworkValue
	)
	for it := m.Iterate(); it.Next(&k, &v); {
		sub, ok := pinnedSubnet(k, v)
		if !ok {
			continue
		}
		if sub.Subnet.Addr().Is4() {
			pm.networks[v.ID] = v
		} else if v.Flags&maps.NetworkNAT66 != 0 {
			pm.nat66[v.ID] = true
		}
		pm.subnets[v.ID] = append(pm.subnets[v.ID], sub)
	}
}

func readPins(pinDir string, rep *RebuildReport) (*pinnedMaps, error) {
	pm := newPinnedMaps()
	open := func(name string) *ebpf.Map {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if err != nil {
			rep.Lost = append(rep.Lost, fmt.Sprintf("pinned map %s unreadable (%v): what only it holds is lost", name, err))
			return nil
		}
		return m
	}
	if m := open("networks"); m != nil {
		defer m.Close()
		pm.readNetworks(m)
	}
	if m := open("endpoints"); m != nil {
		defer m.Close()
		var (
			k maps.EndpointKey
			v maps.EndpointValue
		)
		for it := m.Iterate(); it.Next(&k, &v); {
			switch k.Family {
			case 2:
				pm.endpoints[v.Ifindex] = netip.AddrFrom4([4]byte(k.Addr[:4]))
				pm.macs[v.Ifindex] = v.MAC
			case 10:
				// Its link-local entry is derived from the MAC, not kept.
				if a := netip.AddrFrom16(k.Addr); !a.IsLinkLocalUnicast() {
					pm.endpoints6[v.Ifindex] = a
				}
			}
		}
	}
	if m := open("bindings"); m != nil {
		defer m.Close()
		var err error
		if pm.bindings, err = maps.NewBindings(m).All(); err != nil {
			return nil, fmt.Errorf("read pinned bindings: %w", err)
		}
	}
	if m := open("allow_from"); m != nil {
		defer m.Close()
		var err error
		if pm.allow, err = maps.NewAllowFrom(m).All(); err != nil {
			return nil, fmt.Errorf("read pinned allow-from lists: %w", err)
		}
	}
	return pm, nil
}

// pinnedSubnet reads one networks map entry back into a subnet; the key's
// prefix length counts the family and pad (32 bits) before the address.
func pinnedSubnet(k maps.NetworkKey, v maps.NetworkValue) (NetworkSubnet, bool) {
	switch {
	case k.Family == 2 && k.Prefixlen >= 32 && k.Prefixlen <= 64:
		return NetworkSubnet{
			Subnet:  netip.PrefixFrom(netip.AddrFrom4([4]byte(k.Addr[:4])), int(k.Prefixlen-32)),
			Gateway: netip.AddrFrom4([4]byte(v.Gateway[:4])),
		}, true
	case k.Family == 10 && k.Prefixlen >= 32 && k.Prefixlen <= 160:
		return NetworkSubnet{
			Subnet:  netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen-32)),
			Gateway: netip.AddrFrom16(v.Gateway),
		}, true
	}
	return NetworkSubnet{}, false
}

// stateFromKernel reconstructs the records; what it cannot goes in rep.
func stateFromKernel(pinDir string, rep *RebuildReport) (*state, error) {
	pm, err := readPins(pinDir, rep)
	if err != nil {
		return nil, err
	}
	links, err := loader.RetryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	st := &state{networks: map[string]*Network{}, endpoints: map[string]*Endpoint{}, ports: map[string]*PortMapping{}, nextID: 1}
	byBridge := map[int]*Network{}
	for _, l := range links {
		alias := l.Attrs().Alias
		lbl, ok := parseLabel(alias)
		if !ok || lbl.kind != bridgeAlias {
			continue
		}
		name := lbl.name
		// A bridge named with --bridge, or adopted, is not where
		// madeByPontoon looks without a record; the datapath's entry for
		// its network is the record here.
		_, mapped := pm.networks[networkID(name)]
		if ok, why := madeByPontoon(l, nil); !ok && (!mapped || l.Type() != "bridge") {
			rep.Lost = append(rep.Lost, fmt.Sprintf("bridge %s (alias %q) left out: %s", l.Attrs().Name, alias, why))
			continue
		}
		n, err := networkFromBridge(l, name, pm)
		if err != nil {
			rep.Lost = append(rep.Lost, err.Error())
			continue
		}
		n.Owner, n.Adopted, n.AddedGateway = lbl.owner, lbl.adopted, lbl.addedGateway
		st.networks[n.Name] = n
		byBridge[l.Attrs().Index] = n
		rep.Networks = append(rep.Networks, fmt.Sprintf("%s: %s via %s on %s", n.Name, n.Subnet, n.Gateway, n.Bridge))
	}
	for id, sub := range pm.subnets {
		if st.networks[nameOfID(st, id)] == nil {
			rep.Lost = append(rep.Lost, fmt.Sprintf("network %s (datapath id %d): no labelled bridge names it (a bridge adopted before bridges were labelled, or whose alias is not ours); create it again with 'pontoon network create NAME --subnet %s --bridge BRIDGE'", sub, id, sub))
		}
	}
	for _, l := range links {
		alias := l.Attrs().Alias
		lbl, ok := parseLabel(alias)
		if !ok || lbl.kind != vethAlias {
			continue
		}
		// An adopted veth has its maker's name; it is one when the
		// datapath knows its address.
		if _, mapped := pm.endpoints[uint32(l.Attrs().Index)]; lbl.adopted && (!mapped || l.Type() != "veth") {
			rep.Lost = append(rep.Lost, fmt.Sprintf("adopted veth %s (alias %q) left out: the pinned endpoints map has no address for it; ADD its container again", l.Attrs().Name, alias))
			continue
		}
		if ok, why := madeByPontoon(l, nil); !ok && !lbl.adopted {
			rep.Lost = append(rep.Lost, fmt.Sprintf("veth %s (alias %q) left out: %s", l.Attrs().Name, alias, why))
			continue
		}
		e, err := endpointFromVeth(l, lbl.name, byBridge[l.Attrs().MasterIndex], pm)
		if err != nil {
			rep.Lost = append(rep.Lost, err.Error())
			continue
		}
		e.Owner, e.ContainerID, e.ContainerName, e.Adopted = lbl.owner, lbl.containerID, lbl.containerName, lbl.adopted
		// Neither an adopted pair nor a Docker container's was given the
		// namespace's default route by the agent: their makers hold it.
		if e.Adopted || e.Owner == dockerOwner {
			e.NoDefaultRoute = true
		}
		st.endpoints[e.Name] = e
		rep.Endpoints = append(rep.Endpoints, fmt.Sprintf("%s: %s on %s, %s in %s", e.Name, e.IP, e.Network, e.HostIf, e.Netns))
	}
	mappingsFromBindings(st, pm.bindings, rep)
	for _, m := range st.ports {
		m.AllowFrom = pm.allow[m.ID]
	}
	slices.Sort(rep.Networks)
	slices.Sort(rep.Endpoints)
	slices.Sort(rep.Mappings)
	return st, nil
}

func nameOfID(st *state, id uint32) string {
	for name := range st.networks {
		if networkID(name) == id {
			return name
		}
	}
	return ""
}

// networkFromBridge takes the subnet, gateway and flags from the pinned
// networks map, or, without an entry, the subnet and gateway from the
// bridge's address and Docker's defaults for the flags.
func networkFromBridge(l netlink.Link, name string, pm *pinnedMaps) (*Network, error) {
	at := l.Attrs()
	n := &Network{Name: name, Bridge: at.Name, MTU: at.MTU, ICC: true, Masquerade: true}
	if v, ok := pm.networks[networkID(name)]; ok {
		// The map keeps no order, ranges or aux addresses: subnets come
		// back sorted, without them.
		n.Subnets = slices.SortedFunc(slices.Values(pm.subnets[networkID(name)]), func(x, y NetworkSubnet) int {
			return x.Subnet.Addr().Compare(y.Subnet.Addr())
		})
		n.Subnet, n.Gateway = n.Subnets[0].Subnet, n.Subnets[0].Gateway
		n.IPv6 = n.Subnets[len(n.Subnets)-1].Subnet.Addr().Is6()
		n.ICC = v.Flags&maps.NetworkNoICC == 0
		n.Routed = v.Flags&maps.NetworkRouted != 0
		n.Masquerade = v.Flags&maps.NetworkMasquerade != 0
		n.Masquerade6 = pm.nat66[networkID(name)]
		return n, nil
	}
	addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("network %s left out: list addresses of %s: %v", name, at.Name, err)
	}
	for _, ad := range addrs {
		gw, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		bits, _ := ad.Mask.Size()
		n.Gateway, n.Subnet = gw.Unmap(), netip.PrefixFrom(gw.Unmap(), bits).Masked()
		n.Subnets = []NetworkSubnet{{Subnet: n.Subnet, Gateway: n.Gateway}}
		return n, nil
	}
	return nil, fmt.Errorf("network %s left out: bridge %s has no IPv4 address and the pinned networks map no entry for it; create it again", name, at.Name)
}

// endpointFromVeth finds the endpoint's namespace by the veth's peer, and
// its address and MAC in the pinned endpoints map, or in the namespace.
func endpointFromVeth(l netlink.Link, name string, n *Network, pm *pinnedMaps) (*Endpoint, error) {
	at := l.Attrs()
	if n == nil {
		return nil, fmt.Errorf("endpoint %s left out: its veth %s is on no rebuilt network's bridge; detach it with 'ip link del %s'", name, at.Name, at.Name)
	}
	path, ino, err := findNetns(at.NetNsID)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s left out: %v", name, err)
	}
	e := &Endpoint{Name: name, Network: n.Name, Netns: path, NetnsInode: ino, HostIf: at.Name,
		HostMAC: at.HardwareAddr.String(), MTU: at.MTU}
	e.IPv6 = pm.endpoints6[uint32(at.Index)]
	if ip, ok := pm.endpoints[uint32(at.Index)]; ok {
		e.IP = ip
		if mac := pm.macs[uint32(at.Index)]; mac != ([6]byte{}) {
			e.MAC = net.HardwareAddr(mac[:]).String()
		}
	}
	side, err := containerSide(path, at.ParentIndex)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s left out: %v", name, err)
	}
	e.IfName, e.NoDefaultRoute = side.name, !side.defaultRoute
	if !e.IP.IsValid() {
		e.IP = side.ip
	}
	if !e.IPv6.IsValid() && n.IPv6 {
		e.IPv6 = side.ip6
	}
	if e.IPv6.IsValid() {
		s, ok := n.subnetOf(e.IPv6)
		if !ok {
			return nil, fmt.Errorf("endpoint %s left out: its IPv6 address %s is outside network %s's subnets", name, e.IPv6, n.Name)
		}
		e.PrefixLen6, e.Gateway6 = s.Subnet.Bits(), s.Gateway
	}
	if e.MAC == "" {
		e.MAC = side.mac
	}
	for _, s := range n.subnets() {
		if s.Subnet.Contains(e.IP) {
			e.PrefixLen, e.Gateway = s.Subnet.Bits(), s.Gateway
			return e, nil
		}
	}
	return nil, fmt.Errorf("endpoint %s left out: its address %s is outside network %s's subnets", name, e.IP, n.Name)
}

// findNetns finds a path to the namespace that has id nsid here: the
// first place it was bound to (a name under /run/netns, Docker's sandbox
// key), or else a process inside it.
func findNetns(nsid int) (string, uint64, error) {
	if nsid < 0 {
		return "", 0, fmt.Errorf("its veth's peer is in no other namespace")
	}
	candidates := nsfsMounts()
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			candidates = append(candidates, filepath.Join("/run/netns", e.Name()))
		}
	}
	if entries, err := os.ReadDir("/proc"); err == nil {
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				candidates = append(candidates, filepath.Join("/proc", e.Name(), "ns/net"))
			}
		}
	}
	seen := map[uint64]bool{}
	for _, path := range candidates {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		id, err := netlink.GetNetNsIdByFd(fd)
		unix.Close(fd)
		if err == nil && id == nsid {
			return path, st.Ino, nil
		}
	}
	return "", 0, fmt.Errorf("no path under /run/netns or /proc names its veth's peer namespace (nsid %d); detach it, or give that namespace a name and rebuild again", nsid)
}

// containerEnd is the container's side of an endpoint's veth.
type containerEnd struct {
	name         string
	ip           netip.Addr
	ip6          netip.Addr // a routable IPv6 address, on a dual-stack network
	mac          string
	defaultRoute bool // the namespace's default route leaves through it
}

// containerSide reads the veth peer with index peer (eth0 when the index
// is unknown) inside the namespace at path.
func containerSide(path string, peer int) (containerEnd, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return containerEnd{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		return containerEnd{}, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	defer h.Close()
	var l netlink.Link
	if peer > 0 {
		l, err = h.LinkByIndex(peer)
	} else {
		l, err = h.LinkByName(containerIf)
	}
	if err != nil {
		return containerEnd{}, fmt.Errorf("find the veth's container side in %s: %w", path, err)
	}
	end := containerEnd{name: l.Attrs().Name, mac: l.Attrs().HardwareAddr.String()}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return containerEnd{}, fmt.Errorf("%s in %s has no IPv4 address", end.name, path)
	}
	ip, _ := netip.AddrFromSlice(addrs[0].IP)
	end.ip = ip.Unmap()
	addrs6, err := h.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return containerEnd{}, fmt.Errorf("list IPv6 addresses of %s in %s: %w", end.name, path, err)
	}
	for _, ad := range addrs6 {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Is6() && routable6(ip) {
			end.ip6 = ip
			break
		}
	}
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		return containerEnd{}, fmt.Errorf("list routes of %s in %s: %w", end.name, path, err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			end.defaultRoute = true
		} else if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			end.defaultRoute = true
		}
	}
	return end, nil
}

// mappingsFromBindings turns bindings back into mappings: the bindings of
// one id, protocol and host address whose host and container ports both
// run on without a gap are one mapping, as publish made them.
func mappingsFromBindings(st *state, bindings []maps.Binding, rep *RebuildReport) {
	byIP := map[netip.Addr]*Endpoint{}
	for _, e := range st.endpoints {
		byIP[e.IP] = e
		if e.IPv6.IsValid() {
			byIP[e.IPv6] = e
		}
	}
	slices.SortFunc(bindings, func(x, y maps.Binding) int {
		switch {
		case x.ID != y.ID:
			return int(x.ID) - int(y.ID)
		case x.Proto != y.Proto:
			return int(x.Proto) - int(y.Proto)
		case x.Host.Addr() != y.Host.Addr():
			return x.Host.Addr().Compare(y.Host.Addr())
		}
		return int(x.Host.Port()) - int(y.Host.Port())
	})
	var cur *PortMapping
	// A wildcard mapping's [::] bindings share its id: they come after
	// its 0.0.0.0 ones, and are its Backend6.
	wildcard4 := map[uint32]*PortMapping{}
	flush := func() {
		if cur == nil {
			return
		}
		if w := wildcard4[cur.ID]; w != nil && cur.HostIP == netip.IPv6Unspecified() && w.Proto == cur.Proto &&
			w.Endpoint == cur.Endpoint && w.Host == cur.Host && w.Container == cur.Container {
			w.Backend6 = cur.Backend
			cur = nil
			return
		}
		if cur.HostIP == netip.IPv4Unspecified() {
			wildcard4[cur.ID] = cur
		}
		st.ports[portKey(cur)] = cur
		st.nextID = max(st.nextID, cur.ID+1)
		rep.Mappings = append(rep.Mappings, fmt.Sprintf("%s: %s:%s/%s -> %s:%s", cur.Endpoint, cur.HostIP, cur.Host, cur.Proto, cur.Backend, cur.Container))
		cur = nil
	}
	for _, b := range bindings {
		e := byIP[b.Backend.Addr()]
		if e == nil {
			flush()
			rep.Lost = append(rep.Lost, fmt.Sprintf("binding %s left out: no rebuilt endpoint has %s; the agent removes it on start", b, b.Backend.Addr()))
			continue
		}
		if cur != nil && cur.ID == b.ID && cur.Proto == b.Proto.String() && cur.HostIP == b.Host.Addr() && cur.Backend == b.Backend.Addr() &&
			b.Host.Port() == cur.Host.Last+1 && b.Backend.Port() == cur.Container.Last+1 {
			cur.Host.Last++
			cur.Container.Last++
			continue
		}
		flush()
		cur = &PortMapping{Endpoint: e.Name, Proto: b.Proto.String(), HostIP: b.Host.Addr(), Backend: b.Backend.Addr(), ID: b.ID,
			Host: ipam.PortRange{First: b.Host.Port(), Last: b.Host.Port()}, Container: ipam.PortRange{First: b.Backend.Port(), Last: b.Backend.Port()}}
	}
	flush()
}

// nsfsMounts lists where namespaces are bound in this mount namespace, in
// the order they were bound: an engine's own path for a container's
// namespace (Docker's sandbox key) comes before a name given later.
func nsfsMounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 5 || !strings.HasPrefix(post, "nsfs ") {
			continue
		}
		// mountinfo escapes space, tab, newline and backslash as octal.
		if point, err := strconv.Unquote(`"` + strings.ReplaceAll(fields[4], `"`, `\"`) + `"`); err == nil {
			out = append(out, point)
		}
	}
	return out
}
