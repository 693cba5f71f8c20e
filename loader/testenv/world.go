package testenv

import (
	"net/netip"
	"testing"
)

// World is the smallest network that shows every path of the datapath:
//
//	outside --veth-- host --bridge-- a
//	                            \--- b
//
// host is what Pontoon calls the host: it owns the uplink and the bridge.
type World struct {
	ID                 string
	Host, Outside      *Netns
	A, B               *Netns
	Uplink, Bridge     string
	AVeth, BVeth       string // host sides of the containers' veths
	HostIP, OutsideIP  netip.Addr
	Gateway, AIP, BIP  netip.Addr
	ContainerPrefixLen int
}

// NewWorld builds a World with unique names.
func NewWorld(t testing.TB) *World {
	t.Helper()
	w := newWorld(t)
	Veth(t, w.Host, w.Uplink, w.Outside, "eth0")
	w.Host.IP(t, "addr", "add", w.HostIP.String()+"/24", "dev", w.Uplink)
	w.Outside.IP(t, "addr", "add", w.OutsideIP.String()+"/24", "dev", "eth0")
	w.addContainers(t)
	return w
}

// newWorld names a World and creates its namespaces; the caller joins
// host and outside with an uplink of its choice, then adds the containers.
func newWorld(t testing.TB) *World {
	t.Helper()
	id := UniqueID(t)
	w := &World{
		ID:                 id,
		Uplink:             "ptu" + id,
		Bridge:             "ptb" + id,
		HostIP:             netip.MustParseAddr("198.18.0.1"),
		OutsideIP:          netip.MustParseAddr("198.18.0.2"),
		Gateway:            netip.MustParseAddr("10.89.0.1"),
		AIP:                netip.MustParseAddr("10.89.0.2"),
		BIP:                netip.MustParseAddr("10.89.0.3"),
		ContainerPrefixLen: 24,
	}
	w.Host = NewNetns(t, "pth"+id)
	w.Outside = NewNetns(t, "pto"+id)
	w.A = NewNetns(t, "pta"+id)
	w.B = NewNetns(t, "ptc"+id)
	w.Host.Sysctl(t, "net.ipv4.ip_forward", "1")
	return w
}

// addContainers puts the bridge in the host and A and B behind it.
func (w *World) addContainers(t testing.TB) {
	t.Helper()
	w.Host.IP(t, "link", "add", w.Bridge, "type", "bridge")
	w.Host.IP(t, "addr", "add", w.Gateway.String()+"/24", "dev", w.Bridge)
	w.Host.IP(t, "link", "set", w.Bridge, "up")
	w.AVeth, w.BVeth = "pva"+w.ID, "pvb"+w.ID
	for _, c := range []struct {
		ns       *Netns
		ip       netip.Addr
		hostSide string
	}{{w.A, w.AIP, w.AVeth}, {w.B, w.BIP, w.BVeth}} {
		hostSide := c.hostSide
		Veth(t, w.Host, hostSide, c.ns, "eth0")
		w.Host.IP(t, "link", "set", hostSide, "master", w.Bridge)
		c.ns.IP(t, "addr", "add", c.ip.String()+"/24", "dev", "eth0")
		c.ns.IP(t, "route", "add", "default", "via", w.Gateway.String())
	}
}
