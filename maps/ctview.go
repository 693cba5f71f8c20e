package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/cilium/ebpf"
)

// TCPState names where a TCP flow is from the tcp_flags the datapath keeps
// (ct_value and snat_value), in the words of `conntrack -L` where one fits.
// The datapath only notes that a FIN went by, not which side's or whether
// it was answered: every closing state reads FIN_WAIT.
func TCPState(flags uint8) string {
	switch {
	case flags&CTTCPRst != 0:
		return "CLOSE"
	case flags&CTTCPFin != 0:
		return "FIN_WAIT"
	case flags&CTTCPEstablished != 0:
		return "ESTABLISHED"
	case flags&CTTCPSynAck != 0:
		return "SYN_RECV"
	case flags&CTTCPSyn != 0:
		return "SYN_SENT"
	}
	return "NONE"
}

// ProtoName names the protocols the tables hold, ICMP included, which
// Proto.String leaves as a number because bindings never carry it.
func ProtoName(p Proto) string {
	switch p {
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return p.String()
}

// State is TCPState for TCP flows and "" for the others.
func flowState(p Proto, tcpFlags uint8) string {
	if p != TCP {
		return ""
	}
	return TCPState(tcpFlags)
}

// Idle is how long ago the flow last saw a packet, at now (MonotonicNow).
func idleSince(now time.Duration, lastSeenNs uint64) time.Duration {
	return max(now-time.Duration(lastSeenNs), 0)
}

// CTFlow is one tracked translated connection, decoded for people and
// JSON: a client dialled a published address and port, and the datapath
// sent it on to a backend.
type CTFlow struct {
	Proto   string         `json:"proto"`
	State   string         `json:"state,omitempty"`
	Client  netip.AddrPort `json:"client"`
	Dialled netip.AddrPort `json:"dialled"`
	Backend netip.AddrPort `json:"backend"`
	// Table is ct for answered flows, ct_new for the rest.
	Table     string `json:"table"`
	BindingID uint32 `json:"binding_id"`
	// AgeSeconds is since the flow's first packet. AgeAtLeast says the
	// flow came over from a build that kept no start time: its age counts
	// from its last packet before the upgrade.
	AgeSeconds int64 `json:"age_seconds"`
	AgeAtLeast bool  `json:"age_at_least,omitempty"`
	// Idle is since the last packet.
	Idle time.Duration `json:"idle_ns"`
	// ExpiresIn is how long GC leaves the flow if it stays idle.
	ExpiresIn time.Duration `json:"expires_in_ns"`
}

// View decodes e, found in table, at now, by the lifetimes GC uses.
func (e CTEntry) View(table string, now time.Duration, l Lifetimes) CTFlow {
	idle, age := idleSince(now, e.LastSeenNs), idleSince(now, e.CreatedNs)
	return CTFlow{
		Proto: ProtoName(e.Proto), State: flowState(e.Proto, e.TCPFlags),
		Client: e.Client, Dialled: e.Dialled, Backend: e.Backend,
		Table: table, BindingID: e.BindingID,
		AgeSeconds: int64(age / time.Second), AgeAtLeast: e.AgeFromUpgrade,
		Idle: idle, ExpiresIn: max(l.of(e.Proto, e.TCPFlags)-idle, 0),
	}
}

// AgeString is the age as `1m23s`, with a ">=" in front when it is only a
// lower bound.
func (f CTFlow) AgeString() string {
	s := (time.Duration(f.AgeSeconds) * time.Second).String()
	if f.AgeAtLeast {
		s = ">=" + s
	}
	return s
}

func (f CTFlow) String() string {
	return fmt.Sprintf("%s %s client=%s dialled=%s backend=%s binding=%d table=%s age=%s idle=%s expires=%s",
		f.Proto, f.State, f.Client, f.Dialled, f.Backend, f.BindingID, f.Table, f.AgeString(), f.Idle.Round(time.Second), f.ExpiresIn.Round(time.Second))
}

// SNATView is one masqueraded flow, decoded: a container reached a server
// and left with the translated address and port. Its two map entries are
// shown as one; Half says when only one of them is there.
type SNATView struct {
	Proto      string         `json:"proto"`
	State      string         `json:"state,omitempty"`
	Container  netip.AddrPort `json:"container"`
	Translated netip.AddrPort `json:"translated"`
	Server     netip.AddrPort `json:"server"`
	// Half is "forward only" or "reply only" for a flow missing its
	// other entry (the datapath drops such packets: drop_snat_orphan),
	// "host" for the host's own echo identifier, kept from containers.
	Half      string        `json:"half,omitempty"`
	Idle      time.Duration `json:"idle_ns"`
	ExpiresIn time.Duration `json:"expires_in_ns"`
}

func (v SNATView) String() string {
	s := fmt.Sprintf("%s %s container=%s translated=%s server=%s idle=%s expires=%s",
		v.Proto, v.State, v.Container, v.Translated, v.Server, v.Idle.Round(time.Second), v.ExpiresIn.Round(time.Second))
	if v.Half != "" {
		s += " (" + v.Half + ")"
	}
	return s
}

// Flows decodes every masqueraded flow at now, by the lifetimes GC uses
// (so ExpiresIn matches what SNAT.GC does: the later stamp of the two
// halves and every TCP flag either saw).
func (s *SNAT) Flows(now time.Duration, l Lifetimes) ([]SNATView, error) {
	all, err := s.entries()
	if err != nil {
		return nil, err
	}
	var out []SNATView
	paired := map[CTKey]bool{}
	for k, v := range all {
		if v.Flags&SNATForward == 0 {
			continue
		}
		rk := reverseKey(k, v)
		last, flags, half := v.LastSeenNs, v.TCPFlags, "forward only"
		if rv, ok := all[rk]; ok {
			paired[rk] = true
			last, flags, half = max(last, rv.LastSeenNs), flags|rv.TCPFlags, ""
		}
		out = append(out, snatView(k.Proto, flags, last, now, l, SNATView{
			Container:  netip.AddrPortFrom(addrFromRaw(k.Family, k.Saddr), hostPort(k.Sport)),
			Translated: netip.AddrPortFrom(addrFromRaw(k.Family, v.Addr), hostPort(v.Port)),
			Server:     netip.AddrPortFrom(addrFromRaw(k.Family, k.Daddr), hostPort(k.Dport)),
			Half:       half,
		}))
	}
	for k, v := range all {
		if v.Flags&SNATReverse == 0 || paired[k] {
			continue
		}
		half := "reply only"
		if v.Flags&SNATHost != 0 {
			half = "host"
		}
		// A reply entry is keyed server -> translated and holds the
		// container's address and port.
		out = append(out, snatView(k.Proto, v.TCPFlags, v.LastSeenNs, now, l, SNATView{
			Container:  netip.AddrPortFrom(addrFromRaw(k.Family, v.Addr), hostPort(v.Port)),
			Translated: netip.AddrPortFrom(addrFromRaw(k.Family, k.Daddr), hostPort(k.Dport)),
			Server:     netip.AddrPortFrom(addrFromRaw(k.Family, k.Saddr), hostPort(k.Sport)),
			Half:       half,
		}))
	}
	return out, nil
}

func snatView(p Proto, tcpFlags uint8, lastSeenNs uint64, now time.Duration, l Lifetimes, v SNATView) SNATView {
	v.Proto, v.State = ProtoName(p), flowState(p, tcpFlags)
	v.Idle = idleSince(now, lastSeenNs)
	v.ExpiresIn = max(l.of(p, tcpFlags)-v.Idle, 0)
	return v
}

func (s *SNAT) entries() (map[CTKey]SNATValue, error) {
	all := map[CTKey]SNATValue{}
	var (
		k CTKey
		v SNATValue
	)
	it := s.m.Iterate()
	for it.Next(&k, &v) {
		all[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate snat: %w", err)
	}
	return all, nil
}

// Flush deletes every masqueraded flow, both halves, and returns how many
// entries went. Live flows lose their translation: their next packets
// take a new port, which breaks TCP connections, as `conntrack -F` does.
func (s *SNAT) Flush() (int, error) {
	return deleteWhere(s.m, func(CTKey, SNATValue) bool { return true })
}

// Flush deletes every tracked connection of the tables and returns how
// many went.
func (c *CT) Flush() (int, error) {
	return c.deleteWhere(func(CTKey, CTValue) bool { return true })
}

// Fill is how full a map is.
type Fill struct {
	Name     string
	Entries  int
	Capacity int
}

// Percent is the fill in percent of the capacity.
func (f Fill) Percent() float64 {
	if f.Capacity == 0 {
		return 0
	}
	return 100 * float64(f.Entries) / float64(f.Capacity)
}

// countBatch is how many entries CountEntries reads per system call:
// large enough that a full 131072-entry table takes a few dozen.
const countBatch = 4096

// CountEntries counts a hash map's entries. The kernel keeps no count user
// space can read, so this reads them all, countBatch per system call
// (one by one, a full ct took 1.6 s); entries added or deleted meanwhile
// may be counted or not.
func CountEntries(m *ebpf.Map) (int, error) {
	// Batch lookups want slices of elements of the map's sizes.
	raw := func(size uint32) any {
		t := reflect.SliceOf(reflect.ArrayOf(int(size), reflect.TypeFor[byte]()))
		return reflect.MakeSlice(t, countBatch, countBatch).Interface()
	}
	keys, values := raw(m.KeySize()), raw(m.ValueSize())
	var (
		cursor ebpf.MapBatchCursor
		total  int
	)
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		total += n
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return total, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return countOneByOne(m)
		case err != nil:
			return total, fmt.Errorf("count entries of %s: %w", m, err)
		}
	}
}

// countOneByOne is CountEntries for kernels without batch lookups.
func countOneByOne(m *ebpf.Map) (int, error) {
	var (
		n    int
		k, v []byte
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("count entries of %s: %w", m, err)
	}
	return n, nil
}
