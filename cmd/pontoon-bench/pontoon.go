package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// pontoonDP is Pontoon's datapath as the agent sets it up: tc programs on
// the uplink, the bridge and each container's veth, socket hooks on a
// cgroup (a child one here, holding only the bench's host clients and the
// socket-hooks hairpin client), and in the maps the host's addresses and
// netns cookie, the network (masquerading both families), its endpoints,
// their namespaces and the uplink's addresses. Translated packets are
// forwarded in BPF, the agent's default, unless stack is set
// (--stack-forwarding). With xdp set (pontoon-xdp, the agent's --xdp) the
// uplink XDP program runs in front of tc in that mode; the default is the
// agent's --xdp=off.
type pontoonDP struct {
	w        *world
	cg       *cgroup
	pinDir   string
	legacyTC bool
	stack    bool
	xdp      loader.XDPMode

	m         *ebpf.Map
	bindings  *maps.Bindings
	published []maps.BindingKey
	stopGC    func()
}

// benchNetworkID is the datapath's id of the world's one network.
const benchNetworkID = 1

func (d *pontoonDP) name() string {
	if d.stack {
		return "pontoon-stack"
	}
	if d.xdp != "" {
		return "pontoon-xdp"
	}
	return "pontoon"
}
func (d *pontoonDP) world() *world { return d.w }
func (d *pontoonDP) target(c clientKind, s service) netip.AddrPort {
	return published(c, s)
}

// bulkClient: the outside and the peer dial the published port, the
// container dials the outside server and is masqueraded (over IPv6 by
// NAT66). The peer takes tc's hairpin path unless it sits in the hooked
// cgroup, where connect() is pointed at the container straight away.
// Neither hairpin path depends on the forwarding mode (tc forwards
// hairpinned packets in BPF either way, and the hooks translate no
// packet), so stack forwarding skips them.
func (d *pontoonDP) bulkClient(p bulkPath) (netns, *cgroup, netip.AddrPort, bool) {
	pub := netip.AddrPortFrom(hostIP, bulkTCP.hostPort)
	if d.stack && (p == pathHairpinTC || p == pathHairpinSock) {
		return "", nil, netip.AddrPort{}, false
	}
	switch p {
	case pathPublished:
		return d.w.outside, nil, pub, true
	case pathPublished6:
		return d.w.outside, nil, netip.AddrPortFrom(hostIP6, bulkTCP.hostPort), true
	case pathMasquerade:
		return d.w.container, nil, netip.AddrPortFrom(outsideIP, bulkTCP.containerPort), true
	case pathMasquerade6:
		return d.w.container, nil, netip.AddrPortFrom(outsideIP6, bulkTCP.containerPort), true
	case pathHairpinTC:
		return d.w.peer, nil, pub, true
	case pathHairpinSock:
		return d.w.peer, d.cg, pub, true
	}
	return "", nil, netip.AddrPort{}, false
}
func (d *pontoonDP) maxN() int { return 1 << 30 }

// opReps: one map operation takes microseconds; many samples are cheap.
func (d *pontoonDP) opReps(int) int { return 200 }

// clientCgroup: host processes sit in the hooked cgroup, as every process
// on a host does when the hooks are on the root; the outside client is
// another machine, so it has none.
func (d *pontoonDP) clientCgroup(c clientKind) *cgroup {
	if c.outside() {
		return nil
	}
	return d.cg
}

func (d *pontoonDP) setup(ctx context.Context, cl *cleanups) error {
	// The detach runs in the host namespace while its interfaces exist:
	// registered after the world, it runs before the world is deleted.
	cl.add("pontoon pins "+d.pinDir, func() error { return d.cleanup(context.Background()) })
	args := []string{"attach", "--pin-dir", d.pinDir, "--uplink", uplinkName, "--bridge", bridgeName, "--cgroup", d.cg.path,
		"--endpoint", vethName + "=" + containerIP.String(), "--endpoint", peerVeth + "=" + peerIP.String(),
		"--endpoint6", vethName + "=" + containerIP6.String(), "--endpoint6", peerVeth + "=" + peerIP6.String()}
	// The namespaces' cookies tell the socket hooks which network a
	// caller is in; only the agent's managed namespaces are rewritten.
	for _, n := range []netns{d.w.container, d.w.peer} {
		cookie, err := netnsCookieOf(ctx, n)
		if err != nil {
			return err
		}
		args = append(args, "--netns-cookie", strconv.FormatUint(cookie, 10))
	}
	if d.legacyTC {
		args = append(args, "--legacy-tc")
	}
	if d.stack {
		args = append(args, "--stack-forwarding")
	}
	if d.xdp != "" {
		args = append(args, "--xdp", string(d.xdp))
	}
	var mode string
	if err := helper(ctx, d.w.host, nil, 30*time.Second, &mode, args...); err != nil {
		return err
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(d.pinDir, "bindings"), nil)
	if err != nil {
		return fmt.Errorf("open pinned bindings map: %w", err)
	}
	if err := d.collectConntrack(); err != nil {
		m.Close()
		return err
	}
	d.m, d.bindings = m, maps.NewBindings(m)
	var bs []maps.Binding
	for _, s := range services {
		bs = append(bs, binding(s), binding6(s))
	}
	return d.put(bs)
}

func (d *pontoonDP) cleanup(ctx context.Context) error {
	if d.stopGC != nil {
		d.stopGC()
		d.stopGC = nil
	}
	if d.m != nil {
		d.m.Close()
		d.m = nil
	}
	if _, err := os.Stat(d.pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Legacy tc filters are found by ifindex, so the detach must run in
	// the namespace that owns them.
	if err := helper(ctx, d.w.host, nil, 30*time.Second, nil, "detach", "--pin-dir", d.pinDir); err != nil {
		// The namespace (and every filter in it) may be gone already;
		// the pins are all that is left then.
		if rmErr := os.RemoveAll(d.pinDir); rmErr != nil {
			return errors.Join(err, rmErr)
		}
	}
	return nil
}

// conntrackGCInterval is the agent's: idle conntrack and SNAT entries go
// every 10 s. The connect-rate runs open hundreds of thousands of flows,
// more than the conntrack table holds; without collection they would
// measure a full table.
const conntrackGCInterval = 10 * time.Second

// collectConntrack deletes idle conntrack and SNAT entries until stopGC
// is called, as the agent does.
func (d *pontoonDP) collectConntrack() error {
	ctMap, err := ebpf.LoadPinnedMap(filepath.Join(d.pinDir, "ct"), nil)
	if err != nil {
		return fmt.Errorf("open pinned ct map: %w", err)
	}
	snatMap, err := ebpf.LoadPinnedMap(filepath.Join(d.pinDir, "snat"), nil)
	if err != nil {
		ctMap.Close()
		return fmt.Errorf("open pinned snat map: %w", err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer ctMap.Close()
		defer snatMap.Close()
		ct, snat := maps.NewCT(ctMap), maps.NewSNAT(snatMap)
		lifetimes := maps.DefaultLifetimes()
		tick := time.NewTicker(conntrackGCInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			now := maps.MonotonicNow()
			if _, err := ct.GC(now, lifetimes); err != nil {
				fmt.Fprintf(os.Stderr, "pontoon-bench: %s: collect conntrack: %v\n", d.name(), err)
			}
			if _, err := snat.GC(now, lifetimes); err != nil {
				fmt.Fprintf(os.Stderr, "pontoon-bench: %s: collect snat: %v\n", d.name(), err)
			}
		}
	}()
	d.stopGC = func() { close(stop); <-done }
	return nil
}

// binding6 is the IPv6 half of a wildcard service on the dual-stack
// network, as the agent writes it: [::]:P to the container's IPv6
// address, under the IPv4 half's id.
func binding6(s service) maps.Binding {
	b := binding(s)
	b.Host = netip.AddrPortFrom(netip.IPv6Unspecified(), s.hostPort)
	b.Backend = netip.AddrPortFrom(containerIP6, s.containerPort)
	return b
}

// binding is the map entry publishing s.
func binding(s service) maps.Binding {
	proto := maps.TCP
	if s.udp {
		proto = maps.UDP
	}
	host := netip.IPv4Unspecified()
	if !s.wildcard() {
		host = s.hostAddr
	}
	return maps.Binding{
		Proto:   proto,
		Host:    netip.AddrPortFrom(host, s.hostPort),
		Backend: netip.AddrPortFrom(containerIP, s.containerPort),
		ID:      uint32(s.hostPort),
	}
}

func (d *pontoonDP) put(bs []maps.Binding) error {
	if err := d.bindings.PutBatch(bs); err != nil {
		return err
	}
	for _, b := range bs {
		d.published = append(d.published, b.Key())
	}
	return nil
}

// install times one batch update of n bindings; memory is what the
// kernel accounts to the bindings map (it grows with its entries).
func (d *pontoonDP) install(ctx context.Context, ports []service) (time.Duration, memUse, error) {
	if err := d.bindings.DeleteBatch(d.published); err != nil {
		return 0, memUse{}, err
	}
	d.published = nil
	bs := make([]maps.Binding, len(ports))
	for i, p := range ports {
		bs[i] = binding(p)
	}
	start := time.Now()
	if err := d.bindings.PutBatch(bs); err != nil {
		return 0, memUse{}, err
	}
	took := time.Since(start)
	for _, b := range bs {
		d.published = append(d.published, b.Key())
	}
	info, err := d.m.Info()
	if err != nil {
		return 0, memUse{}, fmt.Errorf("read bindings map info: %w", err)
	}
	memlock, ok := info.Memlock()
	if !ok {
		return 0, memUse{}, errors.New("kernel reports no memlock for the bindings map")
	}
	return took, memUse{Bytes: float64(memlock), What: "bindings map memory (memlock)"}, nil
}

func (d *pontoonDP) extra() maps.Binding {
	return binding(service{name: "extra", containerPort: extraPort, hostPort: extraPort})
}

func (d *pontoonDP) addOne(context.Context) (time.Duration, error) {
	b := d.extra()
	start := time.Now()
	err := d.bindings.Put(b)
	return time.Since(start), err
}

func (d *pontoonDP) deleteOne(context.Context) (time.Duration, error) {
	b := d.extra()
	start := time.Now()
	err := d.bindings.Delete(b.Proto, b.Host)
	return time.Since(start), err
}

// attachOptions are what the attach helper is told: where to attach and
// what to program besides the host's own addresses.
type attachOptions struct {
	pinDir, uplink, bridge, cgroup string
	legacyTC, stackForwarding      bool
	// xdp is the uplink XDP program's mode; empty or off for none.
	xdp loader.XDPMode
	// endpoints are the containers' host-side veths and addresses;
	// endpoints6 their IPv6 addresses.
	endpoints, endpoints6 map[string]netip.Addr
	// netnsCookies are the containers' namespaces.
	netnsCookies []uint64
}

// attachDatapath is the agent's part, run inside the host namespace: load,
// attach to the uplink, the bridge, the containers' veths and the cgroup,
// and program what the agent would: the host's addresses and netns
// cookie, forwarding mode, the network, its endpoints and namespaces, and
// the uplink's addresses. What it attached is pinned and outlives it.
func attachDatapath(o attachOptions) (string, error) {
	d, err := loader.Load(loader.Options{PinDir: o.pinDir, ForceLegacyTC: o.legacyTC})
	if err != nil {
		return "", err
	}
	defer d.Close()
	mode, err := d.AttachUplink(o.uplink)
	if err != nil {
		return "", err
	}
	if o.xdp != "" && o.xdp != loader.XDPOff {
		up, err := netlink.LinkByName(o.uplink)
		if err != nil {
			return "", fmt.Errorf("find uplink %s: %w", o.uplink, err)
		}
		got, err := d.AttachUplinkXDP(up, o.xdp)
		if err != nil {
			return "", err
		}
		if got != o.xdp {
			return "", fmt.Errorf("attach xdp to %s: runs %s, asked for %s", o.uplink, got, o.xdp)
		}
	}
	if _, err := d.AttachBridge(o.bridge); err != nil {
		return "", err
	}
	if err := d.AttachCgroup(o.cgroup); err != nil {
		return "", err
	}
	cookie, err := loader.NetnsCookie()
	if err != nil {
		return "", err
	}
	cfg := maps.NewConfig(d.Maps.Config)
	v, err := cfg.Get()
	if err != nil {
		return "", err
	}
	v.HostNetnsCookie = cookie
	v.Flags &^= maps.ConfigFIBRedirect
	if !o.stackForwarding {
		v.Flags |= maps.ConfigFIBRedirect
	}
	if err := cfg.Set(v); err != nil {
		return "", err
	}
	// Both families, as the agent's syncHostAddrs.
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("list host addresses: %w", err)
	}
	want := map[netip.Addr]uint32{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			want[ip.Unmap()] = uint32(a.LinkIndex)
		}
	}
	if err := maps.NewHostAddrs(d.Maps.HostAddrs).Sync(want); err != nil {
		return "", err
	}

	// One dual-stack network: a networks entry per subnet, one id. It
	// masquerades both families, as `network create --ipv6 --masquerade6`
	// makes it (NAT66 on the IPv6 entry), and is not routed.
	networks := maps.NewNetworks(d.Maps.Networks)
	err = networks.Put(maps.Network{
		Subnet: netip.MustParsePrefix(subnet), Gateway: gatewayIP, ID: benchNetworkID, Masquerade: true,
	})
	if err != nil {
		return "", err
	}
	err = networks.Put(maps.Network{
		Subnet: netip.MustParsePrefix(subnet6), Gateway: gatewayIP6, ID: benchNetworkID, Masquerade: true, NAT66: true,
	})
	if err != nil {
		return "", err
	}
	up, err := netlink.LinkByName(o.uplink)
	if err != nil {
		return "", fmt.Errorf("find uplink %s: %w", o.uplink, err)
	}
	if err := maps.NewUplinks(d.Maps.Uplinks).Put(uint32(up.Attrs().Index), hostIP); err != nil {
		return "", err
	}
	// NAT66's source: the agent would pick it, the uplink's one global
	// IPv6 address.
	if err := maps.NewUplinks(d.Maps.Uplinks6).Put(uint32(up.Attrs().Index), hostIP6); err != nil {
		return "", err
	}
	for ifname, addr := range o.endpoints {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return "", fmt.Errorf("find endpoint veth %s: %w", ifname, err)
		}
		if _, err := d.AttachEndpoint(ifname); err != nil {
			return "", err
		}
		if err := maps.NewEndpoints(d.Maps.Endpoints).Put(addr, uint32(l.Attrs().Index), benchNetworkID); err != nil {
			return "", err
		}
	}
	for ifname, addr := range o.endpoints6 {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return "", fmt.Errorf("find endpoint veth %s: %w", ifname, err)
		}
		if err := maps.NewEndpoints(d.Maps.Endpoints).Put(addr, uint32(l.Attrs().Index), benchNetworkID); err != nil {
			return "", err
		}
	}
	for _, c := range o.netnsCookies {
		if err := maps.NewNetns(d.Maps.Netns).Put(c, benchNetworkID); err != nil {
			return "", err
		}
	}
	return string(mode), nil
}

// netnsCookieOf asks a helper inside the namespace for its cookie. The
// bench never enters a namespace itself: a thread that did could not be
// trusted back, and a thread that ends kills the children it started
// (their parent-death signal is tied to the thread that forked them).
func netnsCookieOf(ctx context.Context, n netns) (uint64, error) {
	var cookie uint64
	if err := helper(ctx, n, nil, 10*time.Second, &cookie, "netns-cookie"); err != nil {
		return 0, err
	}
	return cookie, nil
}
