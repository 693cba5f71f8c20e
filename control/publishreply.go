package control

import (
	"fmt"
	"net/netip"

	"github.com/pontoon-net/pontoon/ipam"
)

// publishHostIP is the host address a spec publishes on: the one it
// names, or IPv4's wildcard, which a dual-stack endpoint's mapping
// extends to IPv6's (mappingBackends).
func publishHostIP(spec PortSpec) netip.Addr {
	if spec.HostIP.IsValid() {
		return spec.HostIP
	}
	return netip.IPv4Unspecified()
}

// publishedPorts is the compact reply of a publish: ms are the request's
// new mappings in spec order. Their binding ids are listed only when they
// are not consecutive.
func publishedPorts(e *Endpoint, ms []*PortMapping) *PublishedPorts {
	p := &PublishedPorts{Endpoint: e.Name, FirstID: ms[0].ID, EndpointIP: e.IP, EndpointIPv6: e.IPv6, HostPorts: make([]uint16, len(ms))}
	consecutive := true
	for i, m := range ms {
		p.HostPorts[i] = m.Host.First
		consecutive = consecutive && m.ID == p.FirstID+uint32(i)
	}
	if !consecutive {
		p.IDs = make([]uint32, len(ms))
		for i, m := range ms {
			p.IDs[i] = m.ID
		}
	}
	return p
}

// mappings rebuilds the mappings of the request that got reply p, as the
// full reply would have listed them: the agent builds each the same way
// from its spec (publish).
func (p *PublishedPorts) mappings(req PublishRequest) ([]*PortMapping, error) {
	if len(p.HostPorts) != len(req.Specs) {
		return nil, fmt.Errorf("read agent reply: %d host ports for %d port specs; the agent and this client disagree on the API: run the same version of both", len(p.HostPorts), len(req.Specs))
	}
	if p.IDs != nil && len(p.IDs) != len(req.Specs) {
		return nil, fmt.Errorf("read agent reply: %d binding ids for %d port specs; the agent and this client disagree on the API: run the same version of both", len(p.IDs), len(req.Specs))
	}
	allow, err := parseAllowFrom(req.AllowFrom)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{Name: p.Endpoint, IP: p.EndpointIP, IPv6: p.EndpointIPv6}
	all := make([]PortMapping, len(req.Specs))
	out := make([]*PortMapping, len(req.Specs))
	for i, s := range req.Specs {
		spec, err := ParsePortSpec(s)
		if err != nil {
			return nil, err
		}
		hostIP := publishHostIP(spec)
		backend, backend6, err := mappingBackends(e, spec, hostIP)
		if err != nil {
			return nil, fmt.Errorf("read agent reply: port spec %q: %w", s, err)
		}
		// Host and container ranges are as long as each other: a host
		// range for one container port takes one of its ports.
		first, n := p.HostPorts[i], spec.Container.Len()
		if first == 0 || int(first)+n-1 > 65535 {
			return nil, fmt.Errorf("read agent reply: host port %d cannot hold the %d ports of spec %q", first, n, s)
		}
		all[i] = PortMapping{
			Endpoint: p.Endpoint, Proto: spec.Proto.String(), HostIP: hostIP,
			Host: ipam.PortRange{First: first, Last: first + uint16(n-1)}, Container: spec.Container,
			Backend: backend, Backend6: backend6, ID: p.FirstID + uint32(i), AllowFrom: allow,
		}
		if p.IDs != nil {
			all[i].ID = p.IDs[i]
		}
		out[i] = &all[i]
	}
	return out, nil
}
