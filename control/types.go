package control

import (
	"net/netip"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// These are the API's JSON bodies and, for Network, Endpoint and
// PortMapping, also the records the agent persists.

// Network is a bridge and its subnets.
type Network struct {
	Name string `json:"name"`
	// Subnet and Gateway are the first subnet's, kept for older readers;
	// Subnets has them all.
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	// Subnets is every subnet with its gateway, range and auxiliary
	// addresses, the first being Subnet; records written before a network
	// could have several leave it out (see subnets).
	Subnets    []NetworkSubnet `json:"subnets,omitempty"`
	Bridge     string          `json:"bridge"`
	MTU        int             `json:"mtu"`
	ICC        bool            `json:"icc"`
	Masquerade bool            `json:"masquerade"`
	// Masquerade6: the IPv6 subnet's outgoing traffic leaves with the
	// uplink's IPv6 address (NAT66). Without it, and with Masquerade, that
	// traffic does not leave the host. Records from before it lack it.
	Masquerade6 bool `json:"masquerade6,omitempty"`
	// Routed networks are reachable from outside by their containers'
	// own addresses (Docker's routed gateway mode), without masquerade.
	Routed bool `json:"routed"`
	// IPv6: the network has an IPv6 subnet, and its endpoints get an
	// IPv6 address besides their IPv4 one (Docker's EnableIPv6).
	IPv6 bool `json:"ipv6,omitempty"`
	// Adopted bridges existed before the network and outlive it.
	Adopted bool `json:"adopted"`
	// AddedGateway: the agent put the gateway address on an adopted
	// bridge, so removing the network takes it off again.
	AddedGateway bool `json:"added_gateway,omitempty"`
	// Owner is who made the network: "docker" (its remote driver), or
	// empty for the CLI. `pontoon network rm` leaves Docker's to Docker.
	Owner string `json:"owner,omitempty"`
}

// NetworkSubnet is one address block of a network, Docker's IPAM config.
type NetworkSubnet struct {
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	// IPRange is where dynamic addresses come from; static ones may lie
	// anywhere in Subnet.
	IPRange netip.Prefix `json:"ip_range,omitzero"`
	// AuxAddresses are reserved by name and never handed out.
	AuxAddresses map[string]netip.Addr `json:"aux_addresses,omitempty"`
}

// subnets is every subnet of n, also of a record from before Subnets.
func (n *Network) subnets() []NetworkSubnet {
	if len(n.Subnets) > 0 {
		return n.Subnets
	}
	return []NetworkSubnet{{Subnet: n.Subnet, Gateway: n.Gateway}}
}

// subnetOf is the subnet of n holding a.
func (n *Network) subnetOf(a netip.Addr) (NetworkSubnet, bool) {
	for _, s := range n.subnets() {
		if s.Subnet.Contains(a) {
			return s, true
		}
	}
	return NetworkSubnet{}, false
}

// NetworkInfo is what inspect shows.
type NetworkInfo struct {
	Network
	Endpoints []string `json:"endpoints"`
	Notes     []string `json:"notes,omitempty"`
}

// NetworkCreate asks for a network; empty fields take defaults.
type NetworkCreate struct {
	Name string `json:"name"`
	// Subnet and Gateway are a single subnet's; Subnets and Gateways
	// add to them (Docker's repeatable --subnet and --gateway). Each
	// gateway, range and auxiliary address belongs to the subnet holding
	// it.
	Subnet   string   `json:"subnet,omitempty"`
	Gateway  string   `json:"gateway,omitempty"`
	Subnets  []string `json:"subnets,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
	IPRanges []string `json:"ip_ranges,omitempty"`
	// AuxAddresses are name=IP.
	AuxAddresses []string `json:"aux_addresses,omitempty"`
	Bridge       string   `json:"bridge,omitempty"`
	MTU          int      `json:"mtu,omitempty"`
	ICC          *bool    `json:"icc,omitempty"`
	Masquerade   *bool    `json:"masquerade,omitempty"`
	// Routed implies no masquerade; asking for both is refused.
	Routed bool `json:"routed,omitempty"`
	// IPv6 gives the network an IPv6 subnet too: Subnet6, or a unique
	// local /64 picked like an IPv4 subnet. An IPv6 subnet in Subnet6 or
	// Subnets implies it; an IPv4 subnet is picked when none is given.
	IPv6     bool   `json:"ipv6,omitempty"`
	Subnet6  string `json:"subnet6,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	// Masquerade6 asks for IPv6 masquerade (NAT66, off by default as in
	// Docker); it needs an IPv6 subnet and excludes Routed. Masquerade
	// stays IPv4's: each family is asked for on its own.
	Masquerade6 bool `json:"masquerade6,omitempty"`
	// Force accepts a subnet overlapping a route of the host that is not
	// an interface's own subnet.
	Force bool `json:"force,omitempty"`
}

// Endpoint is a veth pair joining a network namespace to a bridge.
type Endpoint struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Netns   string `json:"netns"`
	// NetnsInode tells "the namespace is gone" from "another namespace
	// now sits at the same path".
	NetnsInode uint64     `json:"netns_inode"`
	HostIf     string     `json:"host_interface"`
	IP         netip.Addr `json:"ip"`
	PrefixLen  int        `json:"prefix_len"`
	Gateway    netip.Addr `json:"gateway"`
	// IPv6, PrefixLen6 and Gateway6 are set on a dual-stack network's
	// endpoints; IP stays the IPv4 address.
	IPv6       netip.Addr `json:"ipv6,omitzero"`
	PrefixLen6 int        `json:"prefix_len6,omitempty"`
	Gateway6   netip.Addr `json:"gateway6,omitzero"`
	MAC        string     `json:"mac"`
	// HostMAC is kept so a recreated pair looks the same to the bridge.
	HostMAC string `json:"host_mac"`
	MTU     int    `json:"mtu"`
	// IfName is the interface inside the namespace; records from before
	// a namespace could hold several endpoints leave it out: eth0.
	IfName string `json:"ifname,omitempty"`
	// NoDefaultRoute: another endpoint of the namespace holds its one
	// default route. Negative, so older records, each alone in its
	// namespace, read as holding it.
	NoDefaultRoute bool `json:"no_default_route,omitempty"`
	// Owner is who made the endpoint: "cni", "docker", or empty for the
	// CLI; ContainerID is that engine's id of the container, and
	// ContainerName its name where known (Docker's).
	Owner         string `json:"owner,omitempty"`
	ContainerID   string `json:"container_id,omitempty"`
	ContainerName string `json:"container_name,omitempty"`
	// Adopted endpoints are a veth pair another plugin made (the CNI
	// bridge plugin, with pontoon-cni chained after it): the agent records
	// them, attaches its program and publishes ports to them, but never
	// creates, recreates or deletes the pair, nor touches the namespace's
	// routes.
	Adopted bool `json:"adopted,omitempty"`
}

// addrs are the endpoint's addresses: IPv4, then IPv6 when it has one.
func (e *Endpoint) addrs() []netip.Addr {
	if e.IPv6.IsValid() {
		return []netip.Addr{e.IP, e.IPv6}
	}
	return []netip.Addr{e.IP}
}

// ifName is the endpoint's interface inside its namespace.
func (e *Endpoint) ifName() string {
	if e.IfName == "" {
		return containerIf
	}
	return e.IfName
}

// waiting: a Docker endpoint whose namespace the agent has not seen
// yet (engineJoin).
func (e *Endpoint) waiting() bool { return e.NetnsInode == 0 && e.Owner == dockerOwner }

// EndpointAttach asks for an endpoint; exactly one of Netns and PID.
type EndpointAttach struct {
	Network string `json:"network"`
	Name    string `json:"name"`
	Netns   string `json:"netns,omitempty"`
	PID     int    `json:"pid,omitempty"`
	IP      string `json:"ip,omitempty"`
	// IP6 is a static IPv6 address on a dual-stack network.
	IP6 string `json:"ip6,omitempty"`
	MAC string `json:"mac,omitempty"`
	// IfName names the interface inside the namespace; by default the
	// first free of eth0, eth1, ...
	IfName string `json:"ifname,omitempty"`
	// DefaultRoute moves the namespace's default route to this endpoint;
	// the first endpoint of a namespace takes it anyway.
	DefaultRoute bool   `json:"default_route,omitempty"`
	Owner        string `json:"owner,omitempty"`
	ContainerID  string `json:"container_id,omitempty"`
	// Adopt records the interface IfName already in the namespace, with
	// the address IP on it, instead of making a veth pair: its host side
	// must be a veth on the network's bridge.
	Adopt bool `json:"adopt,omitempty"`
}

// PortMapping is host ports published to an endpoint's ports, one per
// spec; a range shares one binding id.
type PortMapping struct {
	Endpoint  string         `json:"endpoint"`
	Proto     string         `json:"proto"`
	HostIP    netip.Addr     `json:"host_ip"`
	Host      ipam.PortRange `json:"host_ports"`
	Container ipam.PortRange `json:"container_ports"`
	// Backend is the container's address of HostIP's family.
	Backend netip.Addr `json:"backend"`
	// Backend6 is set on a wildcard mapping (no host IP given) of a
	// dual-stack endpoint: [::] is published to it too, as Docker does,
	// under the same binding id. HostIP is then 0.0.0.0.
	Backend6 netip.Addr `json:"backend6,omitzero"`
	ID       uint32     `json:"binding_id"`
	// AllowFrom limits the clients from outside to these sources (port
	// publish --allow-from); empty: any.
	AllowFrom []netip.Prefix `json:"allow_from,omitempty"`
	// Traffic is what the mapping carried, from the datapath's counters;
	// set in listings only, never stored.
	Traffic *Traffic `json:"traffic,omitempty"`
	// ContainerID and ContainerName are the endpoint's container, for
	// endpoints an engine made; set in listings only, never stored.
	ContainerID   string `json:"container_id,omitempty"`
	ContainerName string `json:"container_name,omitempty"`
	// group is the id of the group record the mapping is saved in, 0 for
	// a record of its own (see saveGroups).
	group uint32
}

// Traffic is a mapping's counters: in towards its container, out its
// replies, in wire packets and bytes. Local clients the socket hooks
// connect straight to the container send no packet through a
// translation, so they are not counted here.
type Traffic struct {
	PacketsIn  uint64 `json:"packets_in"`
	BytesIn    uint64 `json:"bytes_in"`
	PacketsOut uint64 `json:"packets_out"`
	BytesOut   uint64 `json:"bytes_out"`
}

// PublishRequest publishes every spec of one endpoint, all or nothing.
type PublishRequest struct {
	Endpoint string   `json:"endpoint"`
	Specs    []string `json:"specs"`
	// AllowFrom are IPv4 and IPv6 prefixes (CIDR) every mapping of the
	// request accepts clients from; empty: any.
	AllowFrom []string `json:"allow_from,omitempty"`
}

// PublishedPorts is the compact reply to a publish request sent as
// POST /v1/ports?reply=ports, what a client that made the request needs
// to know of its mappings: the request's spec i became mapping i, with
// binding id FirstID+i (IDs[i] when IDs is there: ids skip those whose
// traffic counters' slot a live mapping holds), host ports HostPorts[i] onwards (as many as spec
// i's container ports), and the endpoint's addresses as its backends.
// Everything else is in the request. The full reply of 60,000 mappings
// is 11 MB of JSON whose decoding was most of a client's publish; this
// one is 6 bytes a mapping.
type PublishedPorts struct {
	Endpoint     string     `json:"endpoint"`
	FirstID      uint32     `json:"first_id"`
	EndpointIP   netip.Addr `json:"endpoint_ip"`
	EndpointIPv6 netip.Addr `json:"endpoint_ipv6,omitzero"`
	HostPorts    []uint16   `json:"host_ports"`
	IDs          []uint32   `json:"ids,omitempty"`
}

// UnpublishRequest removes the mappings of an endpoint matching Spec.
type UnpublishRequest struct {
	Endpoint string `json:"endpoint"`
	Spec     string `json:"spec"`
}

// Uplink is an interface the uplink programs are attached to.
type Uplink struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// XDP is how the XDP program runs there: native, generic or off.
	XDP string `json:"xdp"`
	// Addr is what masqueraded flows leave with; without one they are
	// dropped there.
	Addr netip.Addr `json:"address,omitzero"`
	// Addr6 is what NAT66 flows leave with; without one they are dropped.
	Addr6 netip.Addr `json:"address6,omitzero"`
	// Warning is what the agent's doing costs the uplink and how to
	// avoid it: IPv6 forwarding ignores its router advertisements.
	Warning string `json:"warning,omitempty"`
}

// Status describes the agent and the datapath it runs.
type Status struct {
	PID int `json:"pid"`
	// Health is "ok", or "unhealthy: why; what to do".
	Health    string `json:"health"`
	StateFile string `json:"state_file"`
	// StateBackup is the last good copy of the state file.
	StateBackup string `json:"state_backup"`
	Socket      string `json:"socket"`
	PinDir      string `json:"pin_dir"`
	Cgroup      string `json:"cgroup"`
	TCMode      string `json:"tc_mode"`
	// KernelFeatures are the features beyond Linux 5.10 the datapath
	// probed at load: which it uses, and what it does without the others.
	KernelFeatures []loader.Feature        `json:"kernel_features"`
	Uplinks        []Uplink                `json:"uplinks"`
	Attachments    []loader.Attachment     `json:"attachments"`
	Networks       int                     `json:"networks"`
	Endpoints      int                     `json:"endpoints"`
	Mappings       int                     `json:"port_mappings"`
	Bindings       int                     `json:"bindings"`
	CTEntries      int                     `json:"ct_entries"`
	CTNew          int                     `json:"ct_new_entries"`
	HostAddrs      int                     `json:"host_addresses"`
	DynamicPorts   string                  `json:"dynamic_ports"`
	SNATPorts      string                  `json:"snat_ports"`
	Counters       map[string]maps.Counter `json:"counters"`
	// Degraded names each part the agent could not restore, and why.
	Degraded []string `json:"degraded,omitempty"`
}

// apiError is every error body.
type apiError struct {
	Error string `json:"error"`
}
