package main

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pontoon-net/pontoon/control"
)

// cmdCheck verifies that the attachment is as ADD left it: the agent's
// endpoint, the interface in the namespace with the endpoint's address and
// MAC, prevResult's address (chained), and exactly the wanted mappings.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	c := control.NewClient(conf.Socket)
	name := endpointName(args.ContainerID, args.IfName, conf.Network)
	ep, err := c.Endpoint(name)
	if notFound(err) {
		return checkFailed("no endpoint %s for container %s (%s) on network %s: ADD it again", name, args.ContainerID, args.IfName, conf.Network)
	}
	if err != nil {
		return agentError("look up endpoint "+name, err)
	}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("read prevResult: %v", err), "")
		}
		if !prevHas(prev, ep.IP) {
			return checkFailed("endpoint %s has %s, which prevResult does not list", name, ep.IP)
		}
	}
	if err := checkInterface(args.Netns, ep); err != nil {
		return err
	}
	ms, err := c.Ports(name)
	if err != nil {
		return agentError("list the mappings of endpoint "+name, err)
	}
	if missing, extra := samePorts(ms, conf.RuntimeConfig.PortMappings); len(missing)+len(extra) > 0 {
		return checkFailed("endpoint %s: mappings missing %v, not asked for %v: DEL and ADD it again", name, missing, extra)
	}
	return nil
}

func checkFailed(format string, a ...any) *types.Error {
	return types.NewError(errCheckFailed, fmt.Sprintf(format, a...), "")
}

func prevHas(prev *current.Result, a netip.Addr) bool {
	for _, ip := range prev.IPs {
		if got, ok := netip.AddrFromSlice(ip.Address.IP.To4()); ok && got == a {
			return true
		}
	}
	return false
}

// checkInterface looks into the namespace: the endpoint's interface is
// there, up to date with its MAC and address.
func checkInterface(path string, ep *control.Endpoint) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open network namespace %s: %v", path, err), "")
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open netlink in %s: %v", path, err), "")
	}
	defer h.Close()
	l, err := h.LinkByName(ep.IfName)
	if err != nil {
		return checkFailed("no %s in %s (endpoint %s): DEL and ADD it again", ep.IfName, path, ep.Name)
	}
	if mac := l.Attrs().HardwareAddr.String(); mac != ep.MAC {
		return checkFailed("%s in %s has MAC %s, endpoint %s has %s", ep.IfName, path, mac, ep.Name, ep.MAC)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return checkFailed("list addresses of %s in %s: %v", ep.IfName, path, err)
	}
	for _, ad := range addrs {
		if a, ok := netip.AddrFromSlice(ad.IP.To4()); ok && a == ep.IP {
			return nil
		}
	}
	return checkFailed("%s in %s lacks the address %s of endpoint %s: DEL and ADD it again", ep.IfName, path, ep.IP, ep.Name)
}

// samePorts compares the mappings an endpoint has with the specs wanted,
// as sets of "proto hostIP:hostPort->containerPort".
func samePorts(have []*control.PortMapping, want []portMapping) (missing, extra []string) {
	var h, w []string
	for _, m := range have {
		for i := 0; i <= int(m.Host.Last-m.Host.First); i++ {
			h = append(h, fmt.Sprintf("%s %s:%d->%d", m.Proto, hostIPOrAny(m.HostIP), int(m.Host.First)+i, int(m.Container.First)+i))
		}
	}
	for _, m := range want {
		proto := m.Protocol
		if proto == "" {
			proto = "tcp"
		}
		ip := netip.IPv4Unspecified()
		if m.HostIP != "" {
			ip, _ = netip.ParseAddr(m.HostIP)
		}
		w = append(w, fmt.Sprintf("%s %s:%d->%d", proto, ip, m.HostPort, m.ContainerPort))
	}
	for _, x := range w {
		if !slices.Contains(h, x) {
			missing = append(missing, x)
		}
	}
	for _, x := range h {
		if !slices.Contains(w, x) {
			extra = append(extra, x)
		}
	}
	return missing, extra
}

func hostIPOrAny(a netip.Addr) netip.Addr {
	if !a.IsValid() {
		return netip.IPv4Unspecified()
	}
	return a
}
