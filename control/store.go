package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"os"
	"slices"
	"strconv"

	"github.com/pontoon-net/pontoon/ipam"
)

// The agent's records share the bbolt file with ipam, in buckets of their
// own. The records are the truth: ipam allocations without a record are
// leftovers of a crash between the two writes and are released at start.
const (
	bucketNetworks  = "agent.networks"  // name -> JSON Network
	bucketEndpoints = "agent.endpoints" // name -> JSON Endpoint
	bucketPorts     = "agent.ports"     // proto/hostIP/first -> JSON PortMapping; groupKey -> group record (portrecord.go)
	bucketMeta      = "agent.meta"
)

var (
	keyNextID = []byte("next_binding_id")
	// keyIPForward holds the forwardRecord of the first agent that turned
	// IPv4 forwarding on; cleanup restores it and deletes the key.
	keyIPForward = []byte("ip_forward_found")
	// keyIPv6Forward is the same for net.ipv6.conf.all.forwarding, which
	// an agent turns on only for a network that needs it.
	keyIPv6Forward = []byte("ipv6_forwarding_found")
)

// forwardRecord is the net.ipv4.ip_forward an agent found, and in which
// network namespace (the setting is per namespace).
type forwardRecord struct {
	Value string `json:"value"`
	Netns nsID   `json:"netns"`
}

func getForwardRecord(s ipam.Store, key []byte) (rec forwardRecord, ok bool, err error) {
	err = s.View(func(tx ipam.Tx) error {
		v := tx.Get(bucketMeta, key)
		if v == nil {
			return nil
		}
		ok = true
		return decode(bucketMeta, key, v, &rec)
	})
	return rec, ok, err
}

// state is the in-memory copy of the records.
type state struct {
	networks  map[string]*Network
	endpoints map[string]*Endpoint
	ports     map[string]*PortMapping
	nextID    uint32
	// index finds an endpoint's mappings without a scan of every mapping
	// of the host: built on first use (a state filled by hand has none);
	// putPort and deletePort keep it.
	index *portIndex
	// groups holds the members of each group record (see saveGroups).
	groups map[uint32][]*PortMapping
	// slotUsers counts, for each binding_stats slot, the live mappings
	// whose id falls in it (more than one only past 65,536 mappings, or
	// for ids given out before slots): built when the agent starts (or on
	// first use), and kept by putPort and deletePort.
	slotUsers []uint32
}

// A publish saves its mappings in group records of up to groupSize, keyed
// by the first member's binding id (which may leave the group later): one record a port made a 60,000-port
// publish mostly bbolt inserts. Removing a member rewrites its group, so
// groups stay small. Records of one mapping under its portKey (from
// agents before groups, and from 'pontoon state rebuild') are read and
// removed as before; groupPrefix sorts group keys apart from those, which
// start with the protocol's name.
const (
	groupSize   = 256
	groupPrefix = "\x00group/"
)

func groupKey(id uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte(groupPrefix), id)
}

// saveGroups saves new mappings in new group records and sets their group.
func saveGroups(tx ipam.Tx, ms []*PortMapping) error {
	for len(ms) > 0 {
		chunk := ms[:min(groupSize, len(ms))]
		ms = ms[len(chunk):]
		for _, m := range chunk {
			m.group = chunk[0].ID
		}
		if err := putBytes(tx, bucketPorts, groupKey(chunk[0].ID), encodeGroup(chunk)); err != nil {
			return fmt.Errorf("save port mappings: %w", err)
		}
	}
	return nil
}

// deleteRecords removes the records of ms, mappings of st or new ones
// saveGroups saved in this transaction, rewriting each group that keeps
// members. st itself changes only when the caller deletes them after the
// commit.
func (st *state) deleteRecords(tx ipam.Tx, ms []*PortMapping) error {
	gone := map[uint32]map[*PortMapping]bool{}
	for _, m := range ms {
		if m.group == 0 {
			if err := tx.Delete(bucketPorts, []byte(portKey(m))); err != nil {
				return err
			}
			continue
		}
		if gone[m.group] == nil {
			gone[m.group] = map[*PortMapping]bool{}
		}
		gone[m.group][m] = true
	}
	for g, out := range gone {
		var keep []*PortMapping
		for _, m := range st.groups[g] {
			if !out[m] {
				keep = append(keep, m)
			}
		}
		if len(keep) == 0 {
			if err := tx.Delete(bucketPorts, groupKey(g)); err != nil {
				return err
			}
			continue
		}
		if err := putBytes(tx, bucketPorts, groupKey(g), encodeGroup(keep)); err != nil {
			return err
		}
	}
	return nil
}

// putPort adds or replaces a mapping.
// reservePorts readies the index for n more mappings of an endpoint.
func (st *state) reservePorts(endpoint string, n int) {
	if st.index != nil {
		st.index.reserve(endpoint, n)
	}
}

func (st *state) putPort(m *PortMapping) {
	k := portKey(m)
	old := st.ports[k]
	if st.index != nil {
		if old != nil {
			st.index.remove(old)
		}
		st.index.add(m)
	}
	if old != nil {
		st.releaseSlot(old.ID)
	}
	st.ports[k] = m
	st.holdSlot(m.ID)
	if m.group != 0 {
		if st.groups == nil {
			st.groups = map[uint32][]*PortMapping{}
		}
		st.groups[m.group] = append(st.groups[m.group], m)
	}
}

// deletePort removes a mapping.
func (st *state) deletePort(m *PortMapping) {
	k := portKey(m)
	old := st.ports[k]
	if old == nil {
		return
	}
	if st.index != nil {
		st.index.remove(old)
	}
	st.releaseSlot(old.ID)
	if old.group != 0 {
		members := slices.DeleteFunc(st.groups[old.group], func(x *PortMapping) bool { return x == old })
		if len(members) == 0 {
			delete(st.groups, old.group)
		} else {
			st.groups[old.group] = members
		}
	}
	delete(st.ports, k)
}

// portIndex holds each mapping by endpoint and, within it, by container
// port: in byPort when it has one container port, in ranges when it has
// several. Sets are keyed by the mapping itself (st.ports holds the one
// mapping of each key) and ports by number: string and struct keys were
// most of the index's share of a 60,000-port publish. A container port has
// a mapping or two (one per host address), so byPort holds slices.
type portIndex struct {
	endpoints map[string]*endpointPorts
	// v6 holds the mappings that hold IPv6 ports, which a publish checks
	// new ones against: building that check from every mapping was most
	// of one publish at 60,000 IPv4 mappings.
	v6 mappingSet
	// last is the endpoint of the previous add: a publish adds thousands
	// to one.
	last *endpointPorts
}

type mappingSet = map[*PortMapping]struct{}

// endpointPorts indexes an endpoint's mappings: a one-port one by its
// container port, a range in ranges. Each map insert of a 60,000-port
// publish is a cache miss or two, and the publish waits for them: a set
// of all of them was a fifth of its index work, and each visits these.
type endpointPorts struct {
	name   string
	byPort map[protoPort][]*PortMapping
	ranges mappingSet
}

// each visits the endpoint's mappings.
func (ep *endpointPorts) each(yield func(*PortMapping) bool) {
	for _, ms := range ep.byPort {
		for _, m := range ms {
			if !yield(m) {
				return
			}
		}
	}
	for m := range ep.ranges {
		if !yield(m) {
			return
		}
	}
}

// protoPort is a protocol's name, as ParseProto reads it, and a port.
type protoPort uint32

func makeProtoPort(proto string, port uint16) protoPort {
	p, _ := ipam.ParseProto(proto)
	return protoPort(p)<<16 | protoPort(port)
}

func (x *portIndex) endpoint(name string, create bool) *endpointPorts {
	if x.last != nil && x.last.name == name {
		return x.last
	}
	ep := x.endpoints[name]
	if ep == nil && create {
		ep = &endpointPorts{name: name, byPort: map[protoPort][]*PortMapping{}, ranges: mappingSet{}}
		x.endpoints[name] = ep
	}
	if ep != nil {
		x.last = ep
	}
	return ep
}

// reserve makes room in the endpoint's index for n more mappings: grown
// insert by insert from empty to 60,000, its map was rehashed a dozen
// times, inside the publish.
func (x *portIndex) reserve(endpoint string, n int) {
	ep := x.endpoint(endpoint, true)
	if n <= len(ep.byPort) {
		return
	}
	byPort := make(map[protoPort][]*PortMapping, len(ep.byPort)+n)
	maps.Copy(byPort, ep.byPort)
	ep.byPort = byPort
}

func (x *portIndex) add(m *PortMapping) {
	if m.holdsIPv6Ports() {
		x.v6[m] = struct{}{}
	}
	ep := x.endpoint(m.Endpoint, true)
	if m.Container.Len() == 1 {
		k := makeProtoPort(m.Proto, m.Container.First)
		ep.byPort[k] = append(ep.byPort[k], m)
	} else {
		ep.ranges[m] = struct{}{}
	}
}

func (x *portIndex) remove(m *PortMapping) {
	delete(x.v6, m)
	ep := x.endpoint(m.Endpoint, false)
	if ep == nil {
		return
	}
	if m.Container.Len() == 1 {
		k := makeProtoPort(m.Proto, m.Container.First)
		if left := slices.DeleteFunc(ep.byPort[k], func(x *PortMapping) bool { return x == m }); len(left) > 0 {
			ep.byPort[k] = left
		} else {
			delete(ep.byPort, k)
		}
	} else {
		delete(ep.ranges, m)
	}
	if len(ep.byPort) == 0 && len(ep.ranges) == 0 {
		delete(x.endpoints, ep.name)
		if x.last == ep {
			x.last = nil
		}
	}
}

func (st *state) portIndex() *portIndex {
	if st.index == nil {
		st.index = &portIndex{endpoints: map[string]*endpointPorts{}, v6: mappingSet{}}
		for _, m := range st.ports {
			st.index.add(m)
		}
	}
	return st.index
}

// holdsIPv6Ports: the mapping holds host ports on [::] (a wildcard
// mapping of a dual-stack endpoint) or on an IPv6 address, the ones
// newV6Ports collects.
func (m *PortMapping) holdsIPv6Ports() bool { return m.Backend6.IsValid() || m.HostIP.Is6() }

// v6Mappings is every mapping that holds IPv6 ports; the caller must not
// change the set.
func (st *state) v6Mappings() mappingSet { return st.portIndex().v6 }

// endpointPorts is the endpoint's mappings; the caller must not change
// the state while it visits them.
func (st *state) endpointPorts(name string) iter.Seq[*PortMapping] {
	if ep := st.portIndex().endpoint(name, false); ep != nil {
		return ep.each
	}
	return func(func(*PortMapping) bool) {}
}

// maxPortLookups: a container range up to this long is looked up port by
// port; a longer one scans the endpoint's mappings.
const maxPortLookups = 1024

// portCandidates is every mapping of the endpoint that may hold a
// container port of proto in ports, and maybe others: the caller filters.
func (st *state) portCandidates(endpoint, proto string, ports ipam.PortRange) []*PortMapping {
	ep := st.portIndex().endpoint(endpoint, false)
	if ep == nil {
		return nil
	}
	var out []*PortMapping
	if ports.Len() > maxPortLookups {
		return slices.AppendSeq(out, ep.each)
	}
	for p := int(ports.First); p <= int(ports.Last); p++ {
		out = append(out, ep.byPort[makeProtoPort(proto, uint16(p))]...)
	}
	for m := range ep.ranges {
		out = append(out, m)
	}
	return out
}

func portKey(m *PortMapping) string {
	b := make([]byte, 0, len(m.Proto)+48)
	b = append(append(b, m.Proto...), '/')
	if m.HostIP.IsValid() {
		b = m.HostIP.AppendTo(b)
	} else {
		b = append(b, m.HostIP.String()...)
	}
	b = strconv.AppendUint(append(b, '/'), uint64(m.Host.First), 10)
	return string(b)
}

func loadState(s ipam.Store) (*state, error) {
	st := &state{
		networks:  map[string]*Network{},
		endpoints: map[string]*Endpoint{},
		ports:     map[string]*PortMapping{},
		nextID:    1,
	}
	err := s.View(func(tx ipam.Tx) error {
		if err := tx.ForEach(bucketNetworks, func(k, v []byte) error {
			n := &Network{}
			st.networks[string(k)] = n
			return decode(bucketNetworks, k, v, n)
		}); err != nil {
			return err
		}
		if err := tx.ForEach(bucketEndpoints, func(k, v []byte) error {
			e := &Endpoint{}
			st.endpoints[string(k)] = e
			return decode(bucketEndpoints, k, v, e)
		}); err != nil {
			return err
		}
		if err := tx.ForEach(bucketPorts, func(k, v []byte) error {
			if !bytes.HasPrefix(k, []byte(groupPrefix)) {
				m := &PortMapping{}
				st.ports[string(k)] = m
				return decode(bucketPorts, k, v, m)
			}
			ms, err := decodeGroup(v)
			if err != nil {
				return fmt.Errorf("record %s/%q: %w", bucketPorts, k, err)
			}
			if len(k) != len(groupPrefix)+4 || len(ms) == 0 {
				return fmt.Errorf("record %s/%q: not a group of port mappings", bucketPorts, k)
			}
			for _, m := range ms {
				m.group = binary.BigEndian.Uint32(k[len(groupPrefix):])
				st.putPort(m)
			}
			return nil
		}); err != nil {
			return err
		}
		if v := tx.Get(bucketMeta, keyNextID); len(v) == 4 {
			st.nextID = binary.BigEndian.Uint32(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	return st, nil
}

func decode(bucket string, k, v []byte, into any) error {
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("record %s/%s: %w", bucket, k, err)
	}
	return nil
}

// testPanicBucket (PONTOON_TEST_PANIC_BUCKET) makes every write to that
// bucket panic inside its transaction, as bbolt does on a damaged file: the
// seam the panic-containment test injects through.
var testPanicBucket = os.Getenv("PONTOON_TEST_PANIC_BUCKET")

func put(tx ipam.Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return putBytes(tx, bucket, []byte(key), b)
}

func putBytes(tx ipam.Tx, bucket string, key, v []byte) error {
	if bucket == testPanicBucket {
		panic("injected by PONTOON_TEST_PANIC_BUCKET=" + bucket)
	}
	return tx.Put(bucket, key, v)
}

func putNextID(tx ipam.Tx, id uint32) error {
	return tx.Put(bucketMeta, keyNextID, binary.BigEndian.AppendUint32(nil, id))
}
