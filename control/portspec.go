package control

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/pontoon-net/pontoon/ipam"
)

// PortSpec is one argument in Docker's -p grammar:
// [hostIP:][hostPort[-end]:]containerPort[-end][/tcp|udp].
type PortSpec struct {
	// HostIP is the zero Addr when none was given (every address).
	HostIP netip.Addr
	// Host is zero when no host port was given: one is allocated.
	Host      ipam.PortRange
	Container ipam.PortRange
	Proto     ipam.Proto
}

const specGrammar = "[hostIP:][hostPort[-end]:]containerPort[-end][/tcp|udp]"

// ParsePortSpec reads one -p argument.
func ParsePortSpec(s string) (PortSpec, error) {
	spec, err := parsePortSpec(s)
	if err != nil {
		return PortSpec{}, fmt.Errorf("port spec %q: %w; write it as %s, such as 8080:80/tcp", s, err, specGrammar)
	}
	return spec, nil
}

func parsePortSpec(s string) (PortSpec, error) {
	spec := PortSpec{Proto: ipam.TCP}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		switch p := rest[i+1:]; p {
		case "tcp":
			spec.Proto = ipam.TCP
		case "udp":
			spec.Proto = ipam.UDP
		case "sctp":
			return PortSpec{}, kindf(ErrInvalid, "sctp is not translated by the datapath yet, only tcp and udp")
		default:
			return PortSpec{}, fmt.Errorf("%w protocol %q, want tcp or udp", ErrInvalid, p)
		}
		rest = rest[:i]
	}

	var ipPart, hostPart, ctrPart string
	hasIP, hasHost := false, false
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 || !strings.HasPrefix(rest[end+1:], ":") {
			return PortSpec{}, fmt.Errorf("%w bracketed host IP: want [address]:", ErrInvalid)
		}
		ipPart, hasIP = rest[1:end], true
		rest = rest[end+2:]
		parts := strings.Split(rest, ":")
		if len(parts) != 2 {
			return PortSpec{}, kindf(ErrInvalid, "after [%s] give hostPort:containerPort (the host port may be empty)", ipPart)
		}
		hostPart, ctrPart, hasHost = parts[0], parts[1], true
	} else {
		parts := strings.Split(rest, ":")
		switch len(parts) {
		case 1:
			ctrPart = parts[0]
		case 2:
			hostPart, ctrPart, hasHost = parts[0], parts[1], true
		case 3:
			ipPart, hostPart, ctrPart, hasIP, hasHost = parts[0], parts[1], parts[2], true, true
		default:
			return PortSpec{}, kindf(ErrInvalid, "too many colons (IPv6 host addresses go in brackets, such as [::1]:8080:80)")
		}
	}

	if hasIP {
		ip, err := netip.ParseAddr(ipPart)
		switch {
		case err != nil:
			return PortSpec{}, fmt.Errorf("%w host IP %q", ErrInvalid, ipPart)
		case ip.Zone() != "":
			return PortSpec{}, fmt.Errorf("%w host IP %s: drop the zone", ErrInvalid, ip)
		case ip.Is4In6():
			return PortSpec{}, fmt.Errorf("%w host IP %s: write IPv4-mapped addresses as IPv4", ErrInvalid, ip)
		}
		spec.HostIP = ip
	}
	ctr, err := ipam.ParsePortRange(ctrPart)
	if err != nil {
		return PortSpec{}, fmt.Errorf("container port: %w", err)
	}
	spec.Container = ctr
	if hasHost && hostPart != "" {
		host, err := ipam.ParsePortRange(hostPart)
		if err != nil {
			return PortSpec{}, fmt.Errorf("host port: %w", err)
		}
		// A host range for one container port means "any one of these",
		// as in Docker; otherwise the lengths must match.
		if ctr.Len() > 1 && host.Len() != ctr.Len() {
			return PortSpec{}, kindf(ErrInvalid, "host range %s has %d ports and container range %s has %d; make them the same length", host, host.Len(), ctr, ctr.Len())
		}
		spec.Host = host
	}
	return spec, nil
}

// String is the canonical form ParsePortSpec reads back.
func (s PortSpec) String() string {
	var b strings.Builder
	if s.HostIP.IsValid() {
		if s.HostIP.Is6() {
			b.WriteString("[" + s.HostIP.String() + "]:")
		} else {
			b.WriteString(s.HostIP.String() + ":")
		}
	}
	if !s.Host.IsZero() {
		b.WriteString(s.Host.String() + ":")
	} else if s.HostIP.IsValid() {
		b.WriteString(":")
	}
	b.WriteString(s.Container.String() + "/" + s.Proto.String())
	return b.String()
}
