package control

import (
	"fmt"

	"github.com/pontoon-net/pontoon/ipam"
)

// minSNATPorts: fewer masquerade ports than this get a warning at start.
const minSNATPorts = 1024

// snatPorts decides the masquerade source ports for this host: want when
// given, else ipam.DefaultSNATPorts. published is the range published host
// ports are allocated from.
func snatPorts(want, published ipam.PortRange) (ipam.PortRange, error) {
	eph, reserved, err := ipam.KernelPortRanges()
	if err != nil {
		return ipam.PortRange{}, fmt.Errorf("choose masquerade ports: %w", err)
	}
	return chooseSNATPorts(want, eph, reserved, published)
}

// chooseSNATPorts refuses a range a host connection or a published port
// could want too: a masqueraded flow's replies would then reach the wrong
// socket or container.
func chooseSNATPorts(want, ephemeral ipam.PortRange, reserved []ipam.PortRange, published ipam.PortRange) (ipam.PortRange, error) {
	def, ok := ipam.DefaultSNATPorts(ephemeral, reserved, published)
	suggest := "narrow net.ipv4.ip_local_port_range"
	if ok {
		suggest = "such as " + def.String()
	}
	if want.IsZero() {
		if !ok {
			return ipam.PortRange{}, fmt.Errorf("no ports left for masquerade: 1024-65535 is all ephemeral (net.ipv4.ip_local_port_range %s), reserved or published (%s); narrow the ephemeral range or give --snat-ports with ports from ip_local_reserved_ports", ephemeral, published)
		}
		return def, nil
	}
	if overlap := ipam.KernelEphemeral(want, ephemeral, reserved); !overlap.IsZero() {
		return ipam.PortRange{}, fmt.Errorf("--snat-ports %s overlaps the kernel's ephemeral ports (%s of net.ipv4.ip_local_port_range %s): replies to the host's own connections could go to containers; pick ports outside it, %s", want, overlap, ephemeral, suggest)
	}
	if want.First <= published.Last && published.First <= want.Last {
		return ipam.PortRange{}, fmt.Errorf("--snat-ports %s overlaps %s, the range published ports are allocated from; pick ports outside it, %s", want, published, suggest)
	}
	return want, nil
}
