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
	kernel := newBitmap(1 << 16)
	if !ephemeral.IsZero() && ephemeral.First <= ephemeral.Last {
		kernel.setRange(uint32(ephemeral.First), uint32(ephemeral.Last))
	}
	for _, rr := range reserved {
		if rr.First <= rr.Last {
			kernel.clearRange(uint32(rr.First), uint32(rr.Last))
		}
	}
	d := DefaultDynamicPorts
	var best PortRange
	from := uint32(d.First)
	for from <= uint32(d.Last) {
		s, ok := nextClear(kernel, nil, from, uint32(d.Last))
		if !ok {
			break
		}
		e, taken := nextSet(kernel, nil, s, uint32(d.Last))
		if !taken {
			e = uint32(d.Last) + 1
		}
		if run := (PortRange{uint16(s), uint16(e - 1)}); best.IsZero() || run.Len() > best.Len() {
			best = run
		}
		from = e + 1
	}
	if best.IsZero() {
		return d, true
	}
	return best, false
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
