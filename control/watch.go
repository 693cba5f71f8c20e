package control

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/maps"
)

// resyncEvery catches anything an event missed (a full netlink buffer).
const resyncEvery = 10 * time.Second

// settleDelay is how long a burst of netlink events may take to arrive.
const settleDelay = 50 * time.Millisecond

// maxTargetedEvents bounds the interfaces (or addresses) one burst may
// name for a targeted resync; a bigger burst gets a full one, as one dump
// then costs less than a lookup each.
const maxTargetedEvents = 64

// linkEvent is what a burst of link events last said of one interface,
// by index.
type linkEvent struct {
	// name is empty when only its index is known (an address went).
	name    string
	deleted bool
}

// watch follows netlink: address changes resync hostaddrs and the
// uplinks' masquerade addresses; interfaces appearing, going or changing
// master attach or detach uplinks; an endpoint's veth vanishing detaches
// the endpoint when its namespace died, and is recreated (heal) when it
// did not. An event touches only the interfaces it names (resyncLinks),
// so its cost does not grow with the number of networks; the heal sweep
// every healEvery and the resync every resyncEvery look at everything,
// and catch what no event reports (pins, program links). Routes are not
// followed: which interfaces are uplinks does not depend on them.
func (a *Agent) watch(ctx context.Context) {
	links := make(chan netlink.LinkUpdate, 256)
	addrs := make(chan netlink.AddrUpdate, 256)
	onErr := func(err error) {
		if ctx.Err() == nil {
			a.log.Warn("netlink subscription", "err", err)
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		a.log.Warn("subscribe to link events; relying on periodic resync", "err", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, ctx.Done(), netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		a.log.Warn("subscribe to address events; relying on periodic resync", "err", err)
	}
	tick := time.NewTicker(resyncEvery)
	defer tick.Stop()
	healTick := time.NewTicker(healEvery)
	defer healTick.Stop()
	// A burst of events (a veth pair, its addresses) settles into one
	// resync.
	var (
		changed     = map[int]linkEvent{}
		addrUpdates []netlink.AddrUpdate
		lostEvents  bool
		settle      <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-links:
			if !ok {
				links, lostEvents = nil, true
				break
			}
			changed[u.Attrs().Index] = linkEvent{name: u.Attrs().Name, deleted: u.Header.Type == unix.RTM_DELLINK}
		case u, ok := <-addrs:
			switch {
			case !ok:
				addrs, lostEvents = nil, true
			default:
				addrUpdates = append(addrUpdates, u)
				// A gateway taken off a bridge is the bridge's to heal.
				if _, ok := changed[u.LinkIndex]; !ok && !u.NewAddr {
					changed[u.LinkIndex] = linkEvent{}
				}
			}
		case <-tick.C:
			a.periodicResync()
			continue
		case <-healTick.C:
			a.healSweep()
			continue
		case <-settle:
			if lostEvents || len(changed) > maxTargetedEvents || len(addrUpdates) > maxTargetedEvents {
				a.resync(true, true)
			} else {
				a.resyncEvents(changed, addrUpdates)
			}
			changed, addrUpdates, lostEvents, settle = map[int]linkEvent{}, nil, false, nil
			continue
		}
		if settle == nil {
			settle = time.After(settleDelay)
		}
	}
}

// resync is the full one: the host's addresses, endpoints whose namespace
// died, every bridge and veth (heal) and the datapath's topology.
func (a *Agent) resync(addrs, links bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.metrics.observeReconcile("resync", time.Now())
	if addrs {
		if err := a.syncHostAddrs(); err != nil {
			a.log.Warn("resync host addresses", "err", err)
		}
	}
	if links {
		a.adoptEngineNamespaces()
		if err := a.gcEndpoints(); err != nil {
			a.log.Warn("collect endpoints of dead namespaces", "err", err)
		}
	}
	a.heal()
	// Uplinks are attached and detached here, and their addresses
	// follow.
	if err := a.syncTopology(); err != nil {
		a.log.Warn("resync datapath topology", "err", err)
	}
}

// periodicResync is the full resync every resyncEvery, which also puts
// back bindings deleted from the map by hand. The map is read without
// a.mu (resyncBindings): at 60,000 bindings that read would stall every
// request.
func (a *Agent) periodicResync() {
	a.mu.Lock()
	started := time.Now()
	if err := a.syncHostAddrs(); err != nil {
		a.log.Warn("resync host addresses", "err", err)
	}
	if err := a.gcEndpoints(); err != nil {
		a.log.Warn("collect endpoints of dead namespaces", "err", err)
	}
	// Bridges and veths are the heal sweep's (every healEvery).
	if err := a.syncTopology(); err != nil {
		a.log.Warn("resync datapath topology", "err", err)
	}
	a.metrics.observeReconcile("resync", started)
	a.mu.Unlock()
	a.resyncBindings()
}

// resyncBindings makes the bindings map match the mappings. The map is
// read and compared with them without a.mu; the difference is applied
// under it only if no mapping changed meanwhile (portsGen), else left to
// the next round: a publish in between would make it stale.
func (a *Agent) resyncBindings() {
	a.mu.Lock()
	gen := a.portsGen
	ports := make([]*PortMapping, 0, len(a.st.ports))
	for _, m := range a.st.ports {
		ports = append(ports, m)
	}
	a.mu.Unlock()
	diff, err := a.bindings.Diff(a.bindingsOf(ports))
	if err != nil {
		a.log.Warn("resync bindings", "err", err)
		return
	}
	if len(diff.Put)+len(diff.Stale) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.portsGen != gen {
		return
	}
	if added, removed, err := a.bindings.Apply(diff); err != nil {
		a.log.Warn("resync bindings", "err", err)
	} else {
		a.log.Info("repaired bindings map", "put_back", added, "removed_stray", removed)
	}
}

// resyncEvents follows one burst of events and touches only what they
// name: the addresses added, the bridges and veths that changed (healed
// alone), endpoints whose veth went with their namespace (collected), and
// the uplinks only when an interface not Pontoon's changed. A network
// created thus costs the same at the thousandth as at the first.
func (a *Agent) resyncEvents(changed map[int]linkEvent, addrUpdates []netlink.AddrUpdate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.metrics.observeReconcile("resync", time.Now())
	// An engine moving an endpoint's peer into its container shows here
	// only as the peer leaving: look for waiting endpoints' namespaces.
	a.adoptEngineNamespaces()
	syncUplinkAddrs := a.followAddrs(addrUpdates)
	addrsGone := map[int]bool{}
	for _, u := range addrUpdates {
		if !u.NewAddr {
			addrsGone[u.LinkIndex] = true
		}
	}
	if len(changed) == 0 {
		if syncUplinkAddrs {
			if err := a.syncUplinkAddrs(); err != nil {
				a.log.Warn("resync uplink addresses", "err", err)
			}
		}
		return
	}
	bridges := make(map[string]string, len(a.st.networks))
	for _, n := range a.st.networks {
		bridges[n.Bridge] = n.Name
	}
	veths := make(map[string]string, len(a.st.endpoints))
	for _, e := range a.st.endpoints {
		veths[e.HostIf] = e.Name
	}
	scope := &healScope{networks: map[string]bool{}, endpoints: map[string]bool{}}
	syncUplinks := false
	var gone []string
	for idx, ev := range changed {
		if ev.name == "" {
			l, err := netlink.LinkByIndex(idx)
			if err != nil {
				ev.deleted = true
			} else {
				ev.name = l.Attrs().Name
			}
		}
		_, uplink := a.uplinks[idx]
		_, failed := a.uplinkErrs[idx]
		switch {
		case bridges[ev.name] != "":
			scope.networks[bridges[ev.name]] = true
		case veths[ev.name] != "" && ev.deleted && !netnsAlive(a.st.endpoints[veths[ev.name]]):
			gone = append(gone, veths[ev.name])
		case veths[ev.name] != "":
			scope.endpoints[veths[ev.name]] = true
		case !ev.deleted || uplink || failed:
			// Not Pontoon's: it may be, or have been, an uplink.
			syncUplinks = true
		}
		// An uplink adopted as a bridge sheds its programs.
		syncUplinks = syncUplinks || uplink || failed
	}
	slices.Sort(gone)
	for _, name := range gone {
		a.log.Info("namespace gone, detaching endpoint", "endpoint", name, "netns", a.st.endpoints[name].Netns)
		if err := a.detach(name); err != nil {
			a.log.Warn("collect endpoint of a dead namespace", "endpoint", name, "err", err)
		}
	}
	if !scope.empty() {
		problems := a.healLinks(scope, func() (netlinkView, error) { return a.readNetlinkViewOf(scope, addrsGone) })
		for _, p := range a.damage.add(problems) {
			a.log.Error("could not restore; 'pontoon status' reports it until it is fixed", "what", p)
		}
	}
	if syncUplinks {
		if err := a.syncUplinks(); err != nil {
			a.log.Warn("resync uplinks", "err", err)
		}
	}
	if syncUplinks || syncUplinkAddrs {
		if err := a.syncUplinkAddrs(); err != nil {
			a.log.Warn("resync uplink addresses", "err", err)
		}
	}
}

// followAddrs gives the datapath the addresses added and takes out those
// removed, one entry each, in the order they changed; an address another
// interface still holds keeps its entry (it names that interface). It
// reports whether an uplink's addresses changed. The caller holds a.mu.
func (a *Agent) followAddrs(updates []netlink.AddrUpdate) (uplinkChanged bool) {
	hostAddrs := maps.NewHostAddrs(a.dp.Maps.HostAddrs)
	for _, u := range updates {
		if _, ok := a.uplinks[u.LinkIndex]; ok {
			uplinkChanged = true
		}
		ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		var err error
		if u.NewAddr {
			err = hostAddrs.Put(ip, uint32(u.LinkIndex))
		} else if idx, ok := hostAddrs.Lookup(ip); ok && idx == uint32(u.LinkIndex) {
			err = hostAddrs.Delete(ip)
		}
		if err != nil {
			a.log.Warn("resync host addresses", "err", err)
		}
	}
	return uplinkChanged
}
