package ipam

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is a transport protocol, numbered as in the IP header.
type Proto uint8

// The protocols a host port can be published for.
const (
	TCP  Proto = 6
	UDP  Proto = 17
	SCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

func (p Proto) valid() bool { return p == TCP || p == UDP || p == SCTP }

// ParseProto reads "tcp", "udp" or "sctp".
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "sctp":
		return SCTP, nil
	}
	return 0, fmt.Errorf("parse protocol %q: %w, want tcp, udp or sctp", s, ErrInvalid)
}

// PortRange is the ports First through Last. The zero value means "no port
// given", which a PortRequest reads as "any".
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Port is the range of the single port p.
func Port(p uint16) PortRange { return PortRange{p, p} }

// IsZero reports whether no port was given.
func (r PortRange) IsZero() bool { return r == PortRange{} }

// Len is how many ports the range holds.
func (r PortRange) Len() int { return int(r.Last) - int(r.First) + 1 }

// Contains reports whether p is inside the range.
func (r PortRange) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

// String is "80" or "8000-8010", the form ParsePortRange reads.
func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

func (r PortRange) validate() error {
	switch {
	case r.First == 0:
		return fmt.Errorf("%w port range %s: port 0 cannot be published; ports are 1-65535", ErrInvalid, r)
	case r.Last < r.First:
		return fmt.Errorf("%w port range %d-%d: reversed; write it as %d-%d", ErrInvalid, r.First, r.Last, r.Last, r.First)
	}
	return nil
}

// ParsePortRange reads "80" or "8000-8010".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	first, err := parsePort(lo)
	if err != nil {
		return PortRange{}, fmt.Errorf("parse port range %q: %w", s, err)
	}
	last := first
	if isRange {
		if last, err = parsePort(hi); err != nil {
			return PortRange{}, fmt.Errorf("parse port range %q: %w", s, err)
		}
	}
	r := PortRange{first, last}
	if err := r.validate(); err != nil {
		return PortRange{}, fmt.Errorf("parse port range %q: %w", s, err)
	}
	return r, nil
}

func parsePort(s string) (uint16, error) {
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w port %q: not a number; ports are 1-65535", ErrInvalid, s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		if s == "" {
			return 0, fmt.Errorf("%w port: empty; ports are 1-65535", ErrInvalid)
		}
		return 0, fmt.Errorf("%w port %s: out of range; ports are 1-65535", ErrInvalid, s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w port 0: cannot be published; ports are 1-65535", ErrInvalid)
	}
	return uint16(n), nil
}

// PortRequest asks for host ports.
type PortRequest struct {
	// Owner is who holds the ports, such as an endpoint id;
	// ReleaseOwnerPorts frees all of them.
	Owner string
	Proto Proto
	// HostIP is one host address, or 0.0.0.0 or :: for every address of
	// that family. A wildcard and a specific address of the same family
	// conflict on the same port.
	HostIP netip.Addr
	// Ports is the exact port or range wanted, all or nothing. Zero asks
	// for Count consecutive free ports from the dynamic range instead.
	Ports PortRange
	// Count is how many consecutive ports an "any" request wants (0 means
	// 1). With Ports set it must be 0 or Ports.Len().
	Count int
	// FirstFree takes the first free single port of Ports instead of all
	// of them, as Docker's -p 8000-8010:80 does.
	FirstFree bool
}

// PortAllocation is ports held by an owner.
type PortAllocation struct {
	Owner  string
	Proto  Proto
	HostIP netip.Addr
	Ports  PortRange
}

// String is like "tcp 0.0.0.0:8080" or "udp [::]:5000-5010".
func (p PortAllocation) String() string {
	return p.Proto.String() + " " + hostPorts(p.HostIP, p.Ports)
}

func hostPorts(ip netip.Addr, r PortRange) string {
	if ip.Is6() {
		return "[" + ip.String() + "]:" + r.String()
	}
	return ip.String() + ":" + r.String()
}
