package control

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// conntrackGCInterval is how often idle flows are collected; the shortest
// lifetime (10 s after a FIN) is of the same order.
const conntrackGCInterval = 10 * time.Second

// networkID is the datapath's name for a network: stable across restarts
// without being stored, and never 0.
func networkID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32() | 1
}

// syncTopology gives the datapath what isolation, icc, hairpin and
// masquerade are enforced with: the uplinks and their addresses, the
// networks, the endpoints and their namespaces, and the programs on every
// bridge and endpoint veth. Like the rest of reconcile it adds what is
// missing and prunes what is stale.
func (a *Agent) syncTopology() error {
	// First, so that a bridge adopted by a network sheds the uplink
	// programs and a bridge a removed network leaves behind gets them.
	if err := a.syncUplinks(); err != nil {
		return err
	}
	bridges, err := a.bridgeLinks()
	if err != nil {
		return err
	}
	var networks []maps.Network
	var subnets []netip.Prefix
	var notFound netlink.LinkNotFoundError
	for _, n := range a.st.networks {
		nws, subs := datapathNetworks(n)
		networks, subnets = append(networks, nws...), append(subnets, subs...)
		// A missing bridge is heal's to recreate and report.
		if err := a.attachBridge(n.Bridge, bridges); err != nil && !errors.As(err, &notFound) {
			a.log.Error("attach bridge program", "network", n.Name, "err", err)
		}
	}
	if err := a.widenPrefilter(nil, subnets); err != nil {
		return err
	}
	if err := maps.NewNetworks(a.dp.Maps.Networks).Sync(networks); err != nil {
		return fmt.Errorf("sync networks: %w", err)
	}

	endpoints := map[netip.Addr]maps.EndpointValue{}
	// A namespace on several networks has an entry for each.
	namespaces := map[uint64][]uint32{}
	cookies := map[uint64]uint64{}
	for _, e := range a.st.endpoints {
		l, err := netlink.LinkByName(e.HostIf)
		if err != nil {
			continue // being recreated or collected
		}
		id := networkID(e.Network)
		// The MAC comes from the record, so an endpoint re-synced after
		// a restart, or recreated with it, keeps being held to it.
		v := maps.EndpointValue{Ifindex: uint32(l.Attrs().Index), NetworkID: id, MAC: endpointMAC(e)}
		if n := a.st.networks[e.Network]; n != nil && !n.ICC {
			v.Flags |= maps.EndpointNoICC
		}
		for _, addr := range e.addrs() {
			endpoints[addr] = v
		}
		// The link-local address it sends neighbour discovery from.
		if ll, ok := linkLocal(v.MAC); ok && e.IPv6.IsValid() {
			endpoints[ll] = v
		}
		if _, err := a.dp.AttachEndpoint(e.HostIf); err != nil {
			a.log.Error("attach endpoint program", "endpoint", e.Name, "err", err)
		}
		if e.waiting() {
			continue // no namespace yet (adoptEngineNamespaces)
		}
		cookie, ok := a.netnsCookies[e.NetnsInode]
		if !ok {
			if cookie, err = netnsCookieAt(e.Netns); err != nil {
				a.log.Warn("read netns cookie", "endpoint", e.Name, "err", err)
				continue
			}
		}
		cookies[e.NetnsInode] = cookie
		namespaces[cookie] = append(namespaces[cookie], id)
	}
	a.netnsCookies = cookies
	if err := maps.NewEndpoints(a.dp.Maps.Endpoints).Sync(endpoints); err != nil {
		return fmt.Errorf("sync endpoints: %w", err)
	}
	if err := maps.NewNetns(a.dp.Maps.Netns).Sync(namespaces); err != nil {
		return fmt.Errorf("sync namespaces: %w", err)
	}
	if err := a.syncUplinkAddrs(); err != nil {
		return err
	}
	if n, err := a.dp.PruneGone(); err != nil {
		return fmt.Errorf("prune pins of deleted interfaces: %w", err)
	} else if n > 0 {
		a.log.Info("pruned pins of deleted interfaces", "count", n)
	}
	return nil
}

// endpointMAC is the MAC of the endpoint's eth0 as the datapath checks
// it; all zero (unchecked) when the record has none.
func endpointMAC(e *Endpoint) [6]byte {
	var out [6]byte
	if mac, err := net.ParseMAC(e.MAC); err == nil && len(mac) == 6 {
		copy(out[:], mac)
	}
	return out
}

// linkLocal is the fe80::/64 address the kernel derives from a MAC
// (modified EUI-64, RFC 4291 appendix A), which an endpoint's eth0 gets
// by default. Two endpoints of different networks given the same MAC by
// hand would share it: the later one in the map wins.
func linkLocal(mac [6]byte) (netip.Addr, bool) {
	if mac == ([6]byte{}) {
		return netip.Addr{}, false
	}
	b := [16]byte{0: 0xfe, 1: 0x80}
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b), true
}

// netnsCookieAt reads the cookie of the namespace at path from inside it.
func netnsCookieAt(path string) (cookie uint64, err error) {
	err = loader.InNetns(path, func() (err error) {
		cookie, err = loader.NetnsCookie()
		return err
	})
	return cookie, err
}

// tcpOpeningLifetime is how long a TCP flow whose handshake never
// completed is kept: half of maps.DefaultLifetimes' 60 s, so unanswered
// SYNs (a scan, a spoofed flood) leave ct_new sooner. Each retransmitted
// SYN refreshes its entry, and one sent after it went starts a new one.
const tcpOpeningLifetime = 30 * time.Second

// conntrackLifetimes are what collectConntrack collects by.
func conntrackLifetimes() maps.Lifetimes {
	l := maps.DefaultLifetimes()
	l.TCPOpening = min(l.TCPOpening, tcpOpeningLifetime)
	return l
}

// collectConntrack deletes idle entries of both conntrack tables (ct and
// ct_new) and of snat until stop, then warns of tables filling up.
func (a *Agent) collectConntrack(stop <-chan struct{}) {
	ct, snat := maps.NewCT(a.dp.Maps.CT, a.dp.Maps.CTNew), maps.NewSNAT(a.dp.Maps.SNAT)
	lifetimes := conntrackLifetimes()
	fill := &fillWarner{}
	tick := time.NewTicker(conntrackGCInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		start, now := time.Now(), maps.MonotonicNow()
		ctDeleted, err := ct.GCEach(now, lifetimes, a.idleFlowEnds(now))
		if err != nil {
			a.log.Warn("collect conntrack", "err", err)
			ctDeleted = -1
		}
		snatDeleted, err := snat.GCEach(now, lifetimes, a.idleMasqueradeEnds(now))
		if err != nil {
			a.log.Warn("collect snat", "err", err)
			snatDeleted = -1
		}
		a.metrics.observeGC(start, ctDeleted, snatDeleted)
		a.warnFill(fill)
	}
}
