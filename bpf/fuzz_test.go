package bpf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/maps"
)

// FuzzDatapath feeds frames through every tc program with
// BPF_PROG_TEST_RUN, in a world of bindings, networks, flows and
// masqueraded flows where every translation can happen, and holds each run
// to what the datapath promises whatever arrives:
//
//  1. the run succeeds (in CHECKSUM_COMPLETE mode: skb->csum still matches
//     the packet), returns pass, drop or redirect, counts exactly one
//     verdict, drops exactly when the verdict is a drop_* one, and
//     redirects only what it translated (or, the endpoint program, what
//     stays in its network);
//  2. a packet nothing translated leaves byte for byte as it came;
//  3. a translated packet keeps every checksum that was right: IP header,
//     TCP/UDP with its pseudo header, ICMP, and an ICMP error's quoted IP
//     and TCP/UDP headers; a UDP checksum of 0 (none) stays 0, and no other
//     becomes 0;
//  4. nothing leaves an uplink's egress with a source inside a
//     masquerading network.
//
// An input is an options byte (fuzzOpt*) and up to fuzzMaxFrames Ethernet
// frames, each behind a two-byte length. Every frame goes through every
// program in turn, once per checksum mode, from the same seeded maps:
// what one run leaves in the maps (a new flow, a fragment's ports) the
// next one sees. The programs for devices without an Ethernet header get
// the frame without it.
func FuzzDatapath(f *testing.F) {
	w := newFuzzWorld(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s.opts, fuzzEncode(s.frames...))
		f.Add(s.opts|fuzzOptFIB, fuzzEncode(s.frames...))
	}
	f.Fuzz(func(t *testing.T, opts uint8, input []byte) {
		w.exercise(t, opts, fuzzFrames(input))
	})
}

// TestFuzzSeedsReachEveryPath keeps the seed corpus honest: between them,
// the seeds must take every program down each of its translations and
// drops, so that mutating them explores around every path.
func TestFuzzSeedsReachEveryPath(t *testing.T) {
	w := newFuzzWorld(t)
	want := []string{
		"uplink_ingress dnat", "uplink_ingress icmp_dnat", "uplink_ingress snat_reverse",
		"uplink_ingress icmp_snat_reverse", "uplink_ingress drop_snat_orphan",
		"uplink_ingress pass_local_only", "uplink_ingress pass_not_new",
		"uplink_ingress pass_fragment", "uplink_ingress drop_not_published",
		"uplink_ingress pass_not_ip", "uplink_ingress redirect", "uplink_ingress fib_too_big",
		"uplink_ingress_l3 dnat", "uplink_ingress_l3 snat_reverse",
		"uplink_egress rnat", "uplink_egress icmp_rnat", "uplink_egress snat",
		"uplink_egress icmp_snat", "uplink_egress drop_unmasqueraded",
		"uplink_egress drop_snat_exhausted", "uplink_egress pass_no_match",
		"uplink_egress_l3 rnat", "uplink_egress_l3 snat", "uplink_egress_l3 icmp_snat",
		"bridge_ingress hairpin", "bridge_ingress hairpin_reply", "bridge_ingress drop_isolation",
		"bridge_ingress snat", "bridge_ingress rnat", "bridge_ingress icmp_snat",
		"bridge_ingress redirect", "bridge_ingress drop_frag_needed",
		"endpoint_ingress endpoint_redirect", "endpoint_ingress drop_icc",
		"endpoint_ingress drop_spoofed", "endpoint_ingress drop_protocol",
		"endpoint_ingress pass_not_ip",
	}
	seen := map[string]bool{}
	for _, s := range fuzzSeeds(t) {
		t.Run(s.name, func(t *testing.T) {
			for _, opts := range []uint8{s.opts, s.opts | fuzzOptFIB} {
				for _, r := range w.exercise(t, opts, fuzzFrames(fuzzEncode(s.frames...))) {
					for i, d := range r.delta {
						if d > 0 {
							seen[r.prog.name+" "+maps.StatNames[i]] = true
						}
					}
				}
			}
		})
	}
	for _, path := range want {
		if !seen[path] {
			t.Errorf("no seed reaches %s", path)
		}
	}
}

// ---- input ----

const (
	// fuzzOptFIB turns the datapath's FIB redirect on: translated packets
	// are routed and forwarded in BPF.
	fuzzOptFIB = 1 << iota
	// fuzzOptRaw runs the frames as they are. Otherwise every checksum
	// whose extent is known is made right first, so that invariant 3 has
	// something to hold; as they are, only the checksums that came right
	// must stay right.
	fuzzOptRaw
	// fuzzOptOnePort narrows masquerade to one source port, 40000, which a
	// seeded flow already holds towards fzServer:443.
	fuzzOptOnePort
)

const (
	fuzzMaxFrames = 4
	// fuzzMaxFrame keeps frames well inside what a test run takes (a page,
	// less the skb's head and tail room).
	fuzzMaxFrame = 2048
	fuzzEthLen   = 14
)

func fuzzEncode(frames ...[]byte) []byte {
	var b []byte
	for _, fr := range frames {
		b = binary.BigEndian.AppendUint16(b, uint16(len(fr)))
		b = append(b, fr...)
	}
	return b
}

// fuzzFrames splits an input into copies of its frames, the last cut short
// where the input ends. Frames shorter than an Ethernet header are left out:
// a test run refuses them.
func fuzzFrames(b []byte) [][]byte {
	var frames [][]byte
	for len(b) >= 2 && len(frames) < fuzzMaxFrames {
		n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
		fr := b[2 : 2+n]
		b = b[2+n:]
		if len(fr) >= fuzzEthLen {
			frames = append(frames, bytes.Clone(fr[:min(len(fr), fuzzMaxFrame)]))
		}
	}
	return frames
}

// ---- the world ----

var (
	// fzClient8 and fzServer are outside hosts whose frames the L3 programs
	// can see as IPv4 too: a test run takes skb->protocol from bytes 12-13
	// of the data, which for a frame starting at its IP header are the
	// first two bytes of the source address, so only sources in 8.0.0.0/16
	// make IPv4 there. The 8.0.1.0/24 network is in that range for the
	// same reason.
	fzClient8 = netip.MustParseAddr("8.0.0.7")
	fzServer  = netip.MustParseAddr("8.0.0.80")
	fzRouter  = netip.MustParseAddr("8.0.0.254") // sends ICMP errors
	fzGW2     = netip.MustParseAddr("172.19.0.1")
	fzC2a     = netip.MustParseAddr("172.19.0.2")
	fzC2b     = netip.MustParseAddr("172.19.0.3")
	fzGW3     = netip.MustParseAddr("172.20.0.1")
	fzC3      = netip.MustParseAddr("172.20.0.2")
	fzGW4     = netip.MustParseAddr("8.0.1.1")
	fzC4      = netip.MustParseAddr("8.0.1.2")
	fzStray   = netip.MustParseAddr("172.18.0.99") // in a network, not an endpoint
	// fzNextHop is the uplink's default gateway in the test namespace.
	fzNextHop = netip.MustParseAddr("192.0.2.254")

	fzNetworks = []maps.Network{
		{Subnet: netip.MustParsePrefix("172.18.0.0/16"), Gateway: gateway, ID: 1, Masquerade: true},
		{Subnet: netip.MustParsePrefix("172.19.0.0/16"), Gateway: fzGW2, ID: 2, Masquerade: true, NoICC: true},
		{Subnet: netip.MustParsePrefix("172.20.0.0/16"), Gateway: fzGW3, ID: 3, Routed: true},
		{Subnet: netip.MustParsePrefix("8.0.1.0/24"), Gateway: fzGW4, ID: 4, Masquerade: true},
	}
	fzBindings = []maps.Binding{
		tcpWeb, udpApp, tcpLo,
		{Proto: maps.TCP, Host: ap(netip.IPv4Unspecified(), 8000), Backend: ap(backend2, 9000), ID: 3},
		{Proto: maps.TCP, Host: ap(hostIP, 8443), Backend: ap(fzC4, 8443), ID: 5},
		{Proto: maps.TCP, Host: ap(hostIP, 9443), Backend: ap(fzC2a, 443), ID: 6},
		{Proto: maps.TCP, Host: ap(hostIP, 8081), Backend: ap(fzC3, 80), ID: 7},
		{Proto: maps.UDP, Host: ap(netip.IPv4Unspecified(), 5353), Backend: ap(fzC4, 53), ID: 8},
	}
	fzEndpoints = []struct {
		addr      netip.Addr
		ifindex   uint32 // 1: the device a test run's skb comes from
		networkID uint32
		mac       net.HardwareAddr
	}{
		{backend, 1, 1, macPeer},
		{backend2, 1001, 1, nil},
		{fzC2a, 1, 2, nil},
		{fzC2b, 1002, 2, nil},
		{fzC3, 1, 3, nil},
		{fzC4, 1, 4, macPeer},
	}
)

// Flows the maps hold before every run.
var (
	fzCT = []maps.CTEntry{
		{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1,
			TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished},
		{Proto: maps.UDP, Backend: udpApp.Backend, Client: ap(fzClient8, 40000), Dialled: udpApp.Host, BindingID: 2},
		{Proto: maps.TCP, Backend: ap(backend2, 9000), Client: ap(fzClient8, 40002), Dialled: ap(hostIP2, 8000), BindingID: 3,
			TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished},
		{Proto: maps.TCP, Backend: ap(fzC4, 8443), Client: ap(fzClient8, 40001), Dialled: ap(hostIP, 8443), BindingID: 5,
			TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished},
		// a hairpinned flow: fzC2b dialled hostIP:9443, SNATed to fzGW2
		{Proto: maps.TCP, Backend: ap(fzC2a, 443), Client: ap(fzC2b, 41000), Dialled: ap(hostIP, 9443), BindingID: 6,
			TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished},
	}
	// fzCTNew are unanswered flows.
	fzCTNew = []maps.CTEntry{
		{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: ap(fzClient8, 40003), Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn},
	}
	fzSNAT = slices.Concat(
		fzSNATFlow(maps.TCP, ap(backend, 40000), ap(fzServer, 443), ap(hostIP, 40000)),
		fzSNATFlow(maps.UDP, ap(backend, 40001), ap(fzServer, 53), ap(hostIP, 40001)),
		// an echo: its identifier is the source "port" of a request and the
		// destination "port" of a reply
		fzSNATFlow(fzICMP, ap(backend, 7), ap(fzServer, 0), ap(hostIP, 7)),
		fzSNATFlow(maps.TCP, ap(fzC4, 40000), ap(fzServer, 443), ap(hostIP, 40002)),
		fzSNATFlow(maps.TCP, ap(fzC2b, 41000), ap(fzC2a, 443), ap(fzGW2, 41000)),
		// the reverse half of a flow whose forward half is gone
		fzSNATFlow(maps.UDP, ap(backend, 123), ap(fzServer, 123), ap(hostIP, 40123))[1:],
	)
	// fzFrags are datagrams whose first fragment went by.
	fzFrags = []struct {
		proto    maps.Proto
		src, dst netip.AddrPort
		id       uint16
	}{
		{maps.UDP, ap(fzClient8, 40000), udpApp.Host, 0x4242},
		{maps.UDP, ap(backend, 40001), ap(fzServer, 53), 0x4343},
	}
)

// fzICMP is ICMP as a flow's protocol; package maps names only TCP and UDP.
const fzICMP = maps.Proto(unix.IPPROTO_ICMP)

type fzSNATEntry struct {
	key maps.CTKey
	val maps.SNATValue
}

// fzSNATFlow is both halves of a masqueraded flow, forward first.
func fzSNATFlow(proto maps.Proto, src, dst, nat netip.AddrPort) []fzSNATEntry {
	return []fzSNATEntry{
		{fzTuple(proto, src, dst), maps.SNATValue{Addr: raw16(nat.Addr()), Port: netOrder(nat.Port()), Flags: maps.SNATForward, LastSeenNs: 1}},
		{fzTuple(proto, dst, nat), maps.SNATValue{Addr: raw16(src.Addr()), Port: netOrder(src.Port()), Flags: maps.SNATReverse, LastSeenNs: 1}},
	}
}

func fzTuple(proto maps.Proto, src, dst netip.AddrPort) maps.CTKey {
	return maps.CTKey{Family: unix.AF_INET, Proto: proto, Sport: netOrder(src.Port()), Dport: netOrder(dst.Port()),
		Saddr: raw16(src.Addr()), Daddr: raw16(dst.Addr())}
}

// fzCTPair is a DNAT flow as ct_open_dnat4 keeps it: by its reply.
func fzCTPair(e maps.CTEntry) (maps.CTKey, maps.CTValue) {
	return fzTuple(e.Proto, e.Backend, e.Client), maps.CTValue{
		NatAddr: raw16(e.Dialled.Addr()), NatPort: netOrder(e.Dialled.Port()), Flags: maps.CTDNATReply,
		TCPFlags: e.TCPFlags, BindingID: e.BindingID, LastSeenNs: 1,
	}
}

type fuzzProg struct {
	name string
	prog *ebpf.Program
	// l3: the program is for devices without an Ethernet header.
	l3 bool
	// egress: what passes leaves an uplink.
	egress   bool
	endpoint bool
}

type fuzzWorld struct {
	uplink   bpf.TcUplinkObjects
	bridge   bpf.TcBridgePrograms
	endpoint bpf.TcEndpointPrograms
	progs    []fuzzProg
	modes    []skbMode
	ns       *fuzzNetns
	ncpu     int

	ctKeys, ctNewKeys     []maps.CTKey
	ctVals, ctNewVals     []maps.CTValue
	snatKeys              []maps.CTKey
	snatVals              []maps.SNATValue
	fragKeys              []maps.FragKey
	fragVals              []maps.FragValue
	statKeys              []uint32
	statVals              []maps.Counter
	masquerading          []netip.Prefix
	drop, translated, aux []bool // by stat index
}

// fuzzSmallMaps are the maps a run writes to, emptied before each input.
// Emptying walks every bucket, so they are made small: nothing in a
// handful of packets comes near their real sizes.
var fuzzSmallMaps = []string{"ct", "ct_new", "snat", "frags"}

func newFuzzWorld(tb testing.TB) *fuzzWorld {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("loading BPF programs, BPF_PROG_TEST_RUN and a network namespace need root")
	}
	w := &fuzzWorld{ncpu: ebpf.MustPossibleCPU()}
	w.ns = newFuzzNetns(tb)

	specs := []func() (*ebpf.CollectionSpec, error){bpf.LoadTcUplink, bpf.LoadTcBridge, bpf.LoadTcEndpoint}
	var loaded []*ebpf.CollectionSpec
	for _, load := range specs {
		spec, err := bpf.LoadForKernel(load)
		if err != nil {
			tb.Fatal(err)
		}
		for _, name := range fuzzSmallMaps {
			spec.Maps[name].MaxEntries = 1024
		}
		loaded = append(loaded, spec)
	}
	if err := loaded[0].LoadAndAssign(&w.uplink, nil); err != nil {
		tb.Fatalf("load tc_uplink: %v", fuzzVerifierDetail(err))
	}
	tb.Cleanup(func() { w.uplink.Close() })
	// The bridge and endpoint programs share the uplink's maps, as the
	// loader has them share the pinned ones; the uplink's own scratch
	// (packet6_scratch) they do not have.
	shared := func(spec *ebpf.CollectionSpec) *ebpf.CollectionOptions {
		repl := map[string]*ebpf.Map{}
		mv := reflect.ValueOf(w.uplink.TcUplinkMaps)
		for i := range mv.NumField() {
			name := mv.Type().Field(i).Tag.Get("ebpf")
			if _, ok := spec.Maps[name]; ok {
				repl[name] = mv.Field(i).Interface().(*ebpf.Map)
			}
		}
		return &ebpf.CollectionOptions{MapReplacements: repl}
	}
	if err := loaded[1].LoadAndAssign(&w.bridge, shared(loaded[1])); err != nil {
		tb.Fatalf("load tc_bridge: %v", fuzzVerifierDetail(err))
	}
	tb.Cleanup(func() { w.bridge.Close() })
	if err := loaded[2].LoadAndAssign(&w.endpoint, shared(loaded[2])); err != nil {
		tb.Fatalf("load tc_endpoint: %v", fuzzVerifierDetail(err))
	}
	tb.Cleanup(func() { w.endpoint.Close() })

	w.progs = []fuzzProg{
		{name: "uplink_ingress", prog: w.uplink.UplinkIngress},
		{name: "uplink_ingress_l3", prog: w.uplink.UplinkIngressL3, l3: true},
		{name: "uplink_egress", prog: w.uplink.UplinkEgress, egress: true},
		{name: "uplink_egress_l3", prog: w.uplink.UplinkEgressL3, l3: true, egress: true},
		{name: "bridge_ingress", prog: w.bridge.BridgeIngress},
		{name: "endpoint_ingress", prog: w.endpoint.EndpointIngress, endpoint: true},
	}
	for _, m := range skbModes {
		if kernelAtLeast(tb, m.minKernel) {
			w.modes = append(w.modes, m)
		}
	}
	w.seedStatic(tb)
	seedIPv6(tb, w)
	seedIPv6Ports(tb, w)
	w.classifyStats(tb)
	return w
}

func fuzzVerifierDetail(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%+v", ve)
	}
	return err
}

// seedStatic writes what no run changes: bindings, host addresses,
// networks, endpoints, uplinks; and prepares the flows reset writes.
func (w *fuzzWorld) seedStatic(tb testing.TB) {
	tb.Helper()
	m := &w.uplink.TcUplinkMaps
	if err := maps.NewBindings(m.Bindings).PutBatch(fzBindings); err != nil {
		tb.Fatal(err)
	}
	// The host's addresses, as the agent lists them: the uplink's, the
	// gateways', loopback.
	host := []netip.Addr{hostIP, hostIP2, loopback}
	for _, n := range fzNetworks {
		host = append(host, n.Gateway)
	}
	for _, a := range host {
		if err := maps.NewHostAddrs(m.Hostaddrs).Put(a, 2); err != nil {
			tb.Fatal(err)
		}
	}
	for _, n := range fzNetworks {
		if err := maps.NewNetworks(m.Networks).Put(n); err != nil {
			tb.Fatal(err)
		}
		if n.Masquerade {
			w.masquerading = append(w.masquerading, n.Subnet)
		}
	}
	for _, e := range fzEndpoints {
		v := maps.EndpointValue{Ifindex: e.ifindex, NetworkID: e.networkID}
		copy(v.MAC[:], e.mac)
		if err := m.Endpoints.Put(maps.EndpointKey{Family: unix.AF_INET, Addr: raw16(e.addr)}, v); err != nil {
			tb.Fatal(err)
		}
	}
	// Masquerade finds its address by the egress device: the test run's
	// (loopback) for the uplink programs, the route's for the bridge.
	for _, ifindex := range []uint32{1, uint32(w.ns.uplinkIndex)} {
		if err := maps.NewUplinks(m.Uplinks).Put(ifindex, hostIP); err != nil {
			tb.Fatal(err)
		}
	}

	for _, e := range fzCT {
		k, v := fzCTPair(e)
		w.ctKeys, w.ctVals = append(w.ctKeys, k), append(w.ctVals, v)
	}
	for _, e := range fzCTNew {
		k, v := fzCTPair(e)
		w.ctNewKeys, w.ctNewVals = append(w.ctNewKeys, k), append(w.ctNewVals, v)
	}
	for _, e := range fzSNAT {
		w.snatKeys, w.snatVals = append(w.snatKeys, e.key), append(w.snatVals, e.val)
	}
	for _, fr := range fzFrags {
		w.fragKeys = append(w.fragKeys, maps.FragKey{Family: unix.AF_INET, Proto: fr.proto, ID: uint32(netOrder(fr.id)),
			Saddr: raw16(fr.src.Addr()), Daddr: raw16(fr.dst.Addr())})
		w.fragVals = append(w.fragVals, maps.FragValue{Sport: netOrder(fr.src.Port()), Dport: netOrder(fr.dst.Port())})
	}
}

// classifyStats sorts the counters: drops (the program must return
// TC_ACT_SHOT), translations (the packet may change), and the ones bumped
// besides a verdict.
func (w *fuzzWorld) classifyStats(tb testing.TB) {
	tb.Helper()
	n := int(w.tables().Stats.MaxEntries())
	if n != len(maps.StatNames) {
		tb.Fatalf("stats map has %d counters, maps.StatNames %d", n, len(maps.StatNames))
	}
	translated := []string{"dnat", "rnat", "icmp_dnat", "icmp_rnat", "snat", "snat_reverse",
		"icmp_snat_reverse", "hairpin", "hairpin_reply", "icmp_snat"}
	aux := []string{"redirect", "fib_too_big", "tcp_rst_ignored", "ct_not_promoted"}
	w.drop, w.translated, w.aux = make([]bool, n), make([]bool, n), make([]bool, n)
	for i, name := range maps.StatNames {
		w.drop[i] = strings.HasPrefix(name, "drop_")
		w.translated[i] = slices.Contains(translated, name)
		w.aux[i] = slices.Contains(aux, name)
	}
	w.statKeys = make([]uint32, n)
	w.statVals = make([]maps.Counter, n*w.ncpu)
}

func (w *fuzzWorld) tables() *bpf.TcUplinkMaps { return &w.uplink.TcUplinkMaps }

func fuzzEmpty[K, V any](mp *ebpf.Map) error {
	keys, vals := make([]K, 128), make([]V, 128)
	var cursor ebpf.MapBatchCursor
	for {
		_, err := mp.BatchLookupAndDelete(&cursor, keys, vals, nil)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("empty %v: %w", mp, err)
		}
	}
}

func fuzzPut[K, V any](mp *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := mp.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("seed %v: %w", mp, err)
	}
	return nil
}

// reset puts the flow maps back to their seeds and the config to opts.
func (w *fuzzWorld) reset(opts uint8) error {
	mp := w.tables()
	// The calls run in order, emptying before seeding; the first error
	// counts.
	for _, err := range []error{
		fuzzEmpty[maps.CTKey, maps.CTValue](mp.Ct),
		fuzzEmpty[maps.CTKey, maps.CTValue](mp.CtNew),
		fuzzEmpty[maps.CTKey, maps.SNATValue](mp.Snat),
		fuzzEmpty[maps.FragKey, maps.FragValue](mp.Frags),
		fuzzPut(mp.Ct, w.ctKeys, w.ctVals),
		fuzzPut(mp.CtNew, w.ctNewKeys, w.ctNewVals),
		fuzzPut(mp.Snat, w.snatKeys, w.snatVals),
		fuzzPut(mp.Frags, w.fragKeys, w.fragVals),
	} {
		if err != nil {
			return err
		}
	}
	cfg := maps.ConfigValue{SnatPortMin: 40000, SnatPortMax: 40999}
	if opts&fuzzOptFIB != 0 {
		cfg.Flags |= maps.ConfigFIBRedirect
	}
	if opts&fuzzOptOnePort != 0 {
		cfg.SnatPortMax = 40000
	}
	return maps.NewConfig(mp.Config).Set(cfg)
}

// counters reads every counter, summed over CPUs, in one system call
// (one per counter before 5.11, which has no batch lookup on arrays).
func (w *fuzzWorld) counters() ([]uint64, error) {
	var cursor ebpf.MapBatchCursor
	n, err := w.tables().Stats.BatchLookup(&cursor, w.statKeys, w.statVals, nil)
	if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
		n, err = w.countersOneByOne()
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	if n != len(w.statKeys) {
		return nil, fmt.Errorf("read stats: %d of %d counters", n, len(w.statKeys))
	}
	out := make([]uint64, n)
	for i, k := range w.statKeys {
		for _, c := range w.statVals[i*w.ncpu : (i+1)*w.ncpu] {
			out[k] += c.Packets
		}
	}
	return out, nil
}

func (w *fuzzWorld) countersOneByOne() (int, error) {
	var perCPU []maps.Counter
	for i := range w.statKeys {
		w.statKeys[i] = uint32(i)
		if err := w.tables().Stats.Lookup(uint32(i), &perCPU); err != nil {
			return i, err
		}
		copy(w.statVals[i*w.ncpu:(i+1)*w.ncpu], perCPU)
	}
	return len(w.statKeys), nil
}

// fuzzRun is one program run on one frame.
type fuzzRun struct {
	prog  *fuzzProg
	mode  skbMode
	frame int
	in    []byte
	out   []byte
	ret   uint32
	err   error
	delta []uint64 // packets each counter gained
}

// run resets the maps and runs every frame through every program, for
// each checksum mode; in the test namespace, so that routes and sockets
// are the test's own.
func (w *fuzzWorld) run(opts uint8, frames [][]byte) ([]fuzzRun, error) {
	var runs []fuzzRun
	var err error
	w.ns.do(func() {
		for _, mode := range w.modes {
			if err = w.reset(opts); err != nil {
				return
			}
			var before, after []uint64
			if before, err = w.counters(); err != nil {
				return
			}
			for i, fr := range frames {
				for p := range w.progs {
					prog := &w.progs[p]
					// CHECKSUM_COMPLETE covers the test run's data from
					// byte 14: for a program whose IP header starts at
					// byte 0 it splits the header, and a correct rewrite
					// of it looks wrong.
					if prog.l3 && mode.flags != 0 {
						continue
					}
					in := fr
					if prog.l3 {
						in = fr[fuzzEthLen:]
					}
					r := fuzzRun{prog: prog, mode: mode, frame: i, in: in}
					ro := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Flags: mode.flags}
					r.ret, r.err = prog.prog.Run(&ro)
					r.out = ro.DataOut
					if after, err = w.counters(); err != nil {
						return
					}
					r.delta = make([]uint64, len(after))
					for k := range after {
						r.delta[k] = after[k] - before[k]
					}
					before = after
					runs = append(runs, r)
				}
			}
		}
	})
	return runs, err
}

// exercise runs the frames of one input (with their checksums made right
// unless opts says raw) and holds every run to the invariants.
func (w *fuzzWorld) exercise(t *testing.T, opts uint8, frames [][]byte) []fuzzRun {
	t.Helper()
	if opts&fuzzOptRaw == 0 {
		for _, fr := range frames {
			fuzzFixChecksums(fr, fuzzEthLen)
		}
	}
	runs, err := w.run(opts, frames)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		w.check(t, opts, r)
	}
	return runs
}

// tc actions as a test run returns them.
const (
	fuzzActUnspec   = actUnspec
	fuzzActShot     = 2
	fuzzActRedirect = 7
)

// check holds one run to the invariants. It reports whether the run
// passed.
func (w *fuzzWorld) check(t *testing.T, opts uint8, r fuzzRun) bool {
	t.Helper()
	p := r.prog
	fail := func(format string, args ...any) bool {
		t.Helper()
		out := "(none)\n"
		if r.err == nil {
			out = fuzzHex(r.out)
		}
		t.Errorf("%s (%s, options %#x, frame %d, returned %#x): %s\nin:\n%sout:\n%s",
			p.name, r.mode.name, opts, r.frame, r.ret, fmt.Sprintf(format, args...), fuzzHex(r.in), out)
		return false
	}
	if r.err != nil {
		if errors.Is(r.err, unix.EINVAL) && fuzzRefused(r.in) {
			return true // the test run's limits, not the program's
		}
		if errors.Is(r.err, unix.EBADMSG) {
			return fail("skb->csum no longer matches the packet (EBADMSG): a rewrite did not carry a CHECKSUM_COMPLETE sum along")
		}
		return fail("run: %v", r.err)
	}

	// One verdict, counted once.
	verdict := -1
	for i, d := range r.delta {
		if d == 0 || w.aux[i] {
			continue
		}
		if verdict >= 0 || d != 1 {
			return fail("counted verdicts %s", fuzzDeltas(r.delta))
		}
		verdict = i
	}
	fibTooBig := slices.Index(maps.StatNames, "fib_too_big")
	redirect := slices.Index(maps.StatNames, "redirect")
	if verdict < 0 && r.delta[fibTooBig] == 1 {
		verdict = fibTooBig // the bridge hands a packet too big to forward to the stack
	}
	if verdict < 0 {
		return fail("no verdict counted: %s", fuzzDeltas(r.delta))
	}
	fuzzCover(verdict)
	name := maps.StatNames[verdict]

	switch r.ret {
	case fuzzActUnspec, fuzzActShot, fuzzActRedirect:
	default:
		return fail("verdict %s returned %#x: not pass, drop or redirect", name, r.ret)
	}
	if name == "drop_frag_needed" && r.ret == fuzzActRedirect {
		// The hairpinned datagram is dropped and its sender told:
		// what goes back is the ICMP error.
		if msg := fuzzCheckFragNeeded(r.out); msg != "" {
			return fail("verdict %s: %s", name, msg)
		}
		return true
	}
	if w.drop[verdict] != (r.ret == fuzzActShot) {
		return fail("verdict %s returned %#x: drops and TC_ACT_SHOT must go together", name, r.ret)
	}
	if r.ret == fuzzActRedirect && !w.translated[verdict] && name != "endpoint_redirect" {
		return fail("verdict %s redirected a packet it did not translate", name)
	}
	if !p.endpoint && (r.delta[redirect] == 1) != (r.ret == fuzzActRedirect) {
		return fail("verdict %s returned %#x and counted %d redirects", name, r.ret, r.delta[redirect])
	}
	if r.ret == fuzzActShot {
		return true // what a dropped packet looks like does not matter
	}

	// Where the IP header is in the output: a program for a device
	// without an Ethernet header gives a packet it forwards one.
	l3in, l3out := fuzzEthLen, fuzzEthLen
	if p.l3 {
		l3in, l3out = 0, 0
		if r.ret == fuzzActRedirect && len(r.out) == len(r.in)+fuzzEthLen {
			l3out = fuzzEthLen
		}
	}
	if len(r.out)-l3out != len(r.in)-l3in {
		return fail("verdict %s left %d bytes of %d", name, len(r.out), len(r.in))
	}

	if !w.translated[verdict] {
		if !bytes.Equal(r.out, r.in) {
			off := 0
			for r.in[off] == r.out[off] {
				off++
			}
			return fail("verdict %s translates nothing, yet the packet changed at byte %d", name, off)
		}
	} else if msg := fuzzCompareChecksums(r.in, l3in, r.out, l3out); msg != "" {
		return fail("verdict %s: %s", name, msg)
	}

	if p.egress {
		if src, ok := fuzzIPv6Source(r.out, l3out); ok {
			for _, n := range w.masquerading {
				if n.Contains(src) && !fuzzIsGateway6(src) {
					return fail("verdict %s let %s leave the uplink: its network %s masquerades", name, src, n)
				}
			}
		}
		if src, ok := fuzzIPv4Source(r.out, l3out); ok {
			for _, n := range w.masquerading {
				// A gateway is the host's own address (guard_private_source4
				// lets the host's packets go).
				if n.Contains(src) && !fuzzIsGateway(src) {
					return fail("verdict %s let %s leave the uplink: its network %s masquerades", name, src, n)
				}
			}
		}
	}
	return true
}

// fuzzCheckFragNeeded says what is wrong with an ICMP "fragmentation
// needed" (or, for IPv6, Packet Too Big) bridge_ingress sends back, or "".
func fuzzCheckFragNeeded(out []byte) string {
	const ipLen, icmpLen, quoteLen = 20, 8, 28
	if len(out) >= fuzzEthLen && binary.BigEndian.Uint16(out[12:14]) == 0x86dd {
		return fuzzCheckTooBig6(out)
	}
	if len(out) != fuzzEthLen+ipLen+icmpLen+quoteLen {
		return fmt.Sprintf("frag-needed of %d bytes, want %d", len(out), fuzzEthLen+ipLen+icmpLen+quoteLen)
	}
	ip := out[fuzzEthLen:]
	icmp := ip[ipLen:]
	switch {
	case ip[0] != 0x45 || ip[9] != 1:
		return "frag-needed is not a plain IPv4 ICMP packet"
	case fuzzOnesSum(ip[:ipLen]) != 0xffff:
		return "frag-needed has a bad IP header checksum"
	case icmp[0] != 3 || icmp[1] != 4:
		return fmt.Sprintf("ICMP type %d code %d, want 3/4", icmp[0], icmp[1])
	case fuzzOnesSum(icmp) != 0xffff:
		return "frag-needed has a bad ICMP checksum"
	case binary.BigEndian.Uint16(icmp[6:8]) < 68:
		return fmt.Sprintf("frag-needed names MTU %d", binary.BigEndian.Uint16(icmp[6:8]))
	case !bytes.Equal(ip[16:20], icmp[icmpLen+12:icmpLen+16]):
		return "frag-needed does not go back to the quoted datagram's source"
	}
	return ""
}

// fuzzCheckTooBig6 says what is wrong with an ICMPv6 Packet Too Big
// bridge_ingress sends back, or "".
func fuzzCheckTooBig6(out []byte) string {
	const ipLen, icmpLen, quoteLen = 40, 8, 48
	if len(out) != fuzzEthLen+ipLen+icmpLen+quoteLen {
		return fmt.Sprintf("Packet Too Big of %d bytes, want %d", len(out), fuzzEthLen+ipLen+icmpLen+quoteLen)
	}
	ip := out[fuzzEthLen:]
	icmp := ip[ipLen:]
	switch {
	case ip[0]>>4 != 6 || ip[6] != nextHeaderICMPv6 || int(binary.BigEndian.Uint16(ip[4:6])) != icmpLen+quoteLen:
		return "Packet Too Big is not a plain ICMPv6 packet of its length"
	case icmp[0] != 2 || icmp[1] != 0:
		return fmt.Sprintf("ICMPv6 type %d code %d, want 2/0", icmp[0], icmp[1])
	case !l4SumOK(ip[8:24], ip[24:40], layers.IPProtocolICMPv6, icmp):
		return "Packet Too Big has a bad ICMPv6 checksum"
	case binary.BigEndian.Uint32(icmp[4:8]) < 1280:
		return fmt.Sprintf("Packet Too Big names MTU %d", binary.BigEndian.Uint32(icmp[4:8]))
	case !bytes.Equal(ip[24:40], icmp[icmpLen+8:icmpLen+24]):
		return "Packet Too Big does not go back to the quoted datagram's source"
	}
	return ""
}

// fuzzOnesSum is the ones' complement sum of b, folded.
func fuzzOnesSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func fuzzIsGateway(a netip.Addr) bool {
	for _, n := range fzNetworks {
		if n.Gateway == a {
			return true
		}
	}
	return false
}

// fuzzRefused says whether a test run refuses data for its own reasons:
// less than an Ethernet header, or an IPv4 or IPv6 EtherType (bytes
// 12-13) with less than that protocol's header behind it. Real traffic
// never reaches a program like that.
func fuzzRefused(in []byte) bool {
	if len(in) < fuzzEthLen {
		return true
	}
	switch binary.BigEndian.Uint16(in[12:]) {
	case unix.ETH_P_IP:
		return len(in) < fuzzEthLen+20
	case unix.ETH_P_IPV6:
		return len(in) < fuzzEthLen+40
	}
	return false
}

// fuzzIPv4Source is the source address of an IPv4 packet: IPv4 by its
// EtherType as a test run reads it (bytes 12-13, which for a packet
// starting at its IP header are its source address's first two), with a
// version 4 header of at least five words.
func fuzzIPv4Source(p []byte, l3 int) (netip.Addr, bool) {
	if len(p) < fuzzEthLen || binary.BigEndian.Uint16(p[12:]) != unix.ETH_P_IP {
		return netip.Addr{}, false
	}
	if len(p) < l3+20 || p[l3]>>4 != 4 || p[l3]&0x0f < 5 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(p[l3+12 : l3+16])), true
}

func fuzzIPv6Source(p []byte, l3 int) (netip.Addr, bool) {
	if len(p) < fuzzEthLen || binary.BigEndian.Uint16(p[12:]) != unix.ETH_P_IPV6 {
		return netip.Addr{}, false
	}
	if len(p) < l3+40 || p[l3]>>4 != 6 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(p[l3+8 : l3+24])), true
}

// fuzzIsGateway6 says whether a is one of the IPv6 world's gateways: the
// host's own addresses.
func fuzzIsGateway6(a netip.Addr) bool {
	return a == v6GW1 || a == v6GW2 || a == netip.MustParseAddr("fd00:20::1")
}

func fuzzDeltas(delta []uint64) string {
	var parts []string
	for i, d := range delta {
		if d != 0 {
			parts = append(parts, fmt.Sprintf("%s+%d", maps.StatNames[i], d))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func fuzzHex(b []byte) string {
	var s strings.Builder
	for off := 0; off < len(b); off += 16 {
		fmt.Fprintf(&s, "%04x  % x\n", off, b[off:min(off+16, len(b))])
	}
	return s.String()
}

// ---- checksums ----

// fuzzSum is one checksum a receiver would verify.
type fuzzSum struct {
	name       string
	start, end int // the bytes it covers
	at         int // the checksum field
	// pseudo is where the pseudo header's addresses are (-1: none); proto
	// is its protocol.
	pseudo int
	proto  byte
	udp    bool // 0 means "no checksum"
}

type fuzzSumState int

const (
	fuzzSumBad fuzzSumState = iota
	fuzzSumOK
	fuzzSumNone // a UDP checksum of 0
)

func (s fuzzSum) sum(p []byte) uint32 {
	var sum uint32
	if s.pseudo >= 0 {
		sum = onesSum(sum, p[s.pseudo:s.pseudo+8])
		sum = onesSum(sum, []byte{0, s.proto})
		sum = onesSum(sum, binary.BigEndian.AppendUint16(nil, uint16(s.end-s.start)))
	}
	return onesSum(sum, p[s.start:s.end])
}

func (s fuzzSum) state(p []byte) fuzzSumState {
	if s.udp && binary.BigEndian.Uint16(p[s.at:]) == 0 {
		return fuzzSumNone
	}
	if s.sum(p) == 0xffff {
		return fuzzSumOK
	}
	return fuzzSumBad
}

func (s fuzzSum) fix(p []byte) {
	if s.udp && binary.BigEndian.Uint16(p[s.at:]) == 0 {
		return
	}
	p[s.at], p[s.at+1] = 0, 0
	c := ^uint16(s.sum(p))
	if s.udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(p[s.at:], c)
}

// fuzzSums finds the checksums of the IPv4 packet at l3 that a receiver
// would verify: the IP header's; TCP, UDP or ICMP when the datagram is
// whole (no fragment) and its total length fits in the frame; in an ICMP
// error, the quoted IP header's, and the quoted TCP, UDP or ICMP checksum
// when the whole quoted datagram is there. Inner ones come before outer ones,
// so fixing them in order leaves every one right.
func fuzzSums(p []byte, l3 int) []fuzzSum {
	if len(p) < l3+20 || p[l3]>>4 != 4 {
		return nil
	}
	ihl := int(p[l3]&0x0f) * 4
	if ihl < 20 || len(p) < l3+ihl {
		return nil
	}
	ip := fuzzSum{name: "IPv4 header", start: l3, end: l3 + ihl, at: l3 + 10, pseudo: -1}
	total := int(binary.BigEndian.Uint16(p[l3+2:]))
	fragment := binary.BigEndian.Uint16(p[l3+6:])&0x3fff != 0
	end := l3 + total
	if total < ihl || end > len(p) || fragment {
		return []fuzzSum{ip}
	}
	l4 := l3 + ihl
	var sums []fuzzSum
	switch proto := p[l3+9]; proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		if s, ok := fuzzL4Sum("", p, l3, l4, end, proto); ok {
			sums = append(sums, s)
		}
	case unix.IPPROTO_ICMP:
		if end-l4 < 8 {
			break
		}
		switch p[l4] {
		case 3, 4, 11, 12: // errors
			sums = append(sums, fuzzQuotedSums(p, l4+8, end)...)
		}
		sums = append(sums, fuzzSum{name: "ICMP", start: l4, end: end, at: l4 + 2, pseudo: -1})
	}
	return append(sums, ip)
}

func fuzzQuotedSums(p []byte, q, end int) []fuzzSum {
	if end-q < 20 || p[q]>>4 != 4 {
		return nil
	}
	ihl := int(p[q]&0x0f) * 4
	if ihl < 20 || q+ihl > end {
		return nil
	}
	sums := []fuzzSum{{name: "quoted IPv4 header", start: q, end: q + ihl, at: q + 10, pseudo: -1}}
	total := int(binary.BigEndian.Uint16(p[q+2:]))
	fragment := binary.BigEndian.Uint16(p[q+6:])&0x3fff != 0
	if total < ihl || q+total > end || fragment {
		return sums
	}
	switch proto := p[q+9]; proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		if s, ok := fuzzL4Sum("quoted ", p, q, q+ihl, q+total, proto); ok {
			sums = append(sums, s)
		}
	case unix.IPPROTO_ICMP:
		if total-ihl >= 8 { // a quoted echo's identifier is translated
			sums = append(sums, fuzzSum{name: "quoted ICMP", start: q + ihl, end: q + total, at: q + ihl + 2, pseudo: -1})
		}
	}
	return sums
}

// fuzzL4Sum is the TCP or UDP checksum of the segment from l4 to end, if
// it is long enough to be one (UDP: as long as its own length says).
func fuzzL4Sum(prefix string, p []byte, l3, l4, end int, proto byte) (fuzzSum, bool) {
	if proto == unix.IPPROTO_TCP {
		if end-l4 < 20 {
			return fuzzSum{}, false
		}
		return fuzzSum{name: prefix + "TCP", start: l4, end: end, at: l4 + 16, pseudo: l3 + 12, proto: proto}, true
	}
	if end-l4 < 8 {
		return fuzzSum{}, false
	}
	ulen := int(binary.BigEndian.Uint16(p[l4+4:]))
	if ulen < 8 || l4+ulen > end {
		return fuzzSum{}, false
	}
	return fuzzSum{name: prefix + "UDP", start: l4, end: l4 + ulen, at: l4 + 6, pseudo: l3 + 12, proto: proto, udp: true}, true
}

// fuzzFixChecksums makes every checksum fuzzSums finds right.
func fuzzFixChecksums(p []byte, l3 int) {
	for _, s := range fuzzSums(p, l3) {
		s.fix(p)
	}
}

// fuzzCompareChecksums reports a checksum that was right in the input and
// is not in the output, or a UDP "no checksum" that did not stay one.
func fuzzCompareChecksums(in []byte, l3in int, out []byte, l3out int) string {
	sin, sout := fuzzSums(in, l3in), fuzzSums(out, l3out)
	if len(sin) != len(sout) {
		return fmt.Sprintf("the translation changed the packet's layout: checksums %v, then %v", fuzzSumNames(sin), fuzzSumNames(sout))
	}
	for i, s := range sin {
		before, after := s.state(in), sout[i].state(out)
		if s.name != sout[i].name {
			return fmt.Sprintf("the translation changed the packet's layout: checksums %v, then %v", fuzzSumNames(sin), fuzzSumNames(sout))
		}
		field := binary.BigEndian.Uint16(out[sout[i].at:])
		switch {
		case before == fuzzSumOK && after == fuzzSumNone:
			return fmt.Sprintf("%s checksum became 0, which means none: it must be sent as 0xffff", s.name)
		case before == fuzzSumOK && after != fuzzSumOK:
			return fmt.Sprintf("%s checksum %#04x is wrong; it was right", s.name, field)
		case before == fuzzSumNone && after != fuzzSumNone:
			return fmt.Sprintf("%s checksum was 0 (none) and became %#04x", s.name, field)
		}
	}
	return ""
}

func fuzzSumNames(sums []fuzzSum) []string {
	var names []string
	for _, s := range sums {
		names = append(names, s.name)
	}
	return names
}

// fuzzCover turns a verdict into Go coverage, which is all the fuzzer
// sees: without it, an input taking the programs down a path no other
// took would look like any other and not be kept.
func fuzzCover(verdict int) int {
	switch verdict {
	case 0:
		return 100
	case 1:
		return 101
	case 2:
		return 102
	case 3:
		return 103
	case 4:
		return 104
	case 5:
		return 105
	case 6:
		return 106
	case 7:
		return 107
	case 8:
		return 108
	case 9:
		return 109
	case 10:
		return 110
	case 11:
		return 111
	case 12:
		return 112
	case 13:
		return 113
	case 14:
		return 114
	case 15:
		return 115
	case 16:
		return 116
	case 17:
		return 117
	case 18:
		return 118
	case 19:
		return 119
	case 20:
		return 120
	case 21:
		return 121
	case 22:
		return 122
	case 23:
		return 123
	case 24:
		return 124
	case 25:
		return 125
	case 26:
		return 126
	case 27:
		return 127
	case 28:
		return 128
	case 29:
		return 129
	case 30:
		return 130
	case 31:
		return 131
	case 32:
		return 132
	case 33:
		return 133
	case 34:
		return 134
	case 35:
		return 135
	case 36:
		return 136
	case 37:
		return 137
	}
	return -1
}

// ---- the test namespace ----

// fuzzNetns runs test runs in a network namespace of their own: one
// thread enters it and serves every run, so that FIB lookups, neighbours
// and socket lookups see the routes and sockets set up here, never the
// host's. The thread stays locked to its goroutine: both end together,
// and the namespace with them.
type fuzzNetns struct {
	work        chan func()
	uplinkIndex int
}

func newFuzzNetns(tb testing.TB) *fuzzNetns {
	tb.Helper()
	n := &fuzzNetns{work: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		idx, err := setupFuzzNetns()
		n.uplinkIndex = idx
		ready <- err
		if err != nil {
			return
		}
		for fn := range n.work {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { close(n.work) })
	return n
}

func (n *fuzzNetns) do(fn func()) {
	done := make(chan struct{})
	n.work <- func() {
		defer close(done)
		fn()
	}
	<-done
}

// setupFuzzNetns builds the routes the programs look up: an uplink with
// the host's addresses and a default route, a "bridge" with every
// network's gateway (MTU 1400, below the uplink's, so a packet can be too
// big for one and not the other), neighbours for some hosts and not
// others, and forwarding on. It returns the uplink's ifindex.
func setupFuzzNetns() (int, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return 0, fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return 0, fmt.Errorf("set lo up: %w", err)
	}
	devs := []struct {
		name  string
		mtu   int
		addrs []string
		neigh []netip.Addr
	}{
		{"uplink0", 1500, []string{"192.0.2.1/24", "192.0.2.2/24"}, []netip.Addr{fzNextHop}},
		{"bridge0", 1400, []string{"172.18.0.1/16", "172.19.0.1/16", "172.20.0.1/16", "8.0.1.1/24"}, []netip.Addr{backend, fzC2a}},
	}
	var uplink int
	for i, d := range devs {
		// veth pairs, both ends here and up, for a carrier: kernels
		// built without the dummy driver have them.
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: d.mtu}, PeerName: d.name + "p"}
		if err := netlink.LinkAdd(veth); err != nil {
			return 0, fmt.Errorf("add %s: %w", d.name, err)
		}
		link, err := netlink.LinkByName(d.name)
		if err != nil {
			return 0, fmt.Errorf("find %s: %w", d.name, err)
		}
		peer, err := netlink.LinkByName(veth.PeerName)
		if err != nil {
			return 0, fmt.Errorf("find %s: %w", veth.PeerName, err)
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return 0, fmt.Errorf("set %s up: %w", veth.PeerName, err)
		}
		if i == 0 {
			uplink = link.Attrs().Index
		}
		for _, a := range d.addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return 0, err
			}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return 0, fmt.Errorf("add %s to %s: %w", a, d.name, err)
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return 0, fmt.Errorf("set %s up: %w", d.name, err)
		}
		for _, a := range d.neigh {
			nb := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: a.AsSlice(), HardwareAddr: macPeer}
			if err := netlink.NeighAdd(nb); err != nil {
				return 0, fmt.Errorf("add neighbour %s on %s: %w", a, d.name, err)
			}
		}
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: uplink, Gw: fzNextHop.AsSlice()}); err != nil {
		return 0, fmt.Errorf("add default route: %w", err)
	}
	// /proc/sys/net is the reading thread's namespace's.
	for _, conf := range []string{"all", "default", "lo"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+conf+"/forwarding", []byte("1"), 0o644); err != nil {
			return 0, fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return uplink, nil
}

// ---- seeds ----

type fuzzSeed struct {
	name   string
	opts   uint8
	frames [][]byte
}

func fzEcho(tb testing.TB, src, dst netip.Addr, typ uint8, id uint16) []byte {
	ip := ipv4(src, dst, layers.IPProtocolICMPv4)
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: id, Seq: 1}
	return frame(tb, serialize(tb, ip, icmp, gopacket.Payload("pontoon ping")))
}

func fzARP(tb testing.TB, sender netip.Addr) []byte {
	eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: macPeer, SourceProtAddress: sender.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: gateway.AsSlice(),
	}
	return serialize(tb, eth, arp)
}

// fzFragments cuts an IPv4 datagram (built whole, so its L4 checksum covers
// all of it) in two at L4 offset cut, a multiple of 8.
func fzFragments(tb testing.TB, datagram []byte, id uint16, cut int) [][]byte {
	ihl := int(datagram[0]&0x0f) * 4
	src := netip.AddrFrom4([4]byte(datagram[12:16]))
	dst := netip.AddrFrom4([4]byte(datagram[16:20]))
	proto := layers.IPProtocol(datagram[9])
	l4 := datagram[ihl:]
	first := ipv4(src, dst, proto, func(ip *layers.IPv4) { ip.Id, ip.Flags = id, layers.IPv4MoreFragments })
	later := ipv4(src, dst, proto, func(ip *layers.IPv4) { ip.Id, ip.Flags, ip.FragOffset = id, 0, uint16(cut/8) })
	return [][]byte{
		frame(tb, serialize(tb, first, gopacket.Payload(l4[:cut]))),
		frame(tb, serialize(tb, later, gopacket.Payload(l4[cut:]))),
	}
}

// fzTrailer takes the last n bytes of a frame out of its IPv4 datagram:
// they stay in the frame, past the total length, as a trailer. (The
// harness makes the checksums right for the shorter datagram.)
func fzTrailer(fr []byte, n int) []byte {
	total := binary.BigEndian.Uint16(fr[fuzzEthLen+2:])
	binary.BigEndian.PutUint16(fr[fuzzEthLen+2:], total-uint16(n))
	return fr
}

func fzWscaleSYN(tb testing.TB, src, dst netip.AddrPort) []byte {
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: 1000, Window: 64240, SYN: true,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return frame(tb, serialize(tb, ip, tcp))
}

// fzUDPZeroAfter is a datagram from src to dst whose payload makes the
// checksum 0 once dst becomes to: a translation must then send 0xffff, as 0
// would say "no checksum".
func fzUDPZeroAfter(tb testing.TB, src, dst, to netip.AddrPort) []byte {
	payload := []byte("pontoon!\x00\x00")
	const ulen = 8 + 10
	sum := onesSum(0, slices.Concat(src.Addr().AsSlice(), to.Addr().AsSlice(), []byte{0, unix.IPPROTO_UDP, 0, ulen}))
	sum = onesSum(sum, binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, src.Port()), to.Port()))
	sum = onesSum(sum, []byte{0, ulen, 0, 0})
	sum = onesSum(sum, payload)
	binary.BigEndian.PutUint16(payload[8:], uint16(0xffff-sum))
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return frame(tb, serialize(tb, ip, udp, gopacket.Payload(payload)))
}

func fzBigUDP(tb testing.TB, src, dst netip.AddrPort, size int) []byte {
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return frame(tb, serialize(tb, ip, udp, gopacket.Payload(bytes.Repeat([]byte{0xa5}, size))))
}

// fuzzSeeds are well-formed frames down every path of every program.
func fuzzSeeds(tb testing.TB) []fuzzSeed {
	c8 := func(port uint16) netip.AddrPort { return ap(fzClient8, port) }
	srv := func(port uint16) netip.AddrPort { return ap(fzServer, port) }
	one := func(name string, fr []byte) fuzzSeed { return fuzzSeed{name: name, frames: [][]byte{fr}} }
	badIPSum := tcpFrame(tb, clientPort, tcpWeb.Host, syn)
	badIPSum[fuzzEthLen+10] ^= 0xff
	badTCPSum := tcpFrame(tb, clientPort, tcpWeb.Host, syn)
	badTCPSum[fuzzEthLen+20+16] ^= 0xff
	gre := frame(tb, serialize(tb, ipv4(backend, fzServer, layers.IPProtocolGRE), gopacket.Payload("pontoon gre")))
	unknownLater := fzFragments(tb, udpDatagram(tb, ap(backend, 40001), srv(53)), 0x5151, 16)[1]
	return append(append(fuzzSeedsIPv6(tb), fuzzSeedsIPv6Ports(tb)...), []fuzzSeed{
		// DNAT and its refusals, on uplink ingress
		one("dnat tcp syn", tcpFrame(tb, clientPort, tcpWeb.Host, syn)),
		one("dnat tcp syn with ip options", tcpFrame(tb, c8(40004), tcpWeb.Host, syn, routerAlert)),
		one("dnat udp", udpFrame(tb, c8(40000), udpApp.Host)),
		one("dnat udp without checksum", frame(tb, noUDPChecksum(udpDatagram(tb, c8(40000), udpApp.Host)))),
		one("dnat wildcard", tcpFrame(tb, c8(40002), ap(hostIP2, 8000), ack)),
		one("dnat to the l3 network", tcpFrame(tb, c8(40001), ap(hostIP, 8443), ack)),
		one("dnat to the routed network", tcpFrame(tb, c8(40006), ap(hostIP, 8081), syn)),
		one("dnat udp wildcard to the l3 network", udpFrame(tb, c8(40007), ap(hostIP2, 5353))),
		one("dnat syn with window scale", fzWscaleSYN(tb, c8(40008), tcpWeb.Host)),
		one("dnat udp whose new checksum is 0", fzUDPZeroAfter(tb, c8(40000), udpApp.Host, udpApp.Backend)),
		one("loopback binding", tcpFrame(tb, clientPort, ap(loopback, 80), syn)),
		one("ack of no flow", tcpFrame(tb, c8(40099), tcpWeb.Host, ack)),
		one("to a container, not published", tcpFrame(tb, clientPort, ap(backend, 8080), syn)),
		one("to the routed network", tcpFrame(tb, clientPort, ap(fzC3, 80), syn)),
		one("too big for the bridge", fzBigUDP(tb, c8(40000), udpApp.Host, 1400)),
		// replies of published ports, on uplink egress
		one("rnat tcp", tcpFrame(tb, tcpWeb.Backend, clientPort, ack)),
		one("rnat udp", udpFrame(tb, udpApp.Backend, c8(40000))),
		one("rnat udp without checksum", frame(tb, noUDPChecksum(udpDatagram(tb, udpApp.Backend, c8(40000))))),
		one("rnat from the l3 network", tcpFrame(tb, ap(fzC4, 8443), c8(40001), ack)),
		one("rnat syn-ack of an unanswered flow", tcpFrame(tb, tcpWeb.Backend, c8(40003), syn|ack)),
		one("rnat wildcard", tcpFrame(tb, ap(backend2, 9000), c8(40002), fin|ack)),
		// masquerade, on uplink egress (and the bridge with FIB redirect)
		one("masquerade tcp", tcpFrame(tb, ap(backend, 40000), srv(443), ack)),
		one("masquerade new tcp flow", tcpFrame(tb, ap(backend2, 45000), srv(80), syn)),
		one("masquerade udp", udpFrame(tb, ap(backend, 40001), srv(53))),
		one("masquerade new udp flow", udpFrame(tb, ap(backend2, 5353), srv(53))),
		one("masquerade echo", fzEcho(tb, backend, fzServer, layers.ICMPv4TypeEchoRequest, 7)),
		one("masquerade new echo", fzEcho(tb, backend2, fzServer, layers.ICMPv4TypeEchoRequest, 99)),
		one("masquerade from the l3 network", tcpFrame(tb, ap(fzC4, 40000), srv(443), ack)),
		one("masquerade from a no-icc network", udpFrame(tb, ap(fzC2a, 40050), srv(53))),
		one("a protocol masquerade does not know", gre),
		{name: "masquerade with its one port taken", opts: fuzzOptOnePort, frames: [][]byte{tcpFrame(tb, ap(backend2, 5555), srv(443), syn)}},
		// replies of masqueraded flows, on uplink ingress
		one("snat reverse tcp", tcpFrame(tb, srv(443), ap(hostIP, 40000), syn|ack)),
		one("snat reverse udp", udpFrame(tb, srv(53), ap(hostIP, 40001))),
		one("snat reverse echo reply", fzEcho(tb, fzServer, hostIP, layers.ICMPv4TypeEchoReply, 7)),
		one("snat reverse into the l3 network", tcpFrame(tb, srv(443), ap(hostIP, 40002), ack)),
		one("snat reverse half without its forward half", udpFrame(tb, srv(123), ap(hostIP, 40123))),
		// ICMP errors
		one("icmp dnat", icmpErrorFrame(tb, fzRouter, hostIP, fragNeeded, 1400, tcpDatagram(tb, tcpWeb.Host, clientPort, ack), 0)),
		one("icmp dnat quoting eight bytes", icmpErrorFrame(tb, fzRouter, hostIP, fragNeeded, 1400, tcpDatagram(tb, tcpWeb.Host, clientPort, ack), 28)),
		one("icmp rnat", icmpErrorFrame(tb, backend, fzClient8, portUnreachable, 0, udpDatagram(tb, c8(40000), udpApp.Backend), 0)),
		one("icmp rnat from the gateway", icmpErrorFrame(tb, gateway, client, ttlExceeded, 0, tcpDatagram(tb, clientPort, tcpWeb.Backend, ack), 0)),
		one("icmp snat reverse", icmpErrorFrame(tb, fzRouter, hostIP, portUnreachable, 0, udpDatagram(tb, ap(hostIP, 40001), srv(53)), 0)),
		one("icmp snat reverse quoting eight bytes of tcp", icmpErrorFrame(tb, fzRouter, hostIP, fragNeeded, 1400, tcpDatagram(tb, ap(hostIP, 40000), srv(443), ack), 28)),
		one("icmp snat reverse quoting its ports past the datagram's end",
			fzTrailer(icmpErrorFrame(tb, fzRouter, hostIP, portUnreachable, 0, udpDatagram(tb, ap(hostIP, 40001), srv(53)), 28), 8)),
		one("icmp dnat quoting eight bytes of tcp, the rest a trailer",
			fzTrailer(icmpErrorFrame(tb, fzRouter, hostIP, fragNeeded, 1400, tcpDatagram(tb, tcpWeb.Host, clientPort, ack), 40), 12)),
		one("icmp rnat from another container", icmpErrorFrame(tb, backend2, client, ttlExceeded, 0, tcpDatagram(tb, clientPort, tcpWeb.Backend, ack), 0)),
		one("icmp dnat quoting ip options", icmpErrorFrame(tb, fzRouter, hostIP, fragNeeded, 1400, tcpDatagram(tb, tcpWeb.Host, clientPort, ack, routerAlert), 0)),
		one("icmp error quoting an echo", icmpErrorFrame(tb, fzRouter, hostIP, ttlExceeded, 0,
			fzEcho(tb, hostIP, fzServer, layers.ICMPv4TypeEchoRequest, 7)[fuzzEthLen:], 0)),
		one("icmp snat", icmpErrorFrame(tb, backend, fzServer, portUnreachable, 0, udpDatagram(tb, srv(53), ap(backend, 40001)), 0)),
		one("icmp snat from the l3 network", icmpErrorFrame(tb, fzC4, fzServer, portUnreachable, 0, tcpDatagram(tb, srv(443), ap(fzC4, 40000), ack), 0)),
		// the bridge: hairpin and isolation
		one("hairpin", tcpFrame(tb, ap(fzC2b, 41000), ap(hostIP, 9443), ack)),
		one("hairpin new flow", tcpFrame(tb, ap(backend2, 42000), tcpWeb.Host, syn)),
		one("hairpin too big for the bridge", fzBigUDP(tb, ap(backend2, 42001), udpApp.Host, 1400)),
		one("hairpin reply", tcpFrame(tb, ap(fzC2a, 443), ap(fzGW2, 41000), ack)),
		one("across networks", tcpFrame(tb, ap(backend, 40000), ap(fzC2a, 443), syn)),
		one("to another network's gateway", tcpFrame(tb, ap(backend, 40000), ap(fzGW2, 22), syn)),
		// the endpoint's veth
		one("endpoint to its network", tcpFrame(tb, ap(backend, 40000), ap(backend2, 80), syn)),
		one("endpoint without icc", udpFrame(tb, ap(fzC2a, 5000), ap(fzC2b, 5000))),
		one("endpoint spoofing", tcpFrame(tb, ap(fzStray, 40000), srv(443), syn)),
		one("arp", arpFrame(tb)),
		one("arp from an endpoint", fzARP(tb, backend)),
		one("ipv6", ipv6Frame(tb)),
		one("neither ip nor arp", withByte(withByte(arpFrame(tb), 12, 0x88), 13, 0xcc)),
		// fragments
		{name: "fragments in", frames: fzFragments(tb, udpDatagram(tb, c8(40000), udpApp.Host), 0x2222, 16)},
		one("later fragment of a known datagram in", fzFragments(tb, udpDatagram(tb, c8(40000), udpApp.Host), 0x4242, 16)[1]),
		{name: "fragments out", frames: fzFragments(tb, udpDatagram(tb, ap(backend, 40001), srv(53)), 0x2323, 16)},
		one("later fragment of a known datagram out", fzFragments(tb, udpDatagram(tb, ap(backend, 40001), srv(53)), 0x4343, 16)[1]),
		one("later fragment of an unknown datagram out", unknownLater),
		{name: "echo reply fragments in", frames: fzFragments(tb, fzEcho(tb, fzServer, hostIP, layers.ICMPv4TypeEchoReply, 7)[fuzzEthLen:fuzzEthLen+40], 0x2424, 8)},
		// handshakes through both directions
		{name: "tcp handshake through dnat", frames: [][]byte{
			tcpFrame(tb, c8(40005), tcpWeb.Host, syn),
			tcpFrame(tb, tcpWeb.Backend, c8(40005), syn|ack),
			tcpFrame(tb, c8(40005), tcpWeb.Host, ack),
			tcpFrame(tb, c8(40005), tcpWeb.Host, rst),
		}},
		{name: "tcp handshake through masquerade", frames: [][]byte{
			tcpFrame(tb, ap(backend, 40010), srv(443), syn),
			tcpFrame(tb, srv(443), ap(hostIP, 40010), syn|ack),
			tcpFrame(tb, ap(backend, 40010), srv(443), ack),
			tcpFrame(tb, srv(443), ap(hostIP, 40010), fin|ack),
		}},
		// checksums that come wrong must not be "fixed" into right ones
		// nor the other way round
		{name: "bad ip checksum", opts: fuzzOptRaw, frames: [][]byte{badIPSum}},
		{name: "bad tcp checksum", opts: fuzzOptRaw, frames: [][]byte{badTCPSum}},
	}...)
}
