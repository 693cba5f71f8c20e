package control

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pontoon-net/pontoon/ipam"
)

// Owners an endpoint record may name; empty is the CLI.
var endpointOwners = map[string]bool{"": true, "cni": true, "docker": true}

// maxContainerID bounds an engine's container id; Docker's and Podman's
// are 64 hex digits.
const maxContainerID = 256

func checkOwner(owner, containerID string) error {
	if !endpointOwners[owner] {
		return kindf(ErrInvalid, "owner %q: give cni, docker, or leave it out", owner)
	}
	if len(containerID) > maxContainerID {
		return kindf(ErrInvalid, "container id of %d bytes: give at most %d", len(containerID), maxContainerID)
	}
	return nil
}

// adoptEndpoint records a veth pair another plugin made (the CNI bridge
// plugin, with pontoon-cni chained after it as a drop-in for portmap):
// the interface req.IfName in the namespace at path, carrying req.IP,
// whose host side is a veth on n's bridge. The address is taken in ipam
// as a static one so nothing else gets it; the datapath then treats the
// endpoint as any other (program on its veth, endpoints map entry held to
// its MAC), and ports publish to it. The caller holds a.mu.
func (a *Agent) adoptEndpoint(req EndpointAttach, n *Network, path string, static []netip.Addr) (*Endpoint, error) {
	if req.IfName == "" || len(static) == 0 {
		return nil, kindf(ErrInvalid, "adopting an interface needs its name (ifname) and its address (ip)")
	}
	// ipam would give the endpoint an IPv6 address the adopted interface
	// does not carry.
	if n.IPv6 {
		return nil, kindf(ErrUnsupported, "network %s is dual-stack: adopting an interface into it is not supported yet; adopt it into an IPv4 network", n.Name)
	}
	fd, ns, err := openNetns(path)
	if err != nil {
		return nil, err
	}
	defer closeFD(fd)
	if err := a.refuseHostNetns(ns, netnsArg(path, req.PID)); err != nil {
		return nil, err
	}
	for _, p := range a.namespacePeers(ns.Ino, "") {
		if p.Network == n.Name || p.ifName() == req.IfName {
			return nil, kindf(ErrConflict, "namespace %s already has endpoint %s (%s on network %s); detach it first", path, p.Name, p.ifName(), p.Network)
		}
	}
	peer, host, err := adoptablePair(fd, path, req.IfName, static[0], n.Bridge)
	if err != nil {
		return nil, err
	}
	ips, err := a.ipam.AllocateIPs(ipam.IPRequest{Network: n.Name, Owner: req.Name, Static: static})
	if err != nil {
		return nil, err
	}
	sub, _ := n.subnetOf(ips[0])
	e := &Endpoint{
		Name: req.Name, Network: n.Name, Netns: path, NetnsInode: ns.Ino,
		HostIf: host.Attrs().Name, IP: ips[0], PrefixLen: sub.Subnet.Bits(), Gateway: sub.Gateway,
		MAC: peer.Attrs().HardwareAddr.String(), HostMAC: host.Attrs().HardwareAddr.String(),
		MTU: peer.Attrs().MTU, IfName: req.IfName, NoDefaultRoute: true,
		Owner: req.Owner, ContainerID: req.ContainerID, Adopted: true,
	}
	if err := a.store.Update(func(tx ipam.Tx) error { return put(tx, bucketEndpoints, e.Name, e) }); err != nil {
		a.ipam.ReleaseIPs(n.Name, e.Name)
		return nil, fmt.Errorf("save endpoint %s: %w", e.Name, err)
	}
	a.st.endpoints[e.Name] = e
	a.labelLink(e.HostIf, endpointLabel(e))
	if err := a.syncTopology(); err != nil {
		a.log.Error("sync datapath topology", "endpoint", e.Name, "err", err)
	}
	c := *e
	return &c, nil
}

// adoptablePair finds the interface ifName in the namespace at nsFD, checks
// that it is a veth carrying ip, and returns it with its host side, which
// must be a veth on bridge.
func adoptablePair(nsFD int, path, ifName string, ip netip.Addr, bridge string) (peer, host netlink.Link, err error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(nsFD))
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	defer h.Close()
	peer, err = h.LinkByName(ifName)
	if err != nil {
		return nil, nil, kindf(ErrNotFound, "no interface %s in %s to adopt; run the plugin that makes it (bridge) first", ifName, path)
	}
	if peer.Type() != "veth" {
		return nil, nil, kindf(ErrInvalid, "%s in %s is a %s interface; only a veth whose host side is on the bridge can be adopted", ifName, path, peer.Type())
	}
	addrs, err := h.AddrList(peer, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses of %s in %s: %w", ifName, path, err)
	}
	if !hasIP(addrs, ip) {
		return nil, nil, kindf(ErrInvalid, "%s in %s does not carry %s; give the address its IPAM plugin assigned", ifName, path, ip)
	}
	host, err = netlink.LinkByIndex(peer.Attrs().ParentIndex)
	if err != nil || host.Type() != "veth" {
		return nil, nil, kindf(ErrNotFound, "the host side of %s in %s is not a veth in the agent's namespace; run the agent where the bridge plugin ran", ifName, path)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, nil, fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		return nil, nil, kindf(ErrConflict, "the host side %s of %s in %s is not on bridge %s; adopt it into the network of its own bridge", host.Attrs().Name, ifName, path, bridge)
	}
	return peer, host, nil
}

func hasIP(addrs []netlink.Addr, ip netip.Addr) bool {
	for _, ad := range addrs {
		if a, ok := netip.AddrFromSlice(ad.IP); ok && a.Unmap() == ip {
			return true
		}
	}
	return false
}
