package control

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// bindingWriter writes and removes entries of the bindings map:
// *maps.Bindings in the agent, one that fails half-way in tests.
type bindingWriter interface {
	PutBatch([]maps.Binding) error
	DeleteBatch([]maps.BindingKey) error
}

// MaxPublishSpecs bounds the specs of one publish request: the agent
// holds its lock while it publishes them. Every port of one protocol and
// address fits in one.
const MaxPublishSpecs = 65_535

// Publish publishes every spec for one endpoint, all or nothing: ports
// from ipam, the records in one transaction, the map entries in one batch.
// A failure at any step undoes the steps before it; an undo that fails too
// is reported with the failure, never dropped.
func (a *Agent) Publish(req PublishRequest) ([]*PortMapping, error) {
	var out []*PortMapping
	err := a.publish(req, func(_ *Endpoint, ms []*PortMapping) { out = clones(ms) })
	return out, err
}

// PublishPorts is Publish with the compact reply (PublishedPorts).
func (a *Agent) PublishPorts(req PublishRequest) (*PublishedPorts, error) {
	var out *PublishedPorts
	err := a.publish(req, func(e *Endpoint, ms []*PortMapping) { out = publishedPorts(e, ms) })
	return out, err
}

// publish does Publish and, on success, hands answer the endpoint and
// the new mappings in spec order while the lock still guards them.
//
// Durability: the ports and the mappings commit in one bbolt transaction,
// fsynced, before any map entry is written and before the reply, so an
// acknowledged publish survives an agent crash and a reboot (the pinned
// maps survive the former only; the agent rebuilds them from the records
// at start). A request holds a.mu from its checks to its map writes so
// that a failure undoes exactly its own steps; no two requests ever have
// a transaction open at once, and sharing one fsync among them (group
// commit, bbolt's Batch) would mean acknowledging one before its commit
// or rolling back a neighbour's published ports when a shared commit
// fails. So a one-port publish or unpublish costs at least that fsync
// (two fdatasyncs: the pages, then the meta page); the benchmarks report
// agent CPU beside wall time to tell the two apart.
func (a *Agent) publish(req PublishRequest, answer func(*Endpoint, []*PortMapping)) error {
	if len(req.Specs) == 0 {
		return kindf(ErrInvalid, "no port spec given; pass one or more such as 8080:80/tcp")
	}
	if len(req.Specs) > MaxPublishSpecs {
		return kindf(ErrInvalid, "%d port specs in one publish request; at most %d fit in one: split them across several publish calls, or publish a run of ports as one range spec such as 8000-8999:8000-8999", len(req.Specs), MaxPublishSpecs)
	}
	allow, err := parseAllowFrom(req.AllowFrom)
	if err != nil {
		return err
	}
	specs := make([]PortSpec, len(req.Specs))
	for i, s := range req.Specs {
		spec, err := ParsePortSpec(s)
		if err != nil {
			return err
		}
		specs[i] = spec
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	e, err := a.endpoint(req.Endpoint)
	if err != nil {
		return err
	}
	// Host IPs are looked up one by one, each once: reading the whole
	// map for a spec without a host IP (most of them) was a tenth of a
	// one-port publish.
	hostAddrs := maps.NewHostAddrs(a.dp.Maps.HostAddrs)
	local := map[netip.Addr]bool{}

	reqs := make([]ipam.PortRequest, len(specs))
	hostIPs := make([]netip.Addr, len(specs))
	backends := make([][2]netip.Addr, len(specs))
	for i, spec := range specs {
		hostIP := publishHostIP(spec)
		if !hostIP.IsUnspecified() && !hostIP.IsLoopback() {
			isLocal, seen := local[hostIP]
			if !seen {
				if isLocal, err = hostAddrs.Has(hostIP); err != nil {
					return err
				}
				local[hostIP] = isLocal
			}
			if !isLocal {
				return kindf(ErrInvalid, "port spec %q: %s is not an address of this host; use one of its addresses, 127.0.0.1, [::1], 0.0.0.0 or [::]", req.Specs[i], hostIP)
			}
		}
		backend, backend6, err := mappingBackends(e, spec, hostIP)
		if err != nil {
			return fmt.Errorf("port spec %q: %w", req.Specs[i], err)
		}
		reqs[i], hostIPs[i], backends[i] = portRequest(e.Name, spec, hostIP), hostIP, [2]netip.Addr{backend, backend6}
	}
	if err := checkAllowFamilies(allow, hostIPs, backends); err != nil {
		return err
	}
	v6 := newV6Ports(a.st.v6Mappings())
	// One batch: the host's sockets are read once, and the ports and the
	// mappings saved in one transaction, however many specs there are.
	ids, counted, nextID := a.st.newIDs(len(specs))
	out := make([]*PortMapping, len(specs))
	// Sized up front: grown by append, the slice was a fifth of what a
	// 60,000-port publish allocated.
	nBindings := 0
	for i, spec := range specs {
		n := spec.Container.Len()
		if backends[i][1].IsValid() {
			n *= 2
		}
		nBindings += n
	}
	bindings := make([]maps.Binding, 0, nBindings)
	save := func(tx ipam.Tx, held []ipam.PortAllocation) error {
		for i, spec := range specs {
			pa := held[i]
			m := &PortMapping{
				Endpoint: e.Name, Proto: spec.Proto.String(), HostIP: hostIPs[i], Host: pa.Ports,
				Container: ipam.PortRange{First: spec.Container.First, Last: spec.Container.First + uint16(pa.Ports.Len()-1)},
				Backend:   backends[i][0], Backend6: backends[i][1], ID: ids[i], AllowFrom: allow,
			}
			if err := v6.check(m); err != nil {
				return fmt.Errorf("port spec %q: %w", req.Specs[i], err)
			}
			v6.add(m)
			bs, err := mappingBindings(m)
			if err != nil {
				return kindf(ErrInvalid, "port spec %q: %v", req.Specs[i], err)
			}
			bindings = append(bindings, bs...)
			out[i] = m
		}
		if err := saveGroups(tx, out); err != nil {
			return err
		}
		return putNextID(tx, nextID)
	}
	counters := a.startCounters(counted)
	held, err := a.ipam.AllocatePortsBatch(reqs, save)
	if err != nil {
		counters.drop()
		var be *ipam.BatchError
		if errors.As(err, &be) {
			return fmt.Errorf("port spec %q: %w", req.Specs[be.Index], be.Err)
		}
		return err
	}
	// forget undoes the saved mappings and the ports, in one transaction.
	forget := func() error {
		released, err := a.ipam.ReleasePortsBatch(held, func(tx ipam.Tx) error {
			if err := a.st.deleteRecords(tx, out); err != nil {
				return err
			}
			return putNextID(tx, a.st.nextID)
		})
		if err == nil && len(released) != len(held) {
			err = fmt.Errorf("%d of %d port allocations were already gone", len(held)-len(released), len(held))
		}
		if err != nil {
			return fmt.Errorf("delete the saved mappings and release their ports: %w", err)
		}
		return nil
	}
	if err := a.widenPrefilter(bindings, nil); err != nil {
		counters.drop()
		return withUndo(err, forget())
	}
	// Counters and allow lists go in before the bindings that use them.
	counters.wait()
	if err := a.putAllowFrom(out); err != nil {
		counters.drop()
		return withUndo(err, errors.Join(a.syncAllowFrom(), forget()))
	}
	// A big batch is written by a goroutine while the state takes the
	// mappings (its index is most of the rest of a 60,000-port publish),
	// and gives them back if the batch fails.
	a.st.reservePorts(e.Name, len(out))
	var putErr error
	if len(bindings) >= overlapAbove {
		written := make(chan error, 1)
		go func() { written <- a.writer.PutBatch(bindings) }()
		for _, m := range out {
			a.st.putPort(m)
		}
		if putErr = <-written; putErr != nil {
			for _, m := range out {
				a.st.deletePort(m)
			}
		}
	} else if putErr = a.writer.PutBatch(bindings); putErr == nil {
		for _, m := range out {
			a.st.putPort(m)
		}
	}
	if putErr != nil {
		// Some entries may be in the map: the batch stops where it
		// failed. None of these keys was in use (ipam said so), so all
		// of them go.
		keys := make([]maps.BindingKey, len(bindings))
		for i, b := range bindings {
			keys[i] = b.Key()
		}
		var undo []error
		if err := a.writer.DeleteBatch(keys); err != nil {
			undo = append(undo, fmt.Errorf("remove the bindings written: %w", err))
		}
		counters.drop()
		if err := forget(); err != nil {
			undo = append(undo, err)
		}
		if err := a.syncAllowFrom(); err != nil {
			undo = append(undo, err)
		}
		return withUndo(fmt.Errorf("write %d bindings: %w", len(bindings), putErr), errors.Join(undo...))
	}
	a.st.nextID = nextID
	a.portsGen++
	if slices.ContainsFunc(out, (*PortMapping).publishesIPv6) {
		// bpf_fib_lookup and the stack both refuse to forward IPv6
		// while forwarding is off: the port would be dead from outside.
		if err := a.enableForwarding6(); err != nil {
			a.log.Error("IPv6 published port: the host does not forward IPv6", "err", err)
		}
	}
	answer(e, out)
	return nil
}

// withUndo reports cause and, when undoing what was done before it
// failed as well, that too: the state may then differ from the maps until
// the agent restarts and reconciles them. One line, as every message.
func withUndo(cause, undoErr error) error {
	if undoErr == nil {
		return cause
	}
	msg := strings.ReplaceAll(undoErr.Error(), "\n", "; ")
	return fmt.Errorf("%w; undoing it failed too: %s; restart the agent to reconcile the bindings map with the state", cause, msg)
}

// portRequest is the ipam request of one spec. A host range for a single
// container port takes the first free port of the range, as Docker does.
func portRequest(owner string, spec PortSpec, hostIP netip.Addr) ipam.PortRequest {
	req := ipam.PortRequest{Owner: owner, Proto: spec.Proto, HostIP: hostIP}
	switch {
	case spec.Host.IsZero():
		req.Count = spec.Container.Len()
	case spec.Container.Len() == 1 && spec.Host.Len() > 1:
		req.Ports, req.FirstFree = spec.Host, true
	default:
		req.Ports = spec.Host
	}
	return req
}

// Unpublish removes the endpoint's ports that match spec: its container
// ports and protocol, and the host IP and ports when given. It returns
// what it removed.
func (a *Agent) Unpublish(req UnpublishRequest) ([]*PortMapping, error) {
	spec, err := ParsePortSpec(req.Spec)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.endpoint(req.Endpoint); err != nil {
		return nil, err
	}
	var ms []*PortMapping
	for _, m := range a.st.portCandidates(req.Endpoint, spec.Proto.String(), spec.Container) {
		if m.Proto != spec.Proto.String() || !overlaps(m.Container, spec.Container) {
			continue
		}
		if spec.HostIP.IsValid() && m.HostIP != spec.HostIP {
			continue
		}
		if !spec.Host.IsZero() && !overlaps(m.Host, spec.Host) {
			continue
		}
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		return nil, kindf(ErrNotFound, "endpoint %s has no published port matching %q; list them with 'pontoon port ls %s'", req.Endpoint, req.Spec, req.Endpoint)
	}
	// A spec naming part of a range mapping (81 of 1-65535) removes that
	// part alone; the rest stays published.
	var whole []*PortMapping
	var splits []mappingSplit
	for _, m := range ms {
		if s, ok := splitOf(m, spec); ok {
			splits = append(splits, s)
		} else {
			whole = append(whole, m)
		}
	}
	out := clones(whole)
	if err := a.unpublish(whole); err != nil {
		return nil, err
	}
	for _, s := range splits {
		removed, err := a.unpublishPart(s)
		if err != nil {
			return nil, err
		}
		out = append(out, removed)
	}
	sortMappings(out)
	// The lists of what went, and of the parts a split renumbered. Only
	// mappings with a list have entries there: without one, the sync (a
	// walk of every mapping) has nothing to do.
	if !slices.ContainsFunc(ms, func(m *PortMapping) bool { return len(m.AllowFrom) > 0 }) {
		return out, nil
	}
	if err := a.syncAllowFrom(); err != nil {
		return out, err
	}
	return out, nil
}

// MaxAllowFrom bounds one request's --allow-from list.
const MaxAllowFrom = 256

// parseAllowFrom reads --allow-from values: IPv4 or IPv6 prefixes, or
// addresses (a /32 or /128 each); one list may mix both families.
func parseAllowFrom(in []string) ([]netip.Prefix, error) {
	if len(in) > MaxAllowFrom {
		return nil, kindf(ErrInvalid, "%d --allow-from values; at most %d fit: give wider prefixes", len(in), MaxAllowFrom)
	}
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, kindf(ErrInvalid, "--allow-from %q is not a CIDR prefix or address; give one such as 203.0.113.0/24 or 2001:db8::/32", s)
			}
			// A zone names a link, not sources (a prefix would drop it).
			if a.Zone() != "" {
				return nil, kindf(ErrInvalid, "--allow-from %s has a zone; give the address without it", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		// A v4-mapped prefix is never an IPv6 packet's source: it would be
		// an allowlist matching nobody.
		if p.Addr().Is4In6() {
			return nil, kindf(ErrInvalid, "--allow-from %s is IPv4-mapped IPv6; give the IPv4 prefix %s", s, netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0)))
		}
		if p != p.Masked() {
			return nil, kindf(ErrInvalid, "--allow-from %s has host bits set; give the prefix %s", s, p.Masked())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// checkAllowFamilies refuses IPv6 --allow-from prefixes when no spec
// publishes on IPv6: no client could ever match them, and the user who
// wrote them expects IPv6 clients to get in.
func checkAllowFamilies(allow []netip.Prefix, hostIPs []netip.Addr, backends [][2]netip.Addr) error {
	i := slices.IndexFunc(allow, func(p netip.Prefix) bool { return p.Addr().Is6() })
	if i < 0 {
		return nil
	}
	for j := range hostIPs {
		if (&PortMapping{HostIP: hostIPs[j], Backend6: backends[j][1]}).publishesIPv6() {
			return nil
		}
	}
	return kindf(ErrInvalid, "--allow-from %s is IPv6 but nothing here is published on IPv6; give the endpoint an IPv6 address or drop the prefix", allow[i])
}

// putAllowFrom writes the --allow-from lists of new mappings.
func (a *Agent) putAllowFrom(ms []*PortMapping) error {
	af := maps.NewAllowFrom(a.dp.Maps.AllowFrom)
	for _, m := range ms {
		for _, p := range m.AllowFrom {
			if err := af.Put(m.ID, p); err != nil {
				return fmt.Errorf("write allow-from lists: %w", err)
			}
		}
	}
	return nil
}

func overlaps(x, y ipam.PortRange) bool { return x.First <= y.Last && y.First <= x.Last }

// Ports lists mappings, of one endpoint or of all.
func (a *Agent) Ports(endpoint string) ([]*PortMapping, error) {
	page, err := a.PortsPage(PortQuery{Endpoint: endpoint})
	if err != nil {
		return nil, err
	}
	return page.Mappings, nil
}

func sortMappings(ms []*PortMapping) { slices.SortFunc(ms, compareMappings) }

// compareMappings is the order of `port ls`: endpoint, container port,
// protocol, host IP, host port. No two mappings compare equal: a host
// port of one protocol and address is held once.
func compareMappings(x, y *PortMapping) int {
	return cmp.Or(
		strings.Compare(x.Endpoint, y.Endpoint),
		cmp.Compare(x.Container.First, y.Container.First),
		strings.Compare(x.Proto, y.Proto),
		x.HostIP.Compare(y.HostIP),
		cmp.Compare(x.Host.First, y.Host.First),
	)
}

func clones(ms []*PortMapping) []*PortMapping {
	out := make([]*PortMapping, len(ms))
	for i, m := range ms {
		c := *m
		out[i] = &c
	}
	return out
}

// DockerLines prints mappings the way `docker port` does, one per port:
// "80/tcp -> 0.0.0.0:49153"; a mapping of both families names both
// wildcards on its one line: "80/tcp -> 0.0.0.0:49153, [::]:49153".
func DockerLines(ms []*PortMapping) []string {
	var out []string
	for _, m := range ms {
		for i := 0; i < m.Host.Len(); i++ {
			host := netip.AddrPortFrom(m.HostIP, m.Host.First+uint16(i))
			line := fmt.Sprintf("%d/%s -> %s", int(m.Container.First)+i, m.Proto, host)
			if m.Backend6.IsValid() {
				line += ", " + netip.AddrPortFrom(netip.IPv6Unspecified(), host.Port()).String()
			}
			if len(m.AllowFrom) > 0 {
				line += " (allow-from " + joinPrefixes(m.AllowFrom) + ")"
			}
			out = append(out, line)
		}
	}
	return out
}

func joinPrefixes(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return strings.Join(out, ",")
}
