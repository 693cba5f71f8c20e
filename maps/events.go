package maps

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
)

// ConfigEvents (CONFIG_F_EVENTS in bpf/lib/events.h) makes the datapath
// write events to the events ring buffer; the agent sets it only while a
// monitor listens.
const ConfigEvents = 1 << 7

// Event types and flow kinds of bpf/lib/events.h.
const (
	EventDrop    = 1
	EventFlowNew = 2
	EventFlowEnd = 3

	EventKindDNAT       = 1
	EventKindMasquerade = 2
)

// RawEvent mirrors struct event, one record of the events ring buffer.
// The ring has no BTF type to hold it against: TestEventsRing in bpf/
// decodes records the real programs wrote instead.
type RawEvent struct {
	TimeNs    uint64
	Type      uint8
	Kind      uint8
	Proto     uint8
	TCPFlags  uint8
	Reason    uint32
	Ifindex   uint32
	Len       uint32
	BindingID uint32
	Sport     uint16 // network byte order
	Dport     uint16
	XlatPort  uint16
	Family    uint8 // of the addresses: AF_INET, AF_INET6, or 0 (a drop of a packet that is not IP)
	Pad       uint8
	Saddr     [16]byte
	Daddr     [16]byte
	XlatAddr  [16]byte
}

// RawEventSize is sizeof(struct event), its trailing padding included.
const RawEventSize = int(unsafe.Sizeof(RawEvent{}))

// ParseRawEvent decodes one ring buffer record.
func ParseRawEvent(b []byte) (RawEvent, error) {
	var e RawEvent
	if len(b) < RawEventSize {
		return e, fmt.Errorf("event record of %d bytes, want %d: agent and datapath builds differ", len(b), RawEventSize)
	}
	err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &e)
	return e, err
}

// Event is a datapath event decoded for people and JSON. Drops name the
// packet's source and destination as it arrived. Flows to a published
// port (kind "published", IPv4 or IPv6) name the client (Source), the
// address it dialled (Destination) and the backend it reached
// (Translated). Masqueraded flows (kind "masquerade")
// name the container (Source), the server (Destination) and the source
// the flow left with (Translated).
type Event struct {
	// Time is when the datapath saw the packet, since boot (CLOCK_MONOTONIC).
	Time        time.Duration  `json:"time_since_boot"`
	Type        string         `json:"type"` // drop, flow_new, flow_end
	Kind        string         `json:"kind,omitempty"`
	Reason      string         `json:"reason,omitempty"`
	Proto       string         `json:"proto,omitempty"`
	Source      netip.AddrPort `json:"source,omitzero"`
	Destination netip.AddrPort `json:"destination,omitzero"`
	Translated  netip.AddrPort `json:"translated,omitzero"`
	BindingID   uint32         `json:"binding_id,omitempty"`
	State       string         `json:"state,omitempty"`
	// Ended says how a flow ended: "fin" or "rst" (seen by the datapath),
	// or "idle" (garbage collection took it: UDP, ICMP, or a TCP flow
	// that went quiet).
	Ended   string `json:"ended,omitempty"`
	Ifindex uint32 `json:"ifindex,omitempty"`
	Bytes   uint32 `json:"bytes,omitempty"`
}

// View decodes a raw event.
func (r RawEvent) View() Event {
	family := r.Family
	if family == 0 {
		family = familyInet // a drop of a packet that is not IP: its addresses are cleared below
	}
	addrPort := func(raw [16]byte, port uint16) netip.AddrPort {
		return netip.AddrPortFrom(addrFromRaw(family, raw), hostPort(port))
	}
	e := Event{
		Time:        time.Duration(r.TimeNs),
		Source:      addrPort(r.Saddr, r.Sport),
		Destination: addrPort(r.Daddr, r.Dport),
		BindingID:   r.BindingID,
	}
	if r.Proto != 0 {
		e.Proto = ProtoName(Proto(r.Proto))
	}
	switch r.Type {
	case EventDrop:
		e.Type = "drop"
		if r.Family == 0 {
			e.Source, e.Destination = netip.AddrPort{}, netip.AddrPort{} // not IP
		}
		e.Reason = fmt.Sprintf("stat_%d", r.Reason)
		if int(r.Reason) < len(StatNames) {
			e.Reason = StatNames[r.Reason]
		}
		e.Ifindex, e.Bytes = r.Ifindex, r.Len
		return e
	case EventFlowNew:
		e.Type = "flow_new"
	case EventFlowEnd:
		e.Type = "flow_end"
		e.Ended = "fin"
		if r.TCPFlags&CTTCPRst != 0 {
			e.Ended = "rst"
		}
	default:
		e.Type = fmt.Sprintf("type_%d", r.Type)
	}
	switch r.Kind {
	case EventKindDNAT:
		e.Kind = "published"
	case EventKindMasquerade:
		e.Kind = "masquerade"
	}
	e.Translated = addrPort(r.XlatAddr, r.XlatPort)
	e.State = flowState(Proto(r.Proto), r.TCPFlags)
	return e
}

// IdleEnd is the end of a published flow garbage collection took: it
// was idle past its lifetime.
func (e CTEntry) IdleEnd(now time.Duration) Event {
	return Event{
		Time: now, Type: "flow_end", Kind: "published", Proto: ProtoName(e.Proto),
		Source: e.Client, Destination: e.Dialled, Translated: e.Backend, BindingID: e.BindingID,
		State: flowState(e.Proto, e.TCPFlags), Ended: "idle",
	}
}

// IdleEnd is the end of a masqueraded flow garbage collection took: it
// was idle past its lifetime.
func (f SNATFlow) IdleEnd(now time.Duration) Event {
	k := f.Key
	return Event{
		Time: now, Type: "flow_end", Kind: "masquerade", Proto: ProtoName(k.Proto),
		Source:      netip.AddrPortFrom(addrFromRaw(k.Family, k.Saddr), hostPort(k.Sport)),
		Destination: netip.AddrPortFrom(addrFromRaw(k.Family, k.Daddr), hostPort(k.Dport)),
		Translated:  netip.AddrPortFrom(addrFromRaw(k.Family, f.Value.Addr), hostPort(f.Value.Port)),
		State:       flowState(k.Proto, f.Value.TCPFlags), Ended: "idle",
	}
}

// Addrs are the addresses the event names, for filtering by endpoint.
func (e Event) Addrs() []netip.Addr {
	return []netip.Addr{e.Source.Addr(), e.Destination.Addr(), e.Translated.Addr()}
}

// String is one readable line, as `pontoon monitor` prints it.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s ", e.Type)
	switch e.Type {
	case "drop":
		if !e.Source.IsValid() {
			fmt.Fprintf(&b, "%s a packet that is not IP, ifindex %d, %d bytes", e.Reason, e.Ifindex, e.Bytes)
			break
		}
		fmt.Fprintf(&b, "%s %s %s -> %s ifindex %d, %d bytes", e.Reason, orAny(e.Proto), e.Source, e.Destination, e.Ifindex, e.Bytes)
	default:
		fmt.Fprintf(&b, "%s %s %s -> %s", e.Kind, e.Proto, e.Source, e.Destination)
		if e.Kind == "masquerade" {
			fmt.Fprintf(&b, " as %s", e.Translated)
		} else {
			fmt.Fprintf(&b, " to %s binding %d", e.Translated, e.BindingID)
		}
		if e.State != "" {
			fmt.Fprintf(&b, " %s", e.State)
		}
		if e.Ended != "" {
			fmt.Fprintf(&b, " (%s)", e.Ended)
		}
	}
	return b.String()
}

func orAny(proto string) string {
	if proto == "" {
		return "ip"
	}
	return proto
}

// EventLosses are the events the datapath did not write: held back by
// the per-CPU budget, or with the ring full (the agent reading too slowly).
type EventLosses struct {
	Suppressed uint64 `json:"suppressed"`
	RingFull   uint64 `json:"ring_full"`
}

// eventBudget mirrors struct event_budget.
type eventBudget struct {
	Second     uint64
	Used       uint32
	Pad        uint32
	Suppressed uint64
	RingFull   uint64
}

// ReadEventLosses sums the event_budget map over every CPU.
func ReadEventLosses(m *ebpf.Map) (EventLosses, error) {
	var perCPU []eventBudget
	if err := m.Lookup(uint32(0), &perCPU); err != nil {
		return EventLosses{}, fmt.Errorf("read event budget: %w", err)
	}
	var l EventLosses
	for _, b := range perCPU {
		l.Suppressed += b.Suppressed
		l.RingFull += b.RingFull
	}
	return l, nil
}
