package control

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// CreateNetwork makes a network: ipam, then the bridge, then the record;
// a failure undoes the steps already taken.
func (a *Agent) CreateNetwork(req NetworkCreate) (*NetworkInfo, error) {
	return a.createNetwork(req, "")
}

// createNetwork is CreateNetwork for an owner: "" for the API, "docker"
// for Docker's remote driver.
func (a *Agent) createNetwork(req NetworkCreate, owner string) (*NetworkInfo, error) {
	if err := checkName("network", req.Name); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.st.networks[req.Name]; ok {
		return nil, kindf(ErrConflict, "network %s already exists; pick another name or remove it first", req.Name)
	}
	if req.Masquerade6 && req.Routed {
		return nil, kindf(ErrInvalid, "--routed and --masquerade6 exclude each other: a routed network's containers reach out by their own IPv6 addresses; leave out --masquerade6")
	}
	n := &Network{Name: req.Name, Bridge: req.Bridge, MTU: req.MTU, ICC: true, Masquerade: !req.Routed, Masquerade6: req.Masquerade6, Routed: req.Routed, Owner: owner}
	if req.ICC != nil {
		n.ICC = *req.ICC
	}
	if req.Masquerade != nil {
		if *req.Masquerade && req.Routed {
			return nil, kindf(ErrInvalid, "--routed and --masquerade=true exclude each other: a routed network's containers are reached, and reach out, by their own addresses; leave out --masquerade")
		}
		n.Masquerade = *req.Masquerade
	}
	if n.MTU == 0 {
		n.MTU = defaultMTU
	}
	if n.MTU < 68 || n.MTU > 65535 {
		return nil, fmt.Errorf("%w MTU %d: give 68-65535", ErrInvalid, n.MTU)
	}
	if n.Bridge == "" {
		n.Bridge = defaultBridgeName(n.Name)
	} else if len(n.Bridge) > maxIfNameLen || !nameRE.MatchString(n.Bridge) {
		return nil, fmt.Errorf("%w bridge name %q: interface names are 1-15 letters, digits, '_', '.' or '-'", ErrInvalid, n.Bridge)
	}
	for _, other := range a.st.networks {
		if networkID(other.Name) == networkID(n.Name) {
			return nil, kindf(ErrConflict, "network name %s hashes to the datapath id of network %s; pick another name", n.Name, other.Name)
		}
		if other.Bridge == n.Bridge {
			return nil, kindf(ErrConflict, "bridge %s already belongs to network %s", n.Bridge, other.Name)
		}
	}

	ipn, err := a.subnetsFor(req)
	if err != nil {
		return nil, err
	}
	if n.Masquerade6 && !slices.ContainsFunc(ipn.Subnets, func(s ipam.Subnet) bool { return s.Prefix.Addr().Is6() }) {
		return nil, kindf(ErrInvalid, "--masquerade6 needs an IPv6 subnet: add --ipv6 or --subnet6 (such as fd00:1::/64)")
	}
	for _, s := range ipn.Subnets {
		n.IPv6 = n.IPv6 || s.Prefix.Addr().Is6()
		if err := a.validateSubnet(s.Prefix, s.Gateway, req.Force, n.Bridge); err != nil {
			return nil, err
		}
		n.Subnets = append(n.Subnets, NetworkSubnet{Subnet: s.Prefix, Gateway: s.Gateway, IPRange: s.Range, AuxAddresses: s.Aux})
	}
	n.Subnet, n.Gateway = n.Subnets[0].Subnet, n.Subnets[0].Gateway

	exists, hasGW, err := bridgeHasAddr(n.Bridge, n.Gateway)
	if err != nil {
		return nil, err
	}
	if exists {
		if req.Bridge == "" {
			return nil, kindf(ErrConflict, "an interface named %s already exists; name it with --bridge to adopt it, or pick another network name", n.Bridge)
		}
		n.Adopted, n.AddedGateway = true, !hasGW
	}

	if _, err := a.ipam.AddNetwork(ipamNetwork(n)); err != nil {
		return nil, err
	}
	if err := ensureBridge(n); err != nil {
		removeBridge(n)
		a.ipam.RemoveNetwork(n.Name)
		return nil, err
	}
	if err := a.store.Update(func(tx ipam.Tx) error { return put(tx, bucketNetworks, n.Name, n) }); err != nil {
		removeBridge(n)
		a.ipam.RemoveNetwork(n.Name)
		return nil, fmt.Errorf("save network %s: %w", n.Name, err)
	}
	a.st.networks[n.Name] = n
	for _, s := range n.Subnets {
		delete(a.pendingPools, s.Subnet)
	}
	if err := a.addNetworkTopology(n); err != nil {
		a.log.Error("sync datapath topology", "network", n.Name, "err", err)
	}
	if n.IPv6 && (n.Routed || n.Masquerade6) {
		if err := a.enableForwarding6(); err != nil {
			a.log.Error("routed or NAT66 IPv6 network: the host does not forward IPv6", "network", n.Name, "err", err)
		}
	}
	return a.networkInfo(n), nil
}

// addNetworkTopology gives the datapath one new network: the program on
// its bridge and its entry in the networks map. A full syncTopology
// re-attaches every bridge and checks every pin, which made the 1,000th
// network several times slower to create than the 250th. An adopted
// bridge may carry uplink programs to shed, so it gets the full sync.
func (a *Agent) addNetworkTopology(n *Network) error {
	if n.Adopted {
		return a.syncTopology()
	}
	if _, err := a.dp.AttachBridge(n.Bridge); err != nil {
		return fmt.Errorf("attach bridge program to %s: %w", n.Bridge, err)
	}
	// The prefilter learns of the subnets before the network is written.
	networks, subnets := datapathNetworks(n)
	if err := a.widenPrefilter(nil, subnets); err != nil {
		return err
	}
	for _, nw := range networks {
		if err := maps.NewNetworks(a.dp.Maps.Networks).Put(nw); err != nil {
			return err
		}
	}
	return nil
}

// removeNetworkTopology takes a removed network out of the datapath: its
// entries of the networks map (its bridge took its program along). An
// adopted bridge outlives the network and may become an uplink, so it
// gets the full sync, as in addNetworkTopology.
func (a *Agent) removeNetworkTopology(n *Network) error {
	if n.Adopted {
		return a.syncTopology()
	}
	networks, _ := datapathNetworks(n)
	for _, nw := range networks {
		if err := maps.NewNetworks(a.dp.Maps.Networks).Delete(nw.Subnet); err != nil {
			return err
		}
	}
	return nil
}

// datapathNetworks are the networks map entries of n, one per subnet, and
// those subnets. An IPv6 subnet masquerades when either family does:
// without NAT66 the flag keeps its source in (IPv4's masquerade never
// meant leaking ULA addresses), with it the source is translated.
func datapathNetworks(n *Network) ([]maps.Network, []netip.Prefix) {
	var networks []maps.Network
	var subnets []netip.Prefix
	for _, sub := range n.subnets() {
		nw := maps.Network{
			Subnet: sub.Subnet.Masked(), Gateway: sub.Gateway, ID: networkID(n.Name),
			Masquerade: n.Masquerade, NoICC: !n.ICC, Routed: n.Routed,
		}
		if sub.Subnet.Addr().Is6() {
			nw.Masquerade, nw.NAT66 = n.Masquerade || n.Masquerade6, n.Masquerade6
		}
		networks = append(networks, nw)
		subnets = append(subnets, sub.Subnet)
	}
	return networks, subnets
}

// bridgeLinks lists the interfaces once per sync, by name, for
// attachBridge: a lookup per bridge was a quarter of a resync's time at
// a thousand networks.
func (a *Agent) bridgeLinks() (map[string]netlink.Link, error) {
	links, err := loader.RetryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	return byName, nil
}

// attachBridge attaches the bridge program to the bridge as listed, or
// as looked up now when it was made after the listing.
func (a *Agent) attachBridge(name string, listed map[string]netlink.Link) error {
	var err error
	if l, ok := listed[name]; ok {
		_, err = a.dp.AttachBridgeLink(l)
	} else {
		_, err = a.dp.AttachBridge(name)
	}
	return err
}

// subnetsFor reads the requested subnets with their gateways, ranges and
// auxiliary addresses, and picks a free private subnet for a family that
// has none: IPv4 always, IPv6 when asked for (--ipv6). IPv4 subnets come
// first, so Network.Subnet and Gateway, which older readers use, stay IPv4.
func (a *Agent) subnetsFor(req NetworkCreate) (ipam.Network, error) {
	opts := ipam.NetworkOptions{Subnets: req.Subnets, Gateways: req.Gateways, IPRanges: req.IPRanges, AuxAddresses: req.AuxAddresses}
	if req.Subnet != "" {
		opts.Subnets = append([]string{req.Subnet}, opts.Subnets...)
	}
	if req.Gateway != "" {
		opts.Gateways = append([]string{req.Gateway}, opts.Gateways...)
	}
	if req.Subnet6 != "" {
		if p, err := netip.ParsePrefix(req.Subnet6); err == nil && !p.Addr().Is6() {
			return ipam.Network{}, kindf(ErrInvalid, "--subnet6 %s is an IPv4 subnet; give it with --subnet, or give an IPv6 one such as fd00:1::/64", req.Subnet6)
		}
		opts.Subnets = append(opts.Subnets, req.Subnet6)
	}
	if req.Gateway6 != "" {
		if g, err := netip.ParseAddr(req.Gateway6); err == nil && !g.Is6() {
			return ipam.Network{}, kindf(ErrInvalid, "--gateway6 %s is an IPv4 address; give it with --gateway, or give an IPv6 one", req.Gateway6)
		}
		opts.Gateways = append(opts.Gateways, req.Gateway6)
	}
	var has4, has6 bool
	for _, s := range opts.Subnets {
		if p, err := netip.ParsePrefix(s); err == nil {
			has4, has6 = has4 || p.Addr().Unmap().Is4(), has6 || !p.Addr().Unmap().Is4()
		}
	}
	if len(opts.Subnets) == 0 {
		// A range or a reserved address only means something in a
		// subnet the user chose.
		switch {
		case len(opts.IPRanges) > 0:
			return ipam.Network{}, kindf(ErrInvalid, "--ip-range %s needs the subnet it lies in; give --subnet", opts.IPRanges[0])
		case len(opts.AuxAddresses) > 0:
			return ipam.Network{}, kindf(ErrInvalid, "--aux-address %s needs the subnet it lies in; give --subnet", opts.AuxAddresses[0])
		case len(opts.Gateways) > 1:
			return ipam.Network{}, kindf(ErrInvalid, "%d gateways and no subnet: give one --subnet per gateway", len(opts.Gateways))
		}
	}
	if !has4 {
		p, err := a.pickFree(netlink.FAMILY_V4, candidateSubnets())
		if err != nil {
			return ipam.Network{}, kindf(ErrConflict, "every candidate private range overlaps a route, a nameserver or a network; give --subnet")
		}
		opts.Subnets = append([]string{p.String()}, opts.Subnets...)
	}
	if req.IPv6 && !has6 {
		if req.Gateway6 != "" {
			return ipam.Network{}, kindf(ErrInvalid, "--gateway6 %s needs the subnet it lies in; give --subnet6", req.Gateway6)
		}
		p, err := a.pickFree(netlink.FAMILY_V6, ulaCandidates())
		if err != nil {
			return ipam.Network{}, kindf(ErrConflict, "every candidate unique local /64 overlaps a route, a nameserver or a network; give --subnet6")
		}
		opts.Subnets = append(opts.Subnets, p.String())
	}
	slices.SortStableFunc(opts.Subnets, func(x, y string) int {
		return cmpBool(!isIPv4Prefix(x), !isIPv4Prefix(y))
	})
	return ipam.ParseNetwork(req.Name, opts)
}

// pickFree is the first candidate that overlaps no route, address or
// nameserver of the host's family, nor another network's subnet.
func (a *Agent) pickFree(family int, candidates []netip.Prefix) (netip.Prefix, error) {
	taken, err := hostPrefixes(family)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, n := range a.st.networks {
		for _, s := range n.subnets() {
			taken = append(taken, s.Subnet)
		}
	}
	taken = append(taken, a.heldPools()...)
	p, ok := pickSubnet(candidates, taken)
	if !ok {
		return netip.Prefix{}, errors.New("no free candidate")
	}
	return p, nil
}

func isIPv4Prefix(s string) bool {
	p, err := netip.ParsePrefix(s)
	return err == nil && p.Addr().Unmap().Is4()
}

func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

func (a *Agent) networkInfo(n *Network) *NetworkInfo {
	info := &NetworkInfo{Network: *n, Endpoints: []string{}}
	for _, e := range a.st.endpoints {
		if e.Network == n.Name {
			info.Endpoints = append(info.Endpoints, e.Name)
		}
	}
	sort.Strings(info.Endpoints)
	if !n.ICC {
		info.Notes = append(info.Notes, "icc=false: endpoints reach each other only through published ports")
	}
	if n.Routed {
		info.Notes = append(info.Notes, fmt.Sprintf("routed: the outside reaches endpoints by their own addresses, any port (give other hosts a route to %s via this host); no masquerade", subnetList(n)))
	}
	if n.Masquerade6 {
		info.Notes = append(info.Notes, "masquerade6: outgoing IPv6 leaves with the uplink's IPv6 address ("+a.uplinkAddrs6()+")")
	}
	return info
}

// uplinkAddrs6 names each uplink's NAT66 address, for notes.
func (a *Agent) uplinkAddrs6() string {
	var out []string
	for _, u := range a.uplinks {
		if u.Addr6.IsValid() {
			out = append(out, u.Addr6.String()+" on "+u.Name)
		} else {
			out = append(out, "none on "+u.Name+", which drops it")
		}
	}
	if len(out) == 0 {
		return "no uplink yet"
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// subnetList names a network's subnets, for messages.
func subnetList(n *Network) string {
	var out []string
	for _, s := range n.subnets() {
		out = append(out, s.Subnet.String())
	}
	return strings.Join(out, ", ")
}

// Networks lists every network by name.
func (a *Agent) Networks() []*NetworkInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*NetworkInfo, 0, len(a.st.networks))
	for _, n := range a.st.networks {
		out = append(out, a.networkInfo(n))
	}
	slices.SortFunc(out, func(x, y *NetworkInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// Network returns one network.
func (a *Agent) Network(name string) (*NetworkInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.network(name)
	if err != nil {
		return nil, err
	}
	return a.networkInfo(n), nil
}

func (a *Agent) network(name string) (*Network, error) {
	n := a.st.networks[name]
	if n == nil {
		return nil, kindf(ErrNotFound, "no network %s; list them with 'pontoon network ls'", name)
	}
	return n, nil
}

// RemoveNetwork deletes a network; with force its endpoints go first.
// A network Docker made is Docker's to remove (with force, the user's,
// when Docker has forgotten it).
func (a *Agent) RemoveNetwork(name string, force bool) error {
	return a.removeNetwork(name, force, "")
}

// removeNetwork is RemoveNetwork for an owner: "" for the API, "docker"
// for Docker's remote driver.
func (a *Agent) removeNetwork(name string, force bool, owner string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.network(name)
	if err != nil {
		return err
	}
	if n.Owner == dockerOwner && owner != dockerOwner && !force {
		return kindf(ErrConflict, "network %s belongs to %s: remove it there (%s), or with --force if %s no longer has it", name, n.Owner, ownerRemoveHint(n), n.Owner)
	}
	eps := a.networkInfo(n).Endpoints
	if len(eps) > 0 && !force {
		return kindf(ErrConflict, "network %s has %d endpoints attached (first %s); detach them or use --force", name, len(eps), eps[0])
	}
	for _, e := range eps {
		if err := a.detach(e); err != nil {
			return err
		}
	}
	if err := a.store.Update(func(tx ipam.Tx) error { return tx.Delete(bucketNetworks, []byte(name)) }); err != nil {
		return fmt.Errorf("delete network %s: %w", name, err)
	}
	delete(a.st.networks, name)
	// An adopted bridge outlives the network: take our program off it.
	if err := a.dp.DetachBridge(n.Bridge); err != nil {
		a.log.Warn("detach bridge program", "bridge", n.Bridge, "err", err)
	}
	if err := removeBridge(n); err != nil {
		return err
	}
	a.hostNet.forget(n.Bridge, n.Adopted)
	if err := a.removeNetworkTopology(n); err != nil {
		return err
	}
	return a.ipam.RemoveNetwork(name)
}
