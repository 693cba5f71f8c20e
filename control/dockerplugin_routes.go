package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The request and response bodies, as libnetwork's remote driver and
// remote IPAM send and read them (field names are theirs).

type dockerIPAMData struct {
	AddressSpace string
	Pool         string
	Gateway      string
	AuxAddresses map[string]string
}

type dockerNetworkCreate struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []dockerIPAMData
	IPv6Data  []dockerIPAMData
}

type dockerNetworkRef struct {
	NetworkID string
}

type dockerInterface struct {
	Address     string
	AddressIPv6 string
	MacAddress  string
}

type dockerEndpointCreate struct {
	NetworkID  string
	EndpointID string
	Interface  *dockerInterface
	Options    map[string]any
}

type dockerEndpointRef struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type dockerPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type dockerAddressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

// dockerSCTP is SCTP's protocol number in com.docker.network.portmap.
const dockerSCTP = 132

// dockerPortBinding is one entry of com.docker.network.portmap.
type dockerPortBinding struct {
	Proto       int
	IP          string
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}

func (p *dockerPlugin) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, h http.HandlerFunc) { mux.HandleFunc("POST "+path, h) }
	none := func(struct{}) (any, error) { return nil, nil }

	handle("/Plugin.Activate", dockerHandler(p, func(struct{}) (any, error) {
		return map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}}, nil
	}))

	handle("/NetworkDriver.GetCapabilities", dockerHandler(p, func(struct{}) (any, error) {
		return map[string]string{"Scope": "local", "ConnectivityScope": "local"}, nil
	}))
	handle("/NetworkDriver.CreateNetwork", dockerHandler(p, p.createNetwork))
	handle("/NetworkDriver.DeleteNetwork", dockerHandler(p, p.deleteNetwork))
	handle("/NetworkDriver.CreateEndpoint", dockerHandler(p, p.createEndpoint))
	handle("/NetworkDriver.DeleteEndpoint", dockerHandler(p, p.deleteEndpoint))
	handle("/NetworkDriver.EndpointOperInfo", dockerHandler(p, func(dockerEndpointRef) (any, error) {
		return map[string]any{"Value": map[string]any{}}, nil
	}))
	handle("/NetworkDriver.Join", dockerHandler(p, p.join))
	handle("/NetworkDriver.Leave", dockerHandler(p, p.leave))
	handle("/NetworkDriver.ProgramExternalConnectivity", dockerHandler(p, p.programPorts))
	handle("/NetworkDriver.RevokeExternalConnectivity", dockerHandler(p, p.revokePorts))
	handle("/NetworkDriver.DiscoverNew", dockerHandler(p, none))
	handle("/NetworkDriver.DiscoverDelete", dockerHandler(p, none))

	handle("/IpamDriver.GetCapabilities", dockerHandler(p, func(struct{}) (any, error) {
		// The state file remembers every address: dockerd need not
		// replay its requests after a restart.
		return map[string]bool{"RequiresMACAddress": false, "RequiresRequestReplay": false}, nil
	}))
	handle("/IpamDriver.GetDefaultAddressSpaces", dockerHandler(p, func(struct{}) (any, error) {
		return map[string]string{"LocalDefaultAddressSpace": "pontoon", "GlobalDefaultAddressSpace": "pontoon-global"}, nil
	}))
	handle("/IpamDriver.RequestPool", dockerHandler(p, p.requestPool))
	handle("/IpamDriver.ReleasePool", dockerHandler(p, func(req dockerAddressRequest) (any, error) {
		if pool, err := netip.ParsePrefix(req.PoolID); err == nil {
			p.mu.Lock()
			delete(p.subPools, pool)
			p.mu.Unlock()
			p.a.releasePool(pool)
		}
		return nil, nil
	}))
	handle("/IpamDriver.RequestAddress", dockerHandler(p, p.requestAddress))
	handle("/IpamDriver.ReleaseAddress", dockerHandler(p, p.releaseAddress))

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, fmt.Errorf("pontoon does not implement %s %s; this dockerd is newer than the plugin knows", r.Method, r.URL.Path))
	})
	return mux
}

// requestPool hands out the pool asked for, or picks a free private one as
// `pontoon network create` does. The network's creation checks it against
// the host and the other networks.
func (p *dockerPlugin) requestPool(req dockerPoolRequest) (any, error) {
	var pool netip.Prefix
	if req.Pool != "" {
		pp, err := netip.ParsePrefix(req.Pool)
		switch {
		case err != nil || pp.Addr().Zone() != "":
			return nil, fmt.Errorf("pontoon: subnet %q: give a subnet such as 10.90.0.0/24 or fd00:90::/64", req.Pool)
		case req.V6 && !pp.Addr().Is6(), !req.V6 && !pp.Addr().Is4():
			return nil, fmt.Errorf("pontoon: subnet %s is of the other family than dockerd asked for; give IPv4 and IPv6 subnets each with their own --subnet", req.Pool)
		}
		pool = pp.Masked()
	} else {
		if req.SubPool != "" {
			return nil, fmt.Errorf("pontoon: --ip-range %s needs the subnet it lies in; give --subnet", req.SubPool)
		}
		picked, err := p.a.pickDockerPool(req.V6)
		if err != nil {
			return nil, err
		}
		pool = picked
	}
	if req.SubPool != "" {
		sub, err := netip.ParsePrefix(req.SubPool)
		if err != nil || !pool.Contains(sub.Addr()) || sub.Bits() < pool.Bits() {
			return nil, fmt.Errorf("pontoon: --ip-range %q: give a range inside the subnet %s", req.SubPool, pool)
		}
		p.mu.Lock()
		p.subPools[pool] = sub.Masked()
		p.mu.Unlock()
	}
	return map[string]any{"PoolID": pool.String(), "Pool": pool.String(), "Data": map[string]string{}}, nil
}

// requestAddress: a network's gateway (asked for before the network
// exists) is the one given or the pool's first address; an endpoint's
// address is held in the network's ipam until Join attaches it.
func (p *dockerPlugin) requestAddress(req dockerAddressRequest) (any, error) {
	pool, err := netip.ParsePrefix(req.PoolID)
	if err != nil {
		return nil, fmt.Errorf("pontoon: unknown pool %q; recreate the network", req.PoolID)
	}
	var static netip.Addr
	if req.Address != "" {
		if static, err = netip.ParseAddr(req.Address); err != nil || !pool.Contains(static) {
			return nil, fmt.Errorf("pontoon: address %q: give one inside %s", req.Address, pool)
		}
	}
	network, ok := p.a.networkWithSubnet(pool)
	switch {
	case req.Options[dockerGatewayReqKey] == dockerGatewayReqType:
		if !static.IsValid() {
			static = pool.Addr().Next()
		}
		return map[string]any{"Address": netip.PrefixFrom(static, pool.Bits()).String()}, nil
	case !ok && static.IsValid():
		// An --aux-address, asked for before the network exists; the
		// network's record reserves it.
		return map[string]any{"Address": netip.PrefixFrom(static, pool.Bits()).String()}, nil
	case !ok:
		return nil, fmt.Errorf("pontoon: no network has the subnet %s; recreate the network", pool)
	}
	family := 4
	if pool.Addr().Is6() {
		family = 6
	}
	addr, err := p.a.reserveAddress(network, family, static)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Address": addr.String()}, nil
}

func (p *dockerPlugin) releaseAddress(req dockerAddressRequest) (any, error) {
	pool, err1 := netip.ParsePrefix(req.PoolID)
	ip, err2 := netip.ParseAddr(req.Address)
	if err1 != nil || err2 != nil {
		return nil, nil
	}
	if network, ok := p.a.networkWithSubnet(pool); ok {
		p.a.releaseReserved(network, ip)
	}
	return nil, nil
}

// createNetwork makes the Pontoon network of a Docker network. -o options
// are Pontoon's (icc, masquerade, mtu, bridge) or the bridge driver's
// names for them; --internal means no masquerade. --ipv6 makes it dual
// stack: containers reach the host, each other and published ports over
// IPv6, and the LAN over IPv6 with -o routed=true.
func (p *dockerPlugin) createNetwork(req dockerNetworkCreate) (any, error) {
	if len(req.IPv4Data) == 0 {
		return nil, errors.New("pontoon: no IPv4 pool; give --ipam-driver pontoon (or --subnet)")
	}
	nc := NetworkCreate{Name: dockerNetworkName(req.NetworkID), IPv6: len(req.IPv6Data) > 0}
	for _, d := range slices.Concat(req.IPv4Data, req.IPv6Data) {
		pool, err := netip.ParsePrefix(d.Pool)
		if err != nil {
			return nil, fmt.Errorf("pontoon: pool %q: not a subnet", d.Pool)
		}
		nc.Subnets = append(nc.Subnets, pool.Masked().String())
		if gw, err := netip.ParsePrefix(d.Gateway); err == nil {
			nc.Gateways = append(nc.Gateways, gw.Addr().String())
		}
		for name, aux := range d.AuxAddresses {
			if a, err := netip.ParsePrefix(aux); err == nil {
				aux = a.Addr().String()
			}
			nc.AuxAddresses = append(nc.AuxAddresses, name+"="+aux)
		}
		p.mu.Lock()
		if sub, ok := p.subPools[pool.Masked()]; ok {
			nc.IPRanges = append(nc.IPRanges, sub.String())
		}
		p.mu.Unlock()
	}
	slices.Sort(nc.AuxAddresses)
	if err := dockerNetworkOptions(req.Options, &nc); err != nil {
		return nil, err
	}
	_, err := p.a.createNetwork(nc, dockerOwner)
	return nil, err
}

// dockerNetworkOptions reads -o options and --internal into nc.
func dockerNetworkOptions(opts map[string]any, nc *NetworkCreate) error {
	internal, _ := opts["com.docker.network.internal"].(bool)
	if internal {
		no := false
		nc.Masquerade = &no
	}
	generic, _ := opts[dockerGenericKey].(map[string]any)
	for _, key := range slices.Sorted(mapKeys(generic)) {
		val := fmt.Sprint(generic[key])
		boolVal := func() (*bool, error) {
			b, err := strconv.ParseBool(val)
			if err != nil {
				return nil, fmt.Errorf("pontoon: option %s=%q: give true or false", key, val)
			}
			return &b, nil
		}
		var err error
		switch key {
		case "icc", "com.docker.network.bridge.enable_icc":
			nc.ICC, err = boolVal()
		case "masquerade", "com.docker.network.bridge.enable_ip_masquerade":
			var b *bool
			if b, err = boolVal(); err == nil && nc.Masquerade == nil {
				nc.Masquerade = b
			}
		case "masquerade6":
			// --internal wins, as over masquerade: nothing is
			// translated, and IPv6, like IPv4, leaves by the
			// containers' own addresses only if the host forwards.
			var b *bool
			if b, err = boolVal(); err == nil && !internal {
				nc.Masquerade6 = *b
			}
		case "mtu", "com.docker.network.driver.mtu":
			if nc.MTU, err = strconv.Atoi(val); err != nil {
				err = fmt.Errorf("pontoon: option %s=%q: give a number of bytes such as 1500", key, val)
			}
		case "bridge", "com.docker.network.bridge.name":
			nc.Bridge = val
		case "routed":
			var b *bool
			if b, err = boolVal(); err == nil {
				nc.Routed = *b
			}
		default:
			err = fmt.Errorf("pontoon: unknown option %q; the pontoon driver takes -o icc=BOOL, masquerade=BOOL, masquerade6=BOOL, routed=BOOL, mtu=N and bridge=NAME", key)
		}
		if err != nil {
			return err
		}
	}
	if nc.Routed && nc.Masquerade != nil && !*nc.Masquerade && opts["com.docker.network.internal"] == true {
		return errors.New("pontoon: --internal and -o routed=true contradict each other (routed lets the LAN reach the containers); give one of them")
	}
	return nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (p *dockerPlugin) deleteNetwork(req dockerNetworkRef) (any, error) {
	err := p.a.removeNetwork(dockerNetworkName(req.NetworkID), false, dockerOwner)
	if errors.Is(err, ErrNotFound) {
		return nil, nil // gone already: what dockerd wants
	}
	return nil, err
}

// createEndpoint checks the request and keeps it for Join: the pair is
// made when the sandbox is known.
func (p *dockerPlugin) createEndpoint(req dockerEndpointCreate) (any, error) {
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, errors.New("pontoon: no IPv4 address for the endpoint; the network needs --ipam-driver pontoon")
	}
	if _, err := netip.ParsePrefix(req.Interface.Address); err != nil {
		return nil, fmt.Errorf("pontoon: endpoint address %q: not an address with its prefix", req.Interface.Address)
	}
	if v6 := req.Interface.AddressIPv6; v6 != "" {
		if pp, err := netip.ParsePrefix(v6); err != nil || !pp.Addr().Is6() {
			return nil, fmt.Errorf("pontoon: endpoint IPv6 address %q: not an IPv6 address with its prefix", v6)
		}
	}
	// The ports come again with ProgramExternalConnectivity; refusing
	// them here fails `docker run` before anything is made.
	if _, err := dockerPortSpecs(req.Options[dockerPortMapKey], req.Interface.AddressIPv6 != ""); err != nil {
		return nil, err
	}
	if _, err := p.a.Network(dockerNetworkName(req.NetworkID)); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.created[req.EndpointID] = req
	p.mu.Unlock()
	return map[string]any{}, nil
}

// join attaches the endpoint: the address, the pair with its peer left
// for dockerd to move into the sandbox, the record. dockerd names the
// peer eth0, eth1, ... and routes via Gateway; without one it would add
// docker_gwbridge and map the ports there.
func (p *dockerPlugin) join(req dockerEndpointRef) (any, error) {
	name := dockerEndpointName(req.EndpointID)
	e, err := p.a.Endpoint(name)
	if err != nil {
		p.mu.Lock()
		created, ok := p.created[req.EndpointID]
		p.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("pontoon: endpoint %s was never created here (the agent restarted in between?); start the container again", shortDockerID(req.EndpointID))
		}
		addr, _ := netip.ParsePrefix(created.Interface.Address)
		attach := EndpointAttach{
			Network: dockerNetworkName(req.NetworkID), Name: name, IP: addr.Addr().String(), MAC: created.Interface.MacAddress,
			Owner: dockerOwner,
		}
		if addr6, err := netip.ParsePrefix(created.Interface.AddressIPv6); err == nil {
			attach.IP6 = addr6.Addr().String()
		}
		e, err = p.a.attach(attach, &engineJoin{Netns: req.SandboxKey, PeerName: peerIfName(name)})
		if err != nil {
			return nil, err
		}
	}
	resp := map[string]any{
		"InterfaceName": map[string]string{"SrcName": peerIfName(name), "DstPrefix": "eth"},
		"Gateway":       e.Gateway.String(),
	}
	if e.Gateway6.IsValid() {
		resp["GatewayIPv6"] = e.Gateway6.String()
	}
	return resp, nil
}

func (p *dockerPlugin) leave(req dockerEndpointRef) (any, error) {
	err := p.a.detachAs(dockerEndpointName(req.EndpointID), dockerOwner)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return nil, err
}

func (p *dockerPlugin) deleteEndpoint(req dockerEndpointRef) (any, error) {
	p.mu.Lock()
	delete(p.created, req.EndpointID)
	p.mu.Unlock()
	return p.leave(req)
}

// programPorts publishes the container's -p mappings on the endpoint that
// gives it its gateway; dockerd moves them with the gateway (network
// connect and disconnect) by revoking them here and programming them
// there.
func (p *dockerPlugin) programPorts(req dockerEndpointRef) (any, error) {
	name := dockerEndpointName(req.EndpointID)
	e, err := p.a.Endpoint(name)
	if err != nil {
		return nil, err
	}
	specs, err := dockerPortSpecs(req.Options[dockerPortMapKey], e.IPv6.IsValid())
	if err != nil {
		return nil, err
	}
	if _, err := p.a.UnpublishAll(name); err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, nil
	}
	_, err = p.a.Publish(PublishRequest{Endpoint: name, Specs: specs})
	return nil, err
}

func (p *dockerPlugin) revokePorts(req dockerEndpointRef) (any, error) {
	_, err := p.a.UnpublishAll(dockerEndpointName(req.EndpointID))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return nil, err
}

// dockerPortSpecs turns com.docker.network.portmap into -p specs. A host
// port range for one container port (8000-8010:80) takes its first free
// port; host port 0 (-p 80, -P) is allocated. A binding without host IP
// covers both families, as Pontoon's own spec does, so an [::] binding of
// the same ports adds nothing. An endpoint with IPv4 only (dual false)
// gets no IPv6 host IP; it is still reached on [::1] and the host's IPv6
// addresses through a binding without host IP, which 0.0.0.0 and [::]
// together amount to.
func dockerPortSpecs(raw any, dual bool) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	var pbs []dockerPortBinding
	if err := json.Unmarshal(b, &pbs); err != nil {
		return nil, fmt.Errorf("pontoon: read %s: %w", dockerPortMapKey, err)
	}
	type ports struct {
		proto                   int
		port, hostPort, endPort uint16
	}
	portsOf := func(pb dockerPortBinding) ports { return ports{pb.Proto, pb.Port, pb.HostPort, pb.HostPortEnd} }
	hostIPs := map[ports][]netip.Addr{}
	for _, pb := range pbs {
		ip, _ := netip.ParseAddr(pb.HostIP)
		hostIPs[portsOf(pb)] = append(hostIPs[portsOf(pb)], ip)
	}
	var specs []string
	for _, pb := range pbs {
		if pb.Proto == dockerSCTP {
			return nil, fmt.Errorf("pontoon: -p %d/sctp: the pontoon driver publishes tcp and udp ports only (its datapath does not translate SCTP); leave the sctp port out, or run this container on a network of another driver", pb.Port)
		}
		proto, ok := map[int]string{6: "tcp", 17: "udp"}[pb.Proto]
		if !ok {
			return nil, fmt.Errorf("pontoon: port %d: protocol number %d is not tcp or udp", pb.Port, pb.Proto)
		}
		var ip netip.Addr
		if pb.HostIP != "" {
			if ip, err = netip.ParseAddr(pb.HostIP); err != nil || ip.Zone() != "" {
				return nil, fmt.Errorf("pontoon: host IP %q of port %d is not an address", pb.HostIP, pb.Port)
			}
			ip = ip.Unmap()
		}
		same := hostIPs[portsOf(pb)]
		any4, any6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
		switch {
		case ip == any6 && slices.Contains(same, netip.Addr{}):
			continue // covered by the binding without host IP
		case ip == any6 && !dual && slices.Contains(same, any4):
			continue // 0.0.0.0's spec takes both families
		case ip == any4 && !dual && slices.Contains(same, any6):
			ip = netip.Addr{}
		case ip.Is6() && !dual:
			return nil, fmt.Errorf("pontoon: -p %s: the container has IPv4 only on this network; create the network with --ipv6, or leave out the host IP (-p %d:%d) to reach it on IPv6 from the host as well", net.JoinHostPort(ip.String(), strconv.Itoa(int(pb.HostPort))), pb.HostPort, pb.Port)
		}
		var spec strings.Builder
		switch {
		case ip.Is6():
			spec.WriteString("[" + ip.String() + "]:")
		case ip.IsValid():
			spec.WriteString(ip.String() + ":")
		}
		switch {
		case pb.HostPort == 0 && ip.IsValid():
			spec.WriteString(":")
		case pb.HostPort != 0 && pb.HostPortEnd > pb.HostPort:
			fmt.Fprintf(&spec, "%d-%d:", pb.HostPort, pb.HostPortEnd)
		case pb.HostPort != 0:
			fmt.Fprintf(&spec, "%d:", pb.HostPort)
		}
		fmt.Fprintf(&spec, "%d/%s", pb.Port, proto)
		specs = append(specs, spec.String())
	}
	return specs, nil
}
