package control

import (
	"fmt"
	"net/netip"

	"github.com/pontoon-net/pontoon/ipam"
)

// IPv6 published ports. A spec without a host IP publishes on every
// address of both families, as Docker does: a dual-stack endpoint's
// mapping then carries Backend6, and writes a [::] binding to the
// container's IPv6 address besides the 0.0.0.0 one, under one binding id,
// one `port ls` row and one unpublish. 0.0.0.0 is IPv4's alone and [::]
// IPv6's. ipam holds such a mapping's ports on 0.0.0.0 only: ipam keeps
// each family apart, so v6Ports keeps its [::] half from meeting another
// mapping's IPv6 ports.
//
// An IPv4-only endpoint gets no IPv6 host IP, not even [::1]: an IPv6
// binding always has an IPv6 backend (the tc datapath translates within a
// family). Its wildcard mapping still serves host processes dialling [::1]
// and the host's IPv6 addresses, through the socket hooks (bpf/sock.c).

// mappingBackends are the container addresses a spec publishes to:
// hostIP's family's, and for a wildcard spec of a dual-stack endpoint the
// IPv6 one too. hostIP is the spec's, 0.0.0.0 for a wildcard.
func mappingBackends(e *Endpoint, spec PortSpec, hostIP netip.Addr) (backend, backend6 netip.Addr, err error) {
	if !hostIP.Is6() {
		if !spec.HostIP.IsValid() && e.IPv6.IsValid() {
			return e.IP, e.IPv6, nil
		}
		return e.IP, netip.Addr{}, nil
	}
	if !e.IPv6.IsValid() {
		return netip.Addr{}, netip.Addr{}, kindf(ErrUnsupported,
			"host IP %s is IPv6 and endpoint %s has IPv4 only; attach it to a network made with --ipv6, or leave out the host IP (8080:80): host processes then reach it on [::1] and the host's IPv6 addresses as well", hostIP, e.Name)
	}
	return e.IPv6, netip.Addr{}, nil
}

// v6Ports is the IPv6 host ports mappings hold, per protocol: on [::] by
// wildcard mappings (Backend6), and on any IPv6 address by mappings with
// an IPv6 host IP, which ipam keeps apart among themselves. A set is made
// when a port goes in (nil holds none): every publish builds one, most
// on hosts without IPv6 mappings.
type v6Ports struct {
	wildcard, specific [2]*[1 << 16]bool
}

func protoIndex(proto string) int {
	if proto == ipam.UDP.String() {
		return 1
	}
	return 0
}

func newV6Ports(ms map[*PortMapping]struct{}) *v6Ports {
	p := &v6Ports{}
	for m := range ms {
		p.add(m)
	}
	return p
}

func (p *v6Ports) add(m *PortMapping) {
	var set **[1 << 16]bool
	switch {
	case m.Backend6.IsValid():
		set = &p.wildcard[protoIndex(m.Proto)]
	case m.HostIP.Is6():
		set = &p.specific[protoIndex(m.Proto)]
	default:
		return
	}
	if *set == nil {
		*set = new([1 << 16]bool)
	}
	for port := int(m.Host.First); port <= int(m.Host.Last); port++ {
		(*set)[port] = true
	}
}

// noV6Ports stands in for a set nothing went in; it is never written.
var noV6Ports [1 << 16]bool

// check says whether m's IPv6 ports are free: a wildcard mapping's [::]
// ports of every IPv6 mapping, an IPv6 host IP's of wildcard mappings.
func (p *v6Ports) check(m *PortMapping) error {
	i := protoIndex(m.Proto)
	wildcard, specific := p.wildcard[i], p.specific[i]
	if wildcard == nil {
		wildcard = &noV6Ports
	}
	if specific == nil {
		specific = &noV6Ports
	}
	for port := int(m.Host.First); port <= int(m.Host.Last); port++ {
		switch {
		case m.Backend6.IsValid() && (wildcard[port] || specific[port]):
			return kindf(ErrConflict, "%s port %d is published on an IPv6 address already, and a spec without a host IP publishes [::] too; give another host port, or 0.0.0.0 as host IP for IPv4 alone", m.Proto, port)
		case m.HostIP.Is6() && wildcard[port]:
			return kindf(ErrConflict, "%s port %d on [%s]: a mapping without a host IP holds it on [::] already; give another host port", m.Proto, port, m.HostIP)
		}
	}
	return nil
}

// checkMappingFamilies holds a record to the rule the datapath relies on.
func checkMappingFamilies(m *PortMapping, e *Endpoint) error {
	ok := m.Backend == e.IP && !m.HostIP.Is6()
	if m.HostIP.Is6() {
		ok = e.IPv6.IsValid() && m.Backend == e.IPv6
	}
	if m.Backend6.IsValid() && (m.Backend6 != e.IPv6 || m.HostIP != netip.IPv4Unspecified()) {
		ok = false
	}
	if !ok {
		return fmt.Errorf("backend %s and IPv6 backend %s are not endpoint %s's addresses for host IP %s", m.Backend, m.Backend6, e.Name, m.HostIP)
	}
	return nil
}
