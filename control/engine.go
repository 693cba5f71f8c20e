package control

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/ipam"
)

// adoptEngineNamespaces looks for the namespaces of engine endpoints the
// agent has not seen yet (engineJoin). Docker makes a container's
// namespace after Join, moves the peer into it, names and addresses it:
// once the namespace at the endpoint's path holds an interface with the
// endpoint's MAC and address, the record gets the namespace's inode and
// the interface's name, and the namespace its source rule (sourceRoute),
// as any endpoint's. Until then the endpoint waits; nothing is an error.
func (a *Agent) adoptEngineNamespaces() {
	var waiting []string
	for name, e := range a.st.endpoints {
		if e.waiting() {
			waiting = append(waiting, name)
		}
	}
	slices.Sort(waiting)
	for _, name := range waiting {
		e := a.st.endpoints[name]
		adopted, err := a.adoptNamespace(e)
		if err != nil {
			a.log.Warn("adopt the namespace of an engine's endpoint", "endpoint", name, "netns", e.Netns, "err", err)
			continue
		}
		if adopted != nil {
			a.log.Info("endpoint's namespace found", "endpoint", name, "netns", adopted.Netns, "ifname", adopted.IfName, "container", adopted.ContainerName)
		}
	}
}

// adoptNamespace adopts e's namespace when it is ready; nil when not yet.
func (a *Agent) adoptNamespace(e *Endpoint) (*Endpoint, error) {
	fd, ns, err := openNetns(e.Netns)
	if err != nil {
		return nil, nil // not made yet, or still a placeholder file
	}
	defer closeFD(fd)
	if err := a.refuseHostNetns(ns, e.Netns); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", e.Netns, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces in %s: %w", e.Netns, err)
	}
	var peer netlink.Link
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == e.MAC {
			peer = l
		}
	}
	if peer == nil {
		return nil, nil
	}
	addrs, err := h.AddrList(peer, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses in %s: %w", e.Netns, err)
	}
	if !hasAddr(addrs, e.IP, e.PrefixLen) {
		return nil, nil // the engine has not configured it yet
	}
	c := *e
	c.NetnsInode, c.IfName = ns.Ino, peer.Attrs().Name
	if c.ContainerID == "" {
		c.ContainerID = containerInNetns(ns)
	}
	if c.ContainerName == "" && c.ContainerID != "" && a.docker != nil {
		c.ContainerName = a.docker.containerName(c.ContainerID)
	}
	if err := a.store.Update(func(tx ipam.Tx) error { return put(tx, bucketEndpoints, c.Name, &c) }); err != nil {
		return nil, fmt.Errorf("save endpoint %s: %w", c.Name, err)
	}
	a.st.endpoints[c.Name] = &c
	a.labelLink(c.HostIf, endpointLabel(&c))
	if n := a.st.networks[c.Network]; n != nil {
		if err := ensureSourceRoute(&c, n, fd); err != nil {
			a.log.Warn("add source rule", "endpoint", c.Name, "err", err)
		}
	}
	return &c, nil
}

// containerIDRE finds a container id in a cgroup path: Docker's cgroupfs
// driver puts a container in .../docker/ID, its systemd driver in
// docker-ID.scope, containerd's CRI in cri-containerd-ID.scope.
var containerIDRE = regexp.MustCompile(`[/-]([0-9a-f]{64})(\.scope)?$`)

// containerInNetns is the id of the container whose processes live in the
// namespace, from the cgroup of the first process found there; empty when
// none is found. It walks /proc once.
func containerInNetns(ns nsID) string {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", p.Name(), "ns/net"), &st) != nil || nsIDOf(&st) != ns {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			if m := containerIDRE.FindSubmatch(line); m != nil {
				return string(m[1])
			}
		}
	}
	return ""
}

// engineAddrOwner is the ipam owner of an address an engine asked for
// before the endpoint holding it exists (Docker's RequestAddress).
func engineAddrOwner(a netip.Addr) string { return "reserved:" + a.String() }

// reserveAddress holds an address of the network for an endpoint an
// engine will attach with it (Docker asks its IPAM driver first, then its
// network driver, once per family): static when valid, else the next free
// one of the family (4 or 6). It returns the address and its prefix
// length.
func (a *Agent) reserveAddress(network string, family int, static netip.Addr) (netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.network(network)
	if err != nil {
		return netip.Prefix{}, err
	}
	// ipam owners hold one address each, named before it is known: take
	// it under a passing name, then under the one that names it, within
	// one hold of a.mu, so no other allocation runs in between.
	const passing = "reserving"
	req := ipam.IPRequest{Network: n.Name, Owner: passing, Family: family}
	if static.IsValid() {
		req.Static = []netip.Addr{static}
	}
	ips, err := a.ipam.AllocateIPs(req)
	if err != nil {
		return netip.Prefix{}, err
	}
	a.ipam.ReleaseIPs(n.Name, passing)
	if len(ips) == 0 {
		return netip.Prefix{}, kindf(ErrInvalid, "network %s has no IPv%d subnet; create it with one", n.Name, family)
	}
	ip := ips[0]
	if _, err := a.ipam.AllocateIPs(ipam.IPRequest{Network: n.Name, Owner: engineAddrOwner(ip), Static: []netip.Addr{ip}, Family: family}); err != nil {
		return netip.Prefix{}, err
	}
	sub, _ := n.subnetOf(ip)
	return netip.PrefixFrom(ip, sub.Subnet.Bits()), nil
}

// releaseReserved gives back an address reserveAddress held and no
// endpoint took; one an endpoint took is released with the endpoint.
func (a *Agent) releaseReserved(network string, ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.st.networks[network]; ok {
		a.ipam.ReleaseIPs(network, engineAddrOwner(ip))
	}
}

// networkWithSubnet names the network one of whose subnets is pool.
func (a *Agent) networkWithSubnet(pool netip.Prefix) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range a.st.networks {
		for _, s := range n.subnets() {
			if s.Subnet.Masked() == pool.Masked() {
				return n.Name, true
			}
		}
	}
	return "", false
}

// pendingPoolTTL is how long a pool picked for dockerd stays reserved
// without its network: dockerd creates the network right after the pool,
// or releases the pool, unless it dies in between.
const pendingPoolTTL = time.Minute

// pickDockerPool picks a free private subnet as `network create` without
// --subnet does, and reserves it until dockerd creates its network (or
// releases it, or pendingPoolTTL passes): dockerd asks for the pool and
// creates the network in two calls, and parallel creates picking in
// between would get the same pool, the later network an overlap error.
func (a *Agent) pickDockerPool(v6 bool) (netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var p netip.Prefix
	if v6 {
		var err error
		if p, err = a.pickFree(netlink.FAMILY_V6, ulaCandidates()); err != nil {
			return netip.Prefix{}, kindf(ErrConflict, "every candidate unique local /64 overlaps a route, a nameserver or a network; give --subnet with an IPv6 subnet")
		}
	} else {
		n, err := a.subnetsFor(NetworkCreate{Name: "docker-pool"})
		if err != nil {
			return netip.Prefix{}, err
		}
		p = n.Subnets[0].Prefix
	}
	if a.pendingPools == nil {
		a.pendingPools = map[netip.Prefix]time.Time{}
	}
	a.pendingPools[p] = time.Now().Add(pendingPoolTTL)
	return p, nil
}

// releasePool ends the reservation of a pool dockerd gave up.
func (a *Agent) releasePool(p netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pendingPools, p)
}

// heldPools are the pools reserved for dockerd and not yet expired; the
// caller holds a.mu.
func (a *Agent) heldPools() []netip.Prefix {
	var out []netip.Prefix
	now := time.Now()
	for p, until := range a.pendingPools {
		if now.After(until) {
			delete(a.pendingPools, p)
			continue
		}
		out = append(out, p)
	}
	return out
}

// UnpublishAll removes every mapping of the endpoint and returns them.
func (a *Agent) UnpublishAll(endpoint string) ([]*PortMapping, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.endpoint(endpoint); err != nil {
		return nil, err
	}
	var ms []*PortMapping
	for _, m := range a.st.ports {
		if m.Endpoint == endpoint {
			ms = append(ms, m)
		}
	}
	out := clones(ms)
	if err := a.unpublish(ms); err != nil {
		return nil, err
	}
	sortMappings(out)
	return out, nil
}
