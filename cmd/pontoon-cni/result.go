package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/control"
)

// mainResult is what ADD made in main-plugin mode: the host side and the
// container's interface, its address with its gateway, and the default
// route when this attachment holds the namespace's. DNS is the runtime's.
func mainResult(ep *control.Endpoint, netns string) *current.Result {
	addr := netip.PrefixFrom(ep.IP, ep.PrefixLen)
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: ep.HostIf, Mac: ep.HostMAC},
			{Name: ep.IfName, Mac: ep.MAC, Sandbox: netns},
		},
		IPs: []*current.IPConfig{{Interface: current.Int(1), Address: *ipNet(addr), Gateway: ep.Gateway.AsSlice()}},
	}
	if !ep.NoDefaultRoute {
		r.Routes = []*types.Route{{Dst: *ipNet(netip.MustParsePrefix("0.0.0.0/0")), GW: ep.Gateway.AsSlice()}}
	}
	return r
}

// containerAddress is the IPv4 address prevResult gives the container's
// interface ifName (or, when no entry names an interface, the first IPv4
// address), with its gateway.
func containerAddress(prev *current.Result, ifName string) (netip.Prefix, netip.Addr, error) {
	var cands []*current.IPConfig
	for _, ip := range prev.IPs {
		if ip.Address.IP.To4() == nil {
			continue
		}
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(prev.Interfaces) {
			iface := prev.Interfaces[*ip.Interface]
			if iface.Sandbox == "" || iface.Name != ifName {
				continue
			}
		}
		cands = append(cands, ip)
	}
	if len(cands) == 0 {
		return netip.Prefix{}, netip.Addr{}, invalidConf(fmt.Sprintf("prevResult has no IPv4 address for %s: chain pontoon-cni after a plugin that assigns one (bridge with host-local)", ifName))
	}
	ip := cands[0]
	a, _ := netip.AddrFromSlice(ip.Address.IP.To4())
	bits, _ := ip.Address.Mask.Size()
	gw, ok := netip.AddrFromSlice(ip.Gateway.To4())
	if !ok {
		return netip.Prefix{}, netip.Addr{}, invalidConf(fmt.Sprintf("prevResult gives %s no gateway: give the bridge plugin \"isGateway\": true (Pontoon routes published ports through it)", a))
	}
	return netip.PrefixFrom(a, bits), gw, nil
}

// prevBridge is the bridge prevResult's host-side interfaces name.
func prevBridge(prev *current.Result) (string, error) {
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" {
			continue
		}
		if l, err := netlink.LinkByName(iface.Name); err == nil && l.Type() == "bridge" {
			return iface.Name, nil
		}
	}
	return "", invalidConf("prevResult names no bridge on the host: chain pontoon-cni after the bridge plugin")
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
