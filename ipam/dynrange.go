package ipam

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultDynamicPorts is Docker's range for automatically chosen host ports,
// the range DynamicPortRange starts from.
var DefaultDynamicPorts = PortRange{49153, 65535}

// DynamicPortRange picks the range "any" port requests take from: the
// longest run of ports in DefaultDynamicPorts that the kernel never picks as
// the source port of an outgoing connection, being outside ephemeral
// (net.ipv4.ip_local_port_range) or inside reserved
// (net.ipv4.ip_local_reserved_ports).
//
// Docker can share the kernel's range because docker-proxy binds each
// published port, so the kernel skips it. Pontoon binds nothing: a published
// port is a BPF map entry, and replies to a host connection whose source port
// the kernel took from the same range would be sent to a container. With
// Linux's default 32768-60999 this gives 61000-65535. When the kernel may use
// every port of DefaultDynamicPorts, that range is returned with overlaps
// set; reserve it with ip_local_reserved_ports or configure a range.
func DynamicPortRange(ephemeral PortRange, reserved []PortRange) (r PortRange, overlaps bool) {
	best := longestFreeRun(kernelPorts(ephemeral, reserved), DefaultDynamicPorts)
	if best.IsZero() {
		return DefaultDynamicPorts, true
	}
	return best, false
}

// SNATPorts is where masquerade looks for source ports by default: all
// of the unprivileged ports, less what DefaultSNATPorts leaves out.
var SNATPorts = PortRange{1024, 65535}

// DefaultSNATPorts picks the source ports masqueraded flows may take: the
// longest run of SNATPorts that the kernel never picks as the source port
// of an outgoing connection (ephemeral, less reserved), that is not
// reserved either (ip_local_reserved_ports are set aside for someone), and
// that lies outside published, the range published host ports are
// allocated from. A host connection and a masqueraded flow then never
// want the same port: with Linux's default 32768-60999 and the published
// 61000-65535 that is 1024-32767. ok is false when no port is left.
func DefaultSNATPorts(ephemeral PortRange, reserved []PortRange, published PortRange) (r PortRange, ok bool) {
	taken := kernelPorts(ephemeral, nil)
	for _, rr := range append(reserved, published) {
		if !rr.IsZero() && rr.First <= rr.Last {
			taken.setRange(uint32(rr.First), uint32(rr.Last))
		}
	}
	best := longestFreeRun(taken, SNATPorts)
	return best, !best.IsZero()
}

// KernelEphemeral is the part of r the kernel may pick as the source port
// of an outgoing connection: inside ephemeral and not reserved. It returns
// the first such run, or a zero range when there is none.
func KernelEphemeral(r, ephemeral PortRange, reserved []PortRange) PortRange {
	kernel := kernelPorts(ephemeral, reserved)
	s, ok := nextSet(kernel, nil, uint32(r.First), uint32(r.Last))
	if !ok {
		return PortRange{}
	}
	e, free := nextClear(kernel, nil, s, uint32(r.Last))
	if !free {
		e = uint32(r.Last) + 1
	}
	return PortRange{uint16(s), uint16(e - 1)}
}

// kernelPorts marks the ports the kernel may use as ephemeral ones.
func kernelPorts(ephemeral PortRange, reserved []PortRange) *bitmap {
	kernel := newBitmap(1 << 16)
	if !ephemeral.IsZero() && ephemeral.First <= ephemeral.Last {
		kernel.setRange(uint32(ephemeral.First), uint32(ephemeral.Last))
	}
	for _, rr := range reserved {
		if rr.First <= rr.Last {
			kernel.clearRange(uint32(rr.First), uint32(rr.Last))
		}
	}
	return kernel
}

// longestFreeRun returns the longest run of within that is clear in
// taken, the first of equals; zero when every port is taken.
func longestFreeRun(taken *bitmap, within PortRange) PortRange {
	var best PortRange
	from := uint32(within.First)
	for from <= uint32(within.Last) {
		s, ok := nextClear(taken, nil, from, uint32(within.Last))
		if !ok {
			break
		}
		e, isTaken := nextSet(taken, nil, s, uint32(within.Last))
		if !isTaken {
			e = uint32(within.Last) + 1
		}
		if run := (PortRange{uint16(s), uint16(e - 1)}); best.IsZero() || run.Len() > best.Len() {
			best = run
		}
		from = e + 1
	}
	return best
}

// KernelPortRanges reads the ephemeral port range and the reserved ports of
// the process's network namespace.
func KernelPortRanges() (ephemeral PortRange, reserved []PortRange, err error) {
	return kernelPortRanges("/proc/sys/net/ipv4")
}

func kernelPortRanges(dir string) (PortRange, []PortRange, error) {
	b, err := os.ReadFile(filepath.Join(dir, "ip_local_port_range"))
	if err != nil {
		return PortRange{}, nil, fmt.Errorf("read ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return PortRange{}, nil, fmt.Errorf("read ephemeral port range: %q: malformed", b)
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || lo > hi {
		return PortRange{}, nil, fmt.Errorf("read ephemeral port range: %q: malformed", b)
	}
	eph := PortRange{uint16(lo), uint16(hi)}

	b, err = os.ReadFile(filepath.Join(dir, "ip_local_reserved_ports"))
	if err != nil {
		return PortRange{}, nil, fmt.Errorf("read reserved ports: %w", err)
	}
	var reserved []PortRange
	for _, s := range strings.Split(strings.TrimSpace(string(b)), ",") {
		if s == "" {
			continue
		}
		r, err := ParsePortRange(s)
		if err != nil {
			return PortRange{}, nil, fmt.Errorf("read reserved ports: %w", err)
		}
		reserved = append(reserved, r)
	}
	return eph, reserved, nil
}
