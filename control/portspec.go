package control

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/pontoon-net/pontoon/ipam"
)

// PortSpec is one argument in Docker's -p grammar:
// [hostIP:][hostPort[-end]:]containerPort[-end][/tcp|udp], an IPv6 host
// IP in brackets ([::1]:8080:80).
type PortSpec struct {
	// HostIP is the zero Addr when none was given: every address of
	// both families, as Docker publishes. 0.0.0.0 is IPv4's alone and
	// [::] IPv6's.
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
	if err == nil {
		return spec, nil
	}
	// Declared past the happy path: errors.As takes its address, which
	// moves it to the heap, an allocation for each of 60,000 specs.
	var syntax *specSyntaxError
	if errors.As(err, &syntax) {
		return PortSpec{}, fmt.Errorf("port spec %q: %w; write it as %s, such as 8080:80/tcp", s, err, specGrammar)
	}
	// The error already says what to write instead.
	return PortSpec{}, fmt.Errorf("port spec %q: %w", s, err)
}

// specSyntaxError is a spec that does not follow the grammar, and so
// gets the grammar in its message; other errors say what to do themselves.
type specSyntaxError struct{ msg string }

func (e *specSyntaxError) Error() string { return e.msg }
func (e *specSyntaxError) Unwrap() error { return ErrInvalid }

func syntaxf(format string, args ...any) error {
	return &specSyntaxError{fmt.Sprintf(format, args...)}
}

// portRange reads the container or host part of a spec, with a message
// that names which one is wrong.
func portRange(what, s string) (ipam.PortRange, error) {
	r, err := ipam.ParsePortRange(s)
	if err != nil {
		// Unwrapped, ipam's error is "invalid port range 80-70: reversed;
		// write it as 70-80": drop its "parse port range" and "invalid".
		msg := err.Error()
		if inner := errors.Unwrap(err); inner != nil {
			msg = strings.TrimPrefix(inner.Error(), "invalid ")
		}
		return r, kindf(ErrInvalid, "%s %s", what, msg)
	}
	return r, nil
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
		if end < 0 {
			return PortSpec{}, syntaxf("bracketed host IP: no closing ]")
		}
		if !strings.HasPrefix(rest[end+1:], ":") {
			return PortSpec{}, syntaxf("bracketed host IP: want [address]:")
		}
		ipPart, hasIP = rest[1:end], true
		if ip, err := netip.ParseAddr(ipPart); err == nil && ip.Is4() {
			return PortSpec{}, kindf(ErrInvalid, "host IP [%s]: brackets are for IPv6 addresses; write %s without them", ipPart, ipPart)
		}
		rest = rest[end+2:]
		var ok bool
		if hostPart, ctrPart, ok = strings.Cut(rest, ":"); !ok || strings.Contains(ctrPart, ":") {
			return PortSpec{}, syntaxf("after [%s] give hostPort:containerPort (the host port may be empty)", ipPart)
		}
		hasHost = true
	} else {
		// Cut, not Split: a slice of parts for each of 60,000 specs was
		// most of what parsing them allocated.
		first, afterFirst, one := strings.Cut(rest, ":")
		second, third, two := strings.Cut(afterFirst, ":")
		switch {
		case !one:
			ctrPart = rest
		case !two:
			hostPart, ctrPart, hasHost = first, afterFirst, true
		case !strings.Contains(third, ":"):
			ipPart, hostPart, ctrPart, hasIP, hasHost = first, second, third, true, true
		default:
			return PortSpec{}, kindf(ErrInvalid, "too many colons (IPv6 host addresses go in brackets, such as [::1]:8080:80)")
		}
	}

	if hasIP {
		ip, err := netip.ParseAddr(ipPart)
		switch {
		case err != nil:
			return PortSpec{}, syntaxf("host IP %q is not an address", ipPart)
		case ip.Zone() != "":
			return PortSpec{}, fmt.Errorf("%w host IP %s: drop the zone", ErrInvalid, ip)
		case ip.Is4In6():
			return PortSpec{}, fmt.Errorf("%w host IP %s: write IPv4-mapped addresses as IPv4", ErrInvalid, ip)
		}
		spec.HostIP = ip
	}
	ctr, err := portRange("container", ctrPart)
	if err != nil {
		return PortSpec{}, err
	}
	spec.Container = ctr
	if hasHost && hostPart != "" {
		host, err := portRange("host", hostPart)
		if err != nil {
			return PortSpec{}, err
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
