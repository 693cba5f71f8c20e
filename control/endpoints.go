package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// Attach joins a network namespace to a network: an address from ipam, a
// veth pair with the peer as eth0 in the namespace (eth1, eth2, ... for a
// namespace already on other networks), then the record. The first
// endpoint of a namespace, or the one asking for it, holds the default
// route.
func (a *Agent) Attach(req EndpointAttach) (*Endpoint, error) {
	return a.attach(req, nil)
}

// engineJoin is an endpoint a container engine attaches before it has
// made the namespace (Docker's Join): the peer stays in the agent's
// namespace as PeerName for the engine to move into the namespace at
// Netns and configure, and the agent learns the namespace when it is
// there (adoptEngineNamespaces). The engine holds the namespace's routes.
type engineJoin struct {
	Netns, PeerName string
}

func (a *Agent) attach(req EndpointAttach, ej *engineJoin) (*Endpoint, error) {
	if err := checkName("endpoint", req.Name); err != nil {
		return nil, err
	}
	path := req.Netns
	switch {
	case ej != nil:
		path = ej.Netns
	case path != "" && req.PID != 0:
		return nil, kindf(ErrInvalid, "give --netns or --pid, not both")
	case req.PID < 0:
		return nil, kindf(ErrInvalid, "--pid %d: give the id of a process inside the namespace", req.PID)
	case req.PID > 0:
		path = "/proc/" + strconv.Itoa(req.PID) + "/ns/net"
	case path == "":
		return nil, kindf(ErrInvalid, "no namespace given; pass --netns PATH or --pid PID")
	}
	var static []netip.Addr
	if req.IP != "" {
		ip, err := netip.ParseAddr(req.IP)
		if err != nil {
			return nil, fmt.Errorf("%w IP %q: give an address inside the network's subnet, such as 10.88.0.10", ErrInvalid, req.IP)
		}
		if !ip.Unmap().Is4() {
			return nil, fmt.Errorf("%w IP %s: an IPv6 address; give it with --ip6", ErrInvalid, req.IP)
		}
		static = append(static, ip)
	}
	if req.IP6 != "" {
		ip, err := netip.ParseAddr(req.IP6)
		if err != nil || ip.Unmap().Is4() {
			return nil, fmt.Errorf("%w IPv6 address %q: give one inside the network's IPv6 subnet, such as fd00:1::10", ErrInvalid, req.IP6)
		}
		static = append(static, ip)
	}
	if req.IfName != "" {
		if err := checkIfName(req.IfName); err != nil {
			return nil, err
		}
	}
	if err := checkOwner(req.Owner, req.ContainerID); err != nil {
		return nil, err
	}
	if req.MAC != "" {
		mac, err := net.ParseMAC(req.MAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("%w MAC %q: write it as six hex pairs, such as 02:42:ac:11:00:02", ErrInvalid, req.MAC)
		}
		if mac[0]&1 != 0 {
			return nil, fmt.Errorf("%w MAC %s: a multicast address cannot be an interface's; clear the low bit of the first byte", ErrInvalid, mac)
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.network(req.Network)
	if err != nil {
		return nil, err
	}
	if _, ok := a.st.endpoints[req.Name]; ok {
		return nil, kindf(ErrConflict, "endpoint %s already exists; pick another name or detach it first", req.Name)
	}
	if req.Adopt {
		return a.adoptEndpoint(req, n, path, static)
	}
	if ej != nil {
		return a.attachForEngine(req, n, static, ej)
	}
	fd, ns, err := openNetns(path)
	if err != nil {
		return nil, err
	}
	defer closeFD(fd)
	if err := a.refuseHostNetns(ns, netnsArg(path, req.PID)); err != nil {
		return nil, err
	}
	ino := ns.Ino
	peers := a.namespacePeers(ino, "")
	taken := map[string]bool{}
	for _, p := range peers {
		if p.Network == n.Name {
			return nil, kindf(ErrConflict, "namespace %s is already attached to network %s as endpoint %s; a namespace has one endpoint per network (attach it to another network, or detach %s first)", path, n.Name, p.Name, p.Name)
		}
		taken[p.ifName()] = true
	}
	ifName := req.IfName
	if ifName == "" {
		if ifName, err = freeIfName(fd, path, taken); err != nil {
			return nil, err
		}
	} else if taken[ifName] {
		return nil, kindf(ErrConflict, "namespace %s has endpoint %s as %s already; give another --ifname", path, peerWithIf(peers, ifName), ifName)
	}
	var holder *Endpoint
	for _, p := range peers {
		if !p.NoDefaultRoute {
			holder = p
		}
	}

	ips, err := a.ipam.AllocateIPs(ipam.IPRequest{Network: n.Name, Owner: req.Name, Static: static})
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		Name: req.Name, Network: n.Name, Netns: path, NetnsInode: ino, HostIf: hostIfName(req.Name),
		MAC: req.MAC, MTU: n.MTU, IfName: ifName, NoDefaultRoute: holder != nil && !req.DefaultRoute,
		Owner: req.Owner, ContainerID: req.ContainerID,
	}
	setAddrs(e, n, ips)
	// The holder gives the route up when e takes it: createVeth replaces
	// the namespace's default route.
	var gaveUp *Endpoint
	if holder != nil && !e.NoDefaultRoute {
		c := *holder
		c.NoDefaultRoute = true
		gaveUp = &c
	}
	undo := func() {
		removeSourceRoute(e)
		deleteLink(e.HostIf)
		a.ipam.ReleaseIPs(n.Name, e.Name)
		if gaveUp != nil {
			if err := moveDefaultRoute(holder, fd); err != nil {
				a.log.Warn("give the default route back", "endpoint", holder.Name, "err", err)
			}
		}
	}
	if err := createVeth(e, n, fd); err != nil {
		undo()
		return nil, err
	}
	for _, p := range peers {
		pn := a.st.networks[p.Network]
		if pn == nil || p.Adopted {
			continue
		}
		if err := ensureSourceRoute(p, pn, fd); err != nil {
			a.log.Warn("add source rule", "endpoint", p.Name, "err", err)
		}
	}
	err = a.store.Update(func(tx ipam.Tx) error {
		if gaveUp != nil {
			if err := put(tx, bucketEndpoints, gaveUp.Name, gaveUp); err != nil {
				return err
			}
		}
		return put(tx, bucketEndpoints, e.Name, e)
	})
	if err != nil {
		undo()
		return nil, fmt.Errorf("save endpoint %s: %w", e.Name, err)
	}
	a.st.endpoints[e.Name] = e
	if gaveUp != nil {
		a.st.endpoints[gaveUp.Name] = gaveUp
	}
	if err := a.syncTopology(); err != nil {
		a.log.Error("sync datapath topology", "endpoint", e.Name, "err", err)
	}
	c := *e
	return &c, nil
}

// attachForEngine is attach for an engineJoin: the address and the pair,
// the peer left in the agent's namespace, then the record.
func (a *Agent) attachForEngine(req EndpointAttach, n *Network, static []netip.Addr, ej *engineJoin) (*Endpoint, error) {
	for _, ip := range static {
		a.ipam.ReleaseIPs(n.Name, engineAddrOwner(ip)) // reserveAddress's
	}
	ips, err := a.ipam.AllocateIPs(ipam.IPRequest{Network: n.Name, Owner: req.Name, Static: static})
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		Name: req.Name, Network: n.Name, Netns: ej.Netns,
		HostIf: hostIfName(req.Name), MAC: req.MAC, MTU: n.MTU, NoDefaultRoute: true,
		Owner: req.Owner, ContainerID: req.ContainerID,
	}
	setAddrs(e, n, ips)
	undo := func() {
		deleteLink(e.HostIf)
		a.ipam.ReleaseIPs(n.Name, e.Name)
	}
	if err := createPeerVeth(e, n, ej.PeerName); err != nil {
		undo()
		return nil, err
	}
	if err := a.store.Update(func(tx ipam.Tx) error { return put(tx, bucketEndpoints, e.Name, e) }); err != nil {
		undo()
		return nil, fmt.Errorf("save endpoint %s: %w", e.Name, err)
	}
	a.st.endpoints[e.Name] = e
	if err := a.syncTopology(); err != nil {
		a.log.Error("sync datapath topology", "endpoint", e.Name, "err", err)
	}
	c := *e
	return &c, nil
}

// setAddrs gives e the addresses ipam handed out, with their subnets'
// prefix lengths and gateways.
func setAddrs(e *Endpoint, n *Network, ips []netip.Addr) {
	for _, ip := range ips {
		sub, _ := n.subnetOf(ip)
		if ip.Is4() {
			e.IP, e.PrefixLen, e.Gateway = ip, sub.Subnet.Bits(), sub.Gateway
		} else {
			e.IPv6, e.PrefixLen6, e.Gateway6 = ip, sub.Subnet.Bits(), sub.Gateway
		}
	}
}

func closeFD(fd int) { unix.Close(fd) }

// namespacePeers are the endpoints in the live namespace ino but the one
// named except, by interface name (eth2 before eth10).
func (a *Agent) namespacePeers(ino uint64, except string) []*Endpoint {
	var out []*Endpoint
	for _, e := range a.st.endpoints {
		if e.NetnsInode == ino && e.Name != except && netnsAlive(e) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y *Endpoint) int {
		if c := len(x.ifName()) - len(y.ifName()); c != 0 {
			return c
		}
		if c := strings.Compare(x.ifName(), y.ifName()); c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

func peerWithIf(peers []*Endpoint, ifName string) string {
	for _, p := range peers {
		if p.ifName() == ifName {
			return p.Name
		}
	}
	return ""
}

// Endpoints lists endpoints by name, of one network or of all.
func (a *Agent) Endpoints(network string) ([]*Endpoint, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if network != "" {
		if _, err := a.network(network); err != nil {
			return nil, err
		}
	}
	out := []*Endpoint{}
	for _, e := range a.st.endpoints {
		if network == "" || e.Network == network {
			c := *e
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(x, y *Endpoint) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// Endpoint returns one endpoint.
func (a *Agent) Endpoint(name string) (*Endpoint, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, err := a.endpoint(name)
	if err != nil {
		return nil, err
	}
	c := *e
	return &c, nil
}

func (a *Agent) endpoint(name string) (*Endpoint, error) {
	e := a.st.endpoints[name]
	if e == nil {
		return nil, kindf(ErrNotFound, "no endpoint %s; list them with 'pontoon endpoint ls'", name)
	}
	return e, nil
}

// Detach removes an endpoint, its published ports first. Docker's
// endpoints are Docker's to remove: dockerd would go on believing in them.
func (a *Agent) Detach(name string) error {
	return a.detachAs(name, "")
}

// detachAs is Detach for an owner: "" for the API, "docker" for Docker's
// remote driver.
func (a *Agent) detachAs(name, owner string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, err := a.endpoint(name)
	if err != nil {
		return err
	}
	if e.Owner == dockerOwner && owner != dockerOwner {
		return kindf(ErrConflict, "endpoint %s belongs to Docker (container %s): remove it there ('docker network disconnect', 'docker stop' or 'docker rm')", name, containerLabel(e))
	}
	return a.detach(name)
}

// containerLabel names an endpoint's container for messages: its name,
// else the first 12 digits of its id.
func containerLabel(e *Endpoint) string {
	switch {
	case e.ContainerName != "":
		return e.ContainerName
	case e.ContainerID != "":
		return shortDockerID(e.ContainerID)
	}
	return "unknown"
}

// detach: mappings, then the record, then the veth and the address. A
// crash in between leaves only what reconcile prunes. When the endpoint
// held its namespace's default route, the first other endpoint there (by
// interface name) takes it over.
func (a *Agent) detach(name string) error {
	e := a.st.endpoints[name]
	var ms []*PortMapping
	for m := range a.st.endpointPorts(name) {
		ms = append(ms, m)
	}
	if err := a.unpublish(ms); err != nil {
		return err
	}
	var heir *Endpoint
	if !e.NoDefaultRoute {
		if peers := a.namespacePeers(e.NetnsInode, name); len(peers) > 0 {
			c := *peers[0]
			c.NoDefaultRoute = false
			heir = &c
		}
	}
	err := a.store.Update(func(tx ipam.Tx) error {
		if heir != nil {
			if err := put(tx, bucketEndpoints, heir.Name, heir); err != nil {
				return err
			}
		}
		return tx.Delete(bucketEndpoints, []byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete endpoint %s: %w", name, err)
	}
	delete(a.st.endpoints, name)
	if heir != nil {
		a.st.endpoints[heir.Name] = heir
	}
	// An adopted pair is its maker's to delete (the CNI bridge plugin's
	// DEL runs after ours), and it got no source rule.
	if netnsAlive(e) && !e.Adopted {
		if err := removeSourceRoute(e); err != nil {
			a.log.Warn("remove source rule", "endpoint", name, "err", err)
		}
	}
	if !e.Adopted {
		if err := deleteLink(e.HostIf); err != nil {
			return err
		}
	} else if err := clearLabel(e.HostIf); err != nil {
		a.log.Warn("unlabel adopted veth", "endpoint", name, "veth", e.HostIf, "err", err)
	}
	if heir != nil {
		if err := a.giveDefaultRoute(heir); err != nil {
			return err
		}
	}
	if err := a.syncTopology(); err != nil {
		return err
	}
	if _, err := a.ipam.ReleaseIPs(e.Network, name); err != nil && !errors.Is(err, ipam.ErrNotFound) {
		return err
	}
	return nil
}

// giveDefaultRoute points e's namespace's default route at e's gateway.
func (a *Agent) giveDefaultRoute(e *Endpoint) error {
	fd, _, err := openNetns(e.Netns)
	if err != nil {
		return err
	}
	defer closeFD(fd)
	if err := moveDefaultRoute(e, fd); err != nil {
		return fmt.Errorf("move the default route to endpoint %s: %w", e.Name, err)
	}
	return nil
}

// unpublish removes mappings: records, then map entries and their
// conntrack, then the host ports.
func (a *Agent) unpublish(ms []*PortMapping) error {
	if len(ms) == 0 {
		return nil
	}
	// One store transaction for the records and the host ports, one map
	// batch and one walk of the conntrack tables, however many there are.
	pas := make([]ipam.PortAllocation, 0, len(ms))
	for _, m := range ms {
		proto, _ := ipam.ParseProto(m.Proto)
		pas = append(pas, ipam.PortAllocation{Owner: m.Endpoint, Proto: proto, HostIP: m.HostIP, Ports: m.Host})
	}
	_, err := a.ipam.ReleasePortsBatch(pas, func(tx ipam.Tx) error {
		return a.st.deleteRecords(tx, ms)
	})
	if err != nil {
		return fmt.Errorf("delete port mappings: %w", err)
	}
	var keys []maps.BindingKey
	ids := make(map[uint32]bool, len(ms))
	idList := make([]uint32, 0, len(ms))
	for _, m := range ms {
		a.st.deletePort(m)
		a.portsGen++
		if !ids[m.ID] {
			ids[m.ID] = true
			idList = append(idList, m.ID)
		}
		bs, err := mappingBindings(m)
		if err != nil {
			continue
		}
		for _, b := range bs {
			keys = append(keys, b.Key())
		}
	}
	if err := a.writer.DeleteBatch(keys); err != nil {
		return err
	}
	if a.mayHaveFlows(idList) {
		if _, err := maps.NewCT(a.dp.Maps.CT, a.dp.Maps.CTNew).DeleteBindings(ids); err != nil {
			a.log.Warn("flush conntrack of unpublished bindings", "count", len(ids), "err", err)
		}
	}
	// Their counters go too: per-CPU entries kept for gone bindings would
	// fill the map over publish and unpublish cycles until a restart.
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Delete(idList); err != nil {
		a.log.Warn("delete traffic counters of unpublished bindings", "count", len(ids), "err", err)
	}
	for _, id := range idList {
		delete(a.countedLate, id)
	}
	return nil
}
