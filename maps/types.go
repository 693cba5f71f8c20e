package maps

import (
	"fmt"
	"net/netip"
	"time"
)

// BindingKey mirrors struct binding_key.
type BindingKey struct {
	Family uint8
	Proto  Proto
	Port   uint16 // network byte order
	Addr   [16]byte
}

// BindingValue mirrors struct binding_value.
type BindingValue struct {
	BackendAddr [16]byte
	BackendPort uint16 // network byte order
	Flags       uint16
	ID          uint32
}

// Binding flags, as in bpf/lib/types.h.
const (
	bindingLocalOnly = 1 << 0
	bindingAllowlist = 1 << 1
)

// HostAddr is the host address the key binds.
func (k BindingKey) HostAddr() netip.Addr { return addrFromRaw(k.Family, k.Addr) }

func (k BindingKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(addrFromRaw(k.Family, k.Addr), hostPort(k.Port)), k.Proto)
}

func (v BindingValue) String() string {
	return fmt.Sprintf("backend=%s flags=%#x id=%d", netip.AddrPortFrom(addrFromRaw(familyOf(v.BackendAddr), v.BackendAddr), hostPort(v.BackendPort)), v.Flags, v.ID)
}

// familyOf guesses a value's family, which values do not store: IPv4
// addresses leave the last twelve bytes zero, real IPv6 ones practically
// never do. Only String uses it; typed access goes through the key.
func familyOf(raw [16]byte) uint8 {
	for _, b := range raw[4:] {
		if b != 0 {
			return familyInet6
		}
	}
	return familyInet
}

// CTKey mirrors struct ct_key.
type CTKey struct {
	Family uint8
	Proto  Proto
	Sport  uint16 // network byte order
	Dport  uint16 // network byte order
	Pad    uint16
	Saddr  [16]byte
	Daddr  [16]byte
}

// TCPSide mirrors struct tcp_side: what one side of a TCP connection last
// acknowledged and advertised.
type TCPSide struct {
	Ack    uint32 // host byte order
	Window uint16 // unscaled
	Wscale uint8
	Seen   uint8 // TCPSide* flags
}

// TCPSide flags, as in bpf/lib/types.h.
const (
	TCPSideAcked     = 1 << 0
	TCPSideSynWindow = 1 << 1 // the window came with a SYN: never scaled
	TCPSideWscale    = 1 << 2 // the side offered window scaling
)

// CTValue mirrors struct ct_value.
type CTValue struct {
	NatAddr    [16]byte
	NatPort    uint16 // network byte order
	Flags      uint8
	TCPFlags   uint8
	BindingID  uint32
	LastSeenNs uint64     // CLOCK_MONOTONIC
	TCP        [2]TCPSide // the client's side, then the backend's
	CreatedNs  uint64     // CLOCK_MONOTONIC, the flow's first packet
}

// CT flags, as in bpf/lib/types.h.
const (
	CTDNATReply = 1 << 0
	// CTAgeFromUpgrade marks a flow carried over from a build whose
	// ct_value had no created time: CreatedNs is its last packet before
	// the upgrade, so its age is a lower bound.
	CTAgeFromUpgrade = 1 << 2

	CTTCPSyn         = 1 << 0
	CTTCPEstablished = 1 << 1 // the three-way handshake completed
	CTTCPFin         = 1 << 2
	CTTCPRst         = 1 << 3 // an RST inside the window
	CTTCPSynAck      = 1 << 4
)

// FragKey mirrors struct frag_key.
type FragKey struct {
	Family uint8
	Proto  Proto
	Pad    uint16
	ID     uint32
	Saddr  [16]byte
	Daddr  [16]byte
}

// FragValue mirrors struct frag_value: the ports a datagram's first
// fragment carried.
type FragValue struct {
	Sport uint16 // network byte order
	Dport uint16 // network byte order
}

func (k CTKey) String() string {
	return fmt.Sprintf("%s %s -> %s", k.Proto,
		netip.AddrPortFrom(addrFromRaw(k.Family, k.Saddr), hostPort(k.Sport)),
		netip.AddrPortFrom(addrFromRaw(k.Family, k.Daddr), hostPort(k.Dport)))
}

func (v CTValue) String() string {
	return fmt.Sprintf("nat=%s flags=%#x tcp=%#x binding=%d last_seen=%s created=%s", netip.AddrPortFrom(addrFromRaw(familyOf(v.NatAddr), v.NatAddr), hostPort(v.NatPort)), v.Flags, v.TCPFlags, v.BindingID, time.Duration(v.LastSeenNs), time.Duration(v.CreatedNs))
}

// HostAddrKey mirrors struct hostaddr_key.
type HostAddrKey struct {
	Family uint8
	Pad    [3]uint8
	Addr   [16]byte
}

// HostAddrValue mirrors struct hostaddr_value.
type HostAddrValue struct {
	Ifindex uint32
}

func (k HostAddrKey) String() string { return addrFromRaw(k.Family, k.Addr).String() }

// SockRevKey mirrors struct sockrev_key.
type SockRevKey struct {
	Cookie uint64
	Addr   [16]byte
	Port   uint16 // network byte order
	Family uint8
	Pad    uint8
	Pad2   uint32
}

// SockRevValue mirrors struct sockrev_value.
type SockRevValue struct {
	Addr [16]byte
	Port uint16 // network byte order
	Pad  uint16
}

func (k SockRevKey) String() string {
	return fmt.Sprintf("socket %d backend %s", k.Cookie, netip.AddrPortFrom(addrFromRaw(k.Family, k.Addr), hostPort(k.Port)))
}

// ConfigValue mirrors struct config.
type ConfigValue struct {
	HostNetnsCookie uint64
	Flags           uint32
	SnatPortMin     uint16 // host byte order; 0 keeps the datapath's default
	SnatPortMax     uint16
}

// ConfigFIBRedirect makes the tc programs forward translated packets with
// bpf_fib_lookup and bpf_redirect_neigh instead of the stack's forward path.
const ConfigFIBRedirect = 1 << 0

// NetworkKey mirrors struct network_key (an LPM trie key).
type NetworkKey struct {
	Prefixlen uint32
	Family    uint8
	Pad       [3]uint8
	Addr      [16]byte
}

// NetworkValue mirrors struct network_value.
type NetworkValue struct {
	Gateway [16]byte
	ID      uint32
	Flags   uint32
}

// Network flags, as in bpf/lib/types.h.
const (
	NetworkMasquerade = 1 << 0
	NetworkNoICC      = 1 << 1
	NetworkRouted     = 1 << 2
	NetworkNAT66      = 1 << 3
)

// NetnsKey mirrors struct netns_key: one network a namespace is on.
type NetnsKey struct {
	Cookie    uint64
	NetworkID uint32
	Pad       uint32
}

// NetnsValue mirrors struct netns_value.
type NetnsValue struct {
	Flags uint32
}

// EndpointKey mirrors struct endpoint_key.
type EndpointKey struct {
	Family uint8
	Pad    [3]uint8
	Addr   [16]byte
}

// EndpointValue mirrors struct endpoint_value.
type EndpointValue struct {
	Ifindex   uint32
	NetworkID uint32
	// MAC is the container's eth0 address; the endpoint may send from no
	// other. All zero leaves it unchecked.
	MAC [6]byte
	// Flags are ENDPOINT_F_*: EndpointNoICC.
	Flags uint16
}

// EndpointNoICC is ENDPOINT_F_NO_ICC: the endpoint's network has icc=false.
const EndpointNoICC = 1 << 0

// UplinkValue mirrors struct uplink_value.
type UplinkValue struct {
	Addr  [16]byte
	Flags uint32
}

// SNATValue mirrors struct snat_value.
type SNATValue struct {
	Addr       [16]byte
	Port       uint16 // network byte order
	Flags      uint8
	TCPFlags   uint8
	Pad        uint32
	LastSeenNs uint64
	TCP        TCPSide // the side sending in this entry's direction
}

// SNAT flags, as in bpf/lib/types.h.
const (
	SNATForward = 1 << 0
	SNATReverse = 1 << 1
	SNATHost    = 1 << 2 // with SNATReverse: the host's own ping identifier
)

// Counter mirrors struct counter.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
