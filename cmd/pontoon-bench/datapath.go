package main

import (
	"context"
	"net/netip"
	"time"
)

// service is one of the container's servers and the host port it is
// published on.
type service struct {
	name          string
	udp           bool
	containerPort uint16
	hostPort      uint16
	// hostAddr is the host address the port is published on; the zero
	// Addr publishes it on all of them, as "-p 8080:80" does.
	hostAddr netip.Addr
}

// wildcard reports whether s is published on every host address.
func (s service) wildcard() bool { return !s.hostAddr.IsValid() }

var (
	echoTCP = service{name: "tcp echo", containerPort: 80, hostPort: 8080}
	sinkTCP = service{name: "tcp sink", containerPort: 5201, hostPort: 8081}
	echoUDP = service{name: "udp echo", udp: true, containerPort: 53, hostPort: 8053}
	// bulkTCP moves a fixed amount either way; the outside namespace runs
	// one on the same port for the masquerade rows.
	bulkTCP = service{name: "tcp bulk", containerPort: 5202, hostPort: 8082}

	services = []service{echoTCP, sinkTCP, echoUDP, bulkTCP}
	// extraPort is the port published and unpublished when timing one
	// add and one delete; filler ports never use it.
	extraPort uint16 = 65000
)

// clientKind is where a client runs and what it dials.
type clientKind string

const (
	viaLoopback clientKind = "loopback" // a host process dialling 127.0.0.1:P
	viaHostIP   clientKind = "hostip"   // a host process dialling the uplink address
	viaOutside  clientKind = "outside"  // another machine dialling the uplink address
	// The same over IPv6, to the dual-stack network's container; direct
	// dials the container's IPv6 address.
	viaLoopback6 clientKind = "loopback6" // a host process dialling [::1]:P
	viaOutside6  clientKind = "outside6"  // another machine dialling the uplink's IPv6 address
)

var allClients = []clientKind{viaLoopback, viaHostIP, viaOutside, viaLoopback6, viaOutside6}

// outside reports whether the client runs in the outside namespace.
func (c clientKind) outside() bool { return c == viaOutside || c == viaOutside6 }

// ipv6 reports whether the client dials over IPv6.
func (c clientKind) ipv6() bool { return c == viaLoopback6 || c == viaOutside6 }

func (c clientKind) label() string {
	switch c {
	case viaLoopback:
		return "host → 127.0.0.1"
	case viaHostIP:
		return "host → host IP"
	case viaOutside:
		return "outside → host IP"
	case viaLoopback6:
		return "host → [::1]"
	case viaOutside6:
		return "outside → host IPv6"
	}
	return string(c)
}

// datapath is one way of getting clients to the container.
type datapath interface {
	name() string
	world() *world
	// setup publishes services; the world and its servers exist already.
	setup(ctx context.Context, cl *cleanups) error
	// target is the address a client of this kind dials for s.
	target(c clientKind, s service) netip.AddrPort
	// clientCgroup is the cgroup a client of this kind runs in, or nil.
	clientCgroup(c clientKind) *cgroup
}

// scaler is a datapath that can publish many ports, for rule scaling.
type scaler interface {
	datapath
	// maxN is the largest number of published ports worth measuring.
	maxN() int
	// install replaces whatever is published with ports (from
	// scalePorts: the measured one last). It times only the publishing
	// and reports what the ports cost in memory.
	install(ctx context.Context, ports []service) (time.Duration, memUse, error)
	// addOne and deleteOne time publishing and unpublishing extraPort.
	addOne(ctx context.Context) (time.Duration, error)
	deleteOne(ctx context.Context) (time.Duration, error)
	// opReps is how often to time addOne/deleteOne at each N.
	opReps(runs int) int
}

// bulker is a datapath that carries the bulk-transfer rows.
type bulker interface {
	datapath
	// bulkClient is where the client of a bulk path runs (namespace and
	// cgroup) and what it dials; ok is false when the datapath has no
	// such path.
	bulkClient(p bulkPath) (ns netns, cg *cgroup, addr netip.AddrPort, ok bool)
}

// memUse is a memory figure and what it counts.
type memUse struct {
	Bytes float64 `json:"bytes"`
	What  string  `json:"what"`
	Extra string  `json:"extra,omitempty"`
}

// gapped is a datapath that cannot serve some client (the iptables
// baseline and [::1]); the table says why instead of showing a number.
type gapped interface {
	// clientGap is why c is not measured, or "" when it is.
	clientGap(c clientKind) string
}

// clientGap is why dp does not measure client c, or "" when it does.
func clientGap(dp datapath, c clientKind) string {
	if g, ok := dp.(gapped); ok {
		return g.clientGap(c)
	}
	return ""
}

// published returns the address for clients of published ports: the
// loopback clients dial 127.0.0.1 or [::1], the others the host's uplink
// address of their family.
func published(c clientKind, s service) netip.AddrPort {
	switch c {
	case viaLoopback:
		return netip.AddrPortFrom(loopbackIP, s.hostPort)
	case viaLoopback6:
		return netip.AddrPortFrom(loopbackIP6, s.hostPort)
	case viaOutside6:
		return netip.AddrPortFrom(hostIP6, s.hostPort)
	}
	return netip.AddrPortFrom(hostIP, s.hostPort)
}

// fillerPorts are n host ports for rule scaling that are none of the
// measured ones: 1024 upwards.
func fillerPorts(n int) []uint16 {
	taken := map[uint16]bool{extraPort: true}
	for _, s := range services {
		taken[s.hostPort] = true
	}
	out := make([]uint16, 0, n)
	for p := 1024; len(out) < n && p < 65536; p++ {
		if !taken[uint16(p)] {
			out = append(out, uint16(p))
		}
	}
	return out
}

// scalePorts are n TCP ports: fillers on fillerAddr first, the measured
// echo port (on every address) last, so in iptables order every filler
// rule is tried before it.
//
// Fillers sit on one address rather than all because Pontoon's tc
// programs translate any packet to a published port, replies included:
// with fillers on every address, a container's SYN-ACK to a host client
// whose ephemeral port is also published (60k ports cover the whole
// ephemeral range) would be DNATed back into the container.
func scalePorts(n int, fillerAddr netip.Addr) []service {
	out := make([]service, 0, n)
	for _, p := range fillerPorts(n - 1) {
		out = append(out, service{name: "filler", containerPort: p, hostPort: p, hostAddr: fillerAddr})
	}
	return append(out, echoTCP)
}

// direct is the ceiling: clients dial the container's own address.
type direct struct{ w *world }

func (d *direct) name() string                           { return "direct" }
func (d *direct) world() *world                          { return d.w }
func (d *direct) setup(context.Context, *cleanups) error { return nil }
func (d *direct) clientCgroup(clientKind) *cgroup        { return nil }
func (d *direct) target(c clientKind, s service) netip.AddrPort {
	if c.ipv6() {
		return netip.AddrPortFrom(containerIP6, s.containerPort)
	}
	return netip.AddrPortFrom(containerIP, s.containerPort)
}

// bulkClient: the untranslated path of each bulk row. The outside routes
// the containers' subnet through the host and the containers route back
// through it, so nothing is translated anywhere.
func (d *direct) bulkClient(p bulkPath) (netns, *cgroup, netip.AddrPort, bool) {
	toContainer := netip.AddrPortFrom(containerIP, bulkTCP.containerPort)
	switch p {
	case pathPublished:
		return d.w.outside, nil, toContainer, true
	case pathPublished6:
		return d.w.outside, nil, netip.AddrPortFrom(containerIP6, bulkTCP.containerPort), true
	case pathMasquerade:
		return d.w.container, nil, netip.AddrPortFrom(outsideIP, bulkTCP.containerPort), true
	case pathMasquerade6:
		return d.w.container, nil, netip.AddrPortFrom(outsideIP6, bulkTCP.containerPort), true
	case pathHairpinTC, pathHairpinSock:
		return d.w.peer, nil, toContainer, true
	}
	return "", nil, netip.AddrPort{}, false
}
