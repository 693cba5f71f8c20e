package control

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
)

// healEvery is how often the agent looks for what no netlink event
// reports: pins removed and program links detached by hand, and anything
// an event missed. Each look costs a few syscalls per interface.
const healEvery = 2 * time.Second

// damage is what the last heal could not restore. It has a lock of its
// own so that status and the API guard never wait for a long request.
type damage struct {
	mu sync.Mutex
	// problems names each part that could not be restored and why.
	problems []string
	// detached says why new ports and endpoints would carry no traffic;
	// nil when the datapath is whole.
	detached error
}

// set records what could not be restored and returns the problems that
// are new since the last call, so each is logged once.
func (h *damage) set(problems []string, detached error) (fresh []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range problems {
		if !slices.Contains(h.problems, p) {
			fresh = append(fresh, p)
		}
	}
	h.problems, h.detached = problems, detached
	return fresh
}

// add records problems besides those already known (a heal of a few
// interfaces knows nothing of the rest) and returns the new ones.
func (h *damage) add(problems []string) (fresh []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range problems {
		if !slices.Contains(h.problems, p) {
			fresh = append(fresh, p)
			h.problems = append(h.problems, p)
		}
	}
	return fresh
}

// Detached says why the datapath cannot be kept working, nil when it can.
func (h *damage) Detached() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.detached
}

// Problems lists what could not be restored, for status.
func (h *damage) Problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.problems)
}

// netlinkView is one dump of the interfaces and IPv4 addresses, so a
// heal pass asks the kernel once rather than once per interface.
type netlinkView struct {
	links map[string]netlink.Link
	addrs map[int][]netlink.Addr
	// partial views (of a few interfaces) hold the addresses of some
	// links only; the others' are unknown, not absent.
	partial bool
}

// addrsOf returns the addresses of the link with index idx, and whether
// they are known.
func (v netlinkView) addrsOf(idx int) ([]netlink.Addr, bool) {
	addrs, ok := v.addrs[idx]
	return addrs, ok || !v.partial
}

func readNetlinkView() (netlinkView, error) {
	v := netlinkView{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}}
	links, err := loader.RetryDump(netlink.LinkList)
	if err != nil {
		return v, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		v.links[l.Attrs().Name] = l
	}
	// Both families: a dual-stack network's bridge carries an IPv6
	// gateway too.
	addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return v, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		v.addrs[ad.LinkIndex] = append(v.addrs[ad.LinkIndex], ad)
	}
	return v, nil
}

// heal puts back what was deleted or detached behind the agent's back:
// map pins, socket hooks and uplink programs, then each network's bridge
// (with its gateway, MTU, link up, its endpoints' veths enslaved and its
// program) and each endpoint's veth pair (recreated into the container's
// namespace as it was). Every repair is logged; what cannot be restored
// is kept for status. The caller holds a.mu.
func (a *Agent) heal() {
	detached := a.healDatapath()
	problems := a.healLinks(nil, readNetlinkView)
	a.setHealth(withDetached(problems, detached), detached)
}

func withDetached(problems []string, detached error) []string {
	if detached == nil {
		return problems
	}
	return append([]string{detached.Error()}, problems...)
}

// healSweep is the heal every healEvery. It looks for damage without
// a.mu, through one dump of the interfaces and a look at each attachment,
// and takes the lock to repair only what it found: with a thousand
// networks the look takes long enough to stall every request.
func (a *Agent) healSweep() {
	a.mu.Lock()
	networks := make([]*Network, 0, len(a.st.networks))
	for _, n := range a.st.networks {
		networks = append(networks, n)
	}
	endpoints := make([]*Endpoint, 0, len(a.st.endpoints))
	for _, e := range a.st.endpoints {
		endpoints = append(endpoints, e)
	}
	a.mu.Unlock()
	// Records are replaced, never changed in place, so these stay as
	// they were read.
	scope, err := a.findDamage(networks, endpoints)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.log.Warn("look for damage; healing everything", "err", err)
		scope = nil
	}
	// Docker configures a moved peer inside the container, where the
	// agent sees no events: waiting endpoints are looked at here too.
	a.adoptEngineNamespaces()
	detached := a.healDatapath()
	var problems []string
	if !scope.empty() {
		problems = a.healLinks(scope, readNetlinkView)
	}
	a.setHealth(withDetached(problems, detached), detached)
}

// findDamage names the networks and endpoints whose interfaces differ
// from their records: what healLinks would repair. It changes nothing and
// needs no lock.
func (a *Agent) findDamage(networks []*Network, endpoints []*Endpoint) (*healScope, error) {
	v, err := readNetlinkView()
	if err != nil {
		return nil, err
	}
	byNetwork := map[string][]*Endpoint{}
	for _, e := range endpoints {
		byNetwork[e.Network] = append(byNetwork[e.Network], e)
	}
	scope := &healScope{networks: map[string]bool{}, endpoints: map[string]bool{}}
	for _, n := range networks {
		if need, err := a.healNetwork(n, byNetwork[n.Name], v, false); len(need) > 0 || err != nil {
			scope.networks[n.Name] = true
		}
	}
	for _, e := range endpoints {
		if need, err := a.healEndpoint(e, v, false); len(need) > 0 || err != nil {
			scope.endpoints[e.Name] = true
		}
	}
	return scope, nil
}

// healScope names the networks and endpoints a heal looks at; a nil one
// means all of them.
type healScope struct {
	networks, endpoints map[string]bool
}

func (s *healScope) hasNetwork(name string) bool  { return s == nil || s.networks[name] }
func (s *healScope) hasEndpoint(name string) bool { return s == nil || s.endpoints[name] }
func (s *healScope) empty() bool {
	return s != nil && len(s.networks) == 0 && len(s.endpoints) == 0
}

// healLinks repairs the bridges of the networks and the veths of the
// endpoints scope names, as seen through view, and returns what it could
// not restore. The caller holds a.mu.
func (a *Agent) healLinks(scope *healScope, view func() (netlinkView, error)) (problems []string) {
	v, err := view()
	if err != nil {
		return []string{err.Error()}
	}
	byNetwork := a.endpointsByNetwork()
	repaired := false
	broken := map[string]bool{}
	for _, name := range sortedKeys(a.st.networks) {
		if !scope.hasNetwork(name) {
			continue
		}
		n := a.st.networks[name]
		did, err := a.healNetwork(n, byNetwork[name], v, true)
		if len(did) > 0 {
			repaired = true
			a.log.Info("repaired bridge", "network", n.Name, "bridge", n.Bridge, "did", strings.Join(did, ", "))
		}
		if err != nil {
			broken[n.Name] = true
			problems = append(problems, fmt.Sprintf("bridge %s of network %s: %v", n.Bridge, n.Name, err))
		}
	}
	for _, name := range sortedKeys(a.st.endpoints) {
		e := a.st.endpoints[name]
		if !scope.hasEndpoint(name) || broken[e.Network] {
			continue
		}
		did, err := a.healEndpoint(e, v, true)
		if len(did) > 0 {
			repaired = true
			a.log.Info("repaired endpoint", "endpoint", e.Name, "veth", e.HostIf, "did", strings.Join(did, ", "))
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("veth %s of endpoint %s: %v", e.HostIf, e.Name, err))
		}
	}
	if repaired {
		// New interface indexes go to the endpoints map.
		if err := a.syncTopology(); err != nil {
			problems = append(problems, fmt.Sprintf("datapath topology: %v", err))
		}
	}
	return problems
}

// endpointsByNetwork groups the endpoints by network, each group in name
// order.
func (a *Agent) endpointsByNetwork() map[string][]*Endpoint {
	out := map[string][]*Endpoint{}
	for _, name := range sortedKeys(a.st.endpoints) {
		e := a.st.endpoints[name]
		out[e.Network] = append(out[e.Network], e)
	}
	return out
}

// readNetlinkViewOf looks up only the bridges and veths of what scope
// names (a network's endpoints' veths with its bridge), and the addresses
// of the links in addrsOf only (the kernel lists every address to give
// those of one), so an event about one network costs the same however
// many there are. The caller holds a.mu.
func (a *Agent) readNetlinkViewOf(scope *healScope, addrsOf map[int]bool) (netlinkView, error) {
	v := netlinkView{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, partial: true}
	var names []string
	for name := range scope.networks {
		if n := a.st.networks[name]; n != nil {
			names = append(names, n.Bridge)
		}
	}
	for _, e := range a.st.endpoints {
		if scope.endpoints[e.Name] || scope.networks[e.Network] {
			names = append(names, e.HostIf)
		}
	}
	var notFound netlink.LinkNotFoundError
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if errors.As(err, &notFound) {
			continue
		}
		if err != nil {
			return v, fmt.Errorf("look up %s: %w", name, err)
		}
		v.links[name] = l
		if !addrsOf[l.Attrs().Index] {
			continue
		}
		addrs, err := loader.RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return v, fmt.Errorf("list addresses of %s: %w", name, err)
		}
		v.addrs[l.Attrs().Index] = addrs
	}
	return v, nil
}

func (a *Agent) setHealth(problems []string, detached error) {
	for _, p := range a.damage.set(problems, detached) {
		a.log.Error("could not restore; 'pontoon status' reports it until it is fixed", "what", p)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// healDatapath puts back map pins, the socket hooks and the uplink
// programs. The error, one line, says what is still detached. The caller
// holds a.mu.
func (a *Agent) healDatapath() error {
	var errs []string
	repinned, pinErr := a.dp.RepinMaps()
	if len(repinned) > 0 {
		a.log.Info("repaired pins: pinned the maps again, contents as before", "dir", a.dp.PinDir(), "maps", strings.Join(repinned, ","))
	}
	if pinErr == nil && a.locks != nil {
		// A recreated directory is a new one, which the agent's lock
		// does not cover until taken again.
		relocked, err := a.locks.relock(lockedPinDir(a.cfg.PinDir), "the pin directory", "--bpffs")
		if err != nil {
			errs = append(errs, fmt.Sprintf("lock of the recreated pin directory: %v", err))
		} else if relocked {
			a.log.Info("repaired pins: locked the recreated pin directory again", "dir", lockedPinDir(a.cfg.PinDir))
		}
	}
	if pinErr != nil {
		// Nothing can be pinned, so nothing can be attached either.
		errs = append(errs, fmt.Sprintf("datapath pins: %v", pinErr))
	} else {
		attached, err := a.dp.CgroupAttached(a.cfg.Cgroup)
		if err == nil && !attached {
			if err = a.dp.AttachCgroup(a.cfg.Cgroup); err == nil {
				a.log.Info("repaired socket hooks: attached them again", "cgroup", a.cfg.Cgroup)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("socket hooks on %s: %v", a.cfg.Cgroup, err))
		}
	}
	// Uplinks whose programs are gone stop counting as attached (status
	// says so); syncUplinks attaches them again once it can.
	var lost []int
	for idx, u := range a.uplinks {
		l, err := netlink.LinkByIndex(idx)
		if err != nil || l.Attrs().Name != u.Name {
			continue // gone or renamed: syncUplinks follows it
		}
		attached, err := a.dp.UplinkAttached(l)
		wantXDP := a.cfg.XDP != "" && a.cfg.XDP != loader.XDPOff && u.XDP != string(loader.XDPOff)
		if err == nil && attached && wantXDP {
			// The XDP program is part of the uplink's datapath too. u.XDP
			// is off only where the uplink cannot have it; an adopted
			// link reports no mode, so the agent's setting decides.
			var xdp loader.XDPMode
			xdp, err = a.dp.UplinkXDPMode(l)
			attached = xdp != loader.XDPOff
		}
		if err == nil && attached {
			continue
		}
		if err != nil {
			a.log.Info("repairing uplink: cannot tell whether its programs are attached", "uplink", u.Name, "err", err)
		} else {
			a.log.Info("repairing uplink: its programs' pins or links are gone", "uplink", u.Name)
		}
		delete(a.uplinks, idx)
		lost = append(lost, idx)
	}
	if pinErr == nil && (len(lost) > 0 || len(repinned) > 0) {
		if err := a.syncUplinks(); err != nil {
			errs = append(errs, err.Error())
		}
		for _, idx := range lost {
			if err := a.uplinkErrs[idx]; err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// healNetwork restores a network's bridge: recreated when deleted (an
// adopted one cannot be), its gateway address, MTU and link up, its
// endpoints' veths (eps) enslaved again and its program attached. It
// returns what it did; with fix false it changes nothing and returns what
// it would do, which needs no lock.
func (a *Agent) healNetwork(n *Network, eps []*Endpoint, v netlinkView, fix bool) (did []string, err error) {
	br := v.links[n.Bridge]
	if br == nil {
		if !fix {
			return []string{"recreate it"}, nil
		}
		if err := ensureBridge(n); err != nil {
			return did, err
		}
		var gateways []string
		for _, s := range n.subnets() {
			gateways = append(gateways, fmt.Sprintf("%s/%d", s.Gateway, s.Subnet.Bits()))
		}
		did = append(did, "recreated it with gateway "+strings.Join(gateways, ", "))
		if br, err = netlink.LinkByName(n.Bridge); err != nil {
			return did, fmt.Errorf("find recreated bridge: %w", err)
		}
	} else {
		if br.Type() != "bridge" {
			return did, fmt.Errorf("%s is a %s interface now, not a bridge: delete it, and the agent recreates the bridge", n.Bridge, br.Type())
		}
		addrs, known := v.addrsOf(br.Attrs().Index)
		for _, s := range n.subnets() {
			if !known || hasAddr(addrs, s.Gateway, s.Subnet.Bits()) {
				continue
			}
			did = append(did, fmt.Sprintf("gateway %s/%d added again", s.Gateway, s.Subnet.Bits()))
			if !fix {
				return did, nil
			}
			if err := netlink.AddrReplace(br, gatewayAddr(s)); err != nil {
				return did[:len(did)-1], fmt.Errorf("add gateway %s: %w", s.Gateway, err)
			}
		}
		if !n.Adopted && br.Attrs().MTU != n.MTU {
			did = append(did, fmt.Sprintf("MTU %d set again", n.MTU))
			if !fix {
				return did, nil
			}
			if err := netlink.LinkSetMTU(br, n.MTU); err != nil {
				return did[:len(did)-1], fmt.Errorf("set MTU: %w", err)
			}
		}
		if br.Attrs().Flags&net.FlagUp == 0 {
			did = append(did, "set up again")
			if !fix {
				return did, nil
			}
			if err := netlink.LinkSetUp(br); err != nil {
				return did[:len(did)-1], fmt.Errorf("set up: %w", err)
			}
		}
	}
	for _, e := range eps {
		veth := v.links[e.HostIf]
		if veth == nil || veth.Attrs().MasterIndex == br.Attrs().Index {
			continue
		}
		did = append(did, "enslaved "+e.HostIf+" again")
		if !fix {
			return did, nil
		}
		if err := netlink.LinkSetMaster(veth, br); err != nil {
			return did[:len(did)-1], fmt.Errorf("enslave %s: %w", e.HostIf, err)
		}
	}
	attached, err := a.dp.BridgeAttached(br)
	if err == nil && !attached {
		if !fix {
			return append(did, "put its program back"), nil
		}
		if _, err = a.dp.AttachBridge(n.Bridge); err == nil {
			did = append(did, "put its program back")
		}
	}
	if err != nil {
		return did, fmt.Errorf("bridge program: %w", err)
	}
	return did, nil
}

// healEndpoint restores an endpoint's veth pair: deleting either side
// deletes both, so a missing host side is recreated as a pair, the peer
// born in the container's namespace as eth0 with the name, address, MACs,
// MTU and default route it had. An endpoint whose namespace is gone is
// left to gcEndpoints. It returns what it did; with fix false, what it
// would do, changing nothing.
func (a *Agent) healEndpoint(e *Endpoint, v netlinkView, fix bool) (did []string, err error) {
	veth := v.links[e.HostIf]
	switch {
	case veth == nil && (e.Adopted || e.Owner == dockerOwner || !netnsAlive(e)):
		// An adopted pair is not the agent's to recreate: its maker
		// deleted it, and its DEL detaches the endpoint. Nor is a Docker
		// container's: dockerd configured its side (name, address,
		// routes), and its Leave detaches the endpoint.
		return nil, nil
	case veth == nil && !fix:
		return []string{"recreate the pair"}, nil
	case veth == nil:
		if err := a.recreateVeth(e); err != nil {
			deleteLink(e.HostIf)
			return nil, err
		}
		did = append(did, fmt.Sprintf("recreated the pair, %s %s in %s", e.ifName(), e.IP, e.Netns))
		if veth, err = netlink.LinkByName(e.HostIf); err != nil {
			return did, fmt.Errorf("find recreated veth: %w", err)
		}
	case veth.Attrs().Flags&net.FlagUp == 0 && !fix:
		return []string{"set up again"}, nil
	case veth.Attrs().Flags&net.FlagUp == 0:
		if err := netlink.LinkSetUp(veth); err != nil {
			return did, fmt.Errorf("set up: %w", err)
		}
		did = append(did, "set up again")
	}
	attached, err := a.dp.EndpointAttached(veth)
	if err == nil && !attached {
		if !fix {
			return append(did, "put its program back"), nil
		}
		if _, err = a.dp.AttachEndpoint(e.HostIf); err == nil {
			did = append(did, "put its program back")
		}
	}
	if err != nil {
		return did, fmt.Errorf("endpoint program: %w", err)
	}
	return did, nil
}

func hasAddr(addrs []netlink.Addr, want netip.Addr, bits int) bool {
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || ip.Unmap() != want {
			continue
		}
		if ones, _ := ad.Mask.Size(); ones == bits {
			return true
		}
	}
	return false
}

// refuseWhenDetached answers 503 to a publish or attach while the last
// heal (one runs every healEvery) could not restore the datapath: it would
// succeed on paper and not be kept working. The links are held, so pins
// removed a moment ago stop no traffic and need no look of their own here.
func (a *Agent) refuseWhenDetached(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && (r.URL.Path == "/v1/ports" || r.URL.Path == "/v1/endpoints") {
			if err := a.damage.Detached(); err != nil {
				writeError(w, kindf(ErrUnavailable, "refused while the agent cannot restore the datapath (%v): fix that and retry; 'pontoon status' shows what is missing", err))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
