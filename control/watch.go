package control

import (
	"context"
	"time"

	"github.com/vishvananda/netlink"
)

// resyncEvery catches anything an event missed (a full netlink buffer).
const resyncEvery = 10 * time.Second

// settleDelay is how long a burst of netlink events may take to arrive.
const settleDelay = 50 * time.Millisecond

// watch follows netlink: address changes resync hostaddrs and the
// uplinks' masquerade addresses; interfaces appearing, going or changing
// master attach or detach uplinks; an endpoint's veth vanishing detaches
// the endpoint when its namespace died, and is recreated (heal) when it
// did not. Every resync heals what was deleted by hand (a bridge, a veth,
// a gateway address); a heal every healEvery also catches what no event
// reports (pins, program links). Routes are not followed: which
// interfaces are uplinks does not depend on them.
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
		addrsChanged, linksChanged, periodic bool
		settle                               <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-links:
			linksChanged = true
			if !ok {
				links = nil
			}
		case _, ok := <-addrs:
			addrsChanged = true
			if !ok {
				addrs = nil
			}
		case <-tick.C:
			addrsChanged, linksChanged, periodic = true, true, true
		case <-healTick.C:
			a.mu.Lock()
			a.heal()
			a.mu.Unlock()
			continue
		case <-settle:
			a.resync(addrsChanged, linksChanged, periodic)
			addrsChanged, linksChanged, periodic, settle = false, false, false, nil
			continue
		}
		if settle == nil {
			settle = time.After(settleDelay)
		}
	}
}

// resync follows what changed; the periodic one also puts back bindings
// deleted from the map by hand (it reads the whole map, so not at every
// event).
func (a *Agent) resync(addrs, links, periodic bool) {
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
	if periodic {
		if added, removed, err := a.bindings.Sync(a.wantBindings()); err != nil {
			a.log.Warn("resync bindings", "err", err)
		} else if added+removed > 0 {
			a.log.Info("repaired bindings map", "put_back", added, "removed_stray", removed)
		}
	}
	// Uplinks are attached and detached here, and their addresses
	// follow.
	if err := a.syncTopology(); err != nil {
		a.log.Warn("resync datapath topology", "err", err)
	}
}
