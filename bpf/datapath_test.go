package bpf_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/maps"
)

// actUnspec is TC_ACT_UNSPEC (-1) as BPF_PROG_TEST_RUN hands it back: a
// u32. No case here can make a rewrite fail, so TC_ACT_SHOT has no case.
const actUnspec = uint32(math.MaxUint32)

var (
	client   = netip.MustParseAddr("198.51.100.7")
	router   = netip.MustParseAddr("198.51.100.254")
	hostIP   = netip.MustParseAddr("192.0.2.1")
	hostIP2  = netip.MustParseAddr("192.0.2.2")
	notHost  = netip.MustParseAddr("203.0.113.9")
	gateway  = netip.MustParseAddr("172.18.0.1")
	backend  = netip.MustParseAddr("172.18.0.2")
	backend2 = netip.MustParseAddr("172.18.0.3")
	loopback = netip.MustParseAddr("127.0.0.1")

	clientPort = netip.AddrPortFrom(client, 40000)

	macUplink = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macPeer   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// Bindings the cases draw from.
var (
	tcpWeb = maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 80), Backend: ap(backend, 8080), ID: 1}
	udpApp = maps.Binding{Proto: maps.UDP, Host: ap(hostIP, 5300), Backend: ap(backend, 6300), ID: 2}
	tcpAny = maps.Binding{Proto: maps.TCP, Host: ap(netip.IPv4Unspecified(), 80), Backend: ap(backend2, 9090), ID: 3}
	tcpLo  = maps.Binding{Proto: maps.TCP, Host: ap(loopback, 80), Backend: ap(backend, 8080), ID: 4}
	tcpTLS = maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 443), Backend: ap(backend, 443), ID: 6}
)

// ---- packet builders ----

type tcpFlags uint8

const (
	fin tcpFlags = 1 << iota
	syn
	rst
	ack
)

type ipMod func(*layers.IPv4)

func moreFragments(ip *layers.IPv4) { ip.Flags = layers.IPv4MoreFragments }

func fragOffset(ip *layers.IPv4) { ip.Flags, ip.FragOffset = 0, 100 }

// routerAlert adds a four-byte option, making IHL 6.
func routerAlert(ip *layers.IPv4) {
	ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize packet: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

func ipv4(src, dst netip.Addr, proto layers.IPProtocol, mods ...ipMod) *layers.IPv4 {
	ip := &layers.IPv4{
		Version:  4,
		TTL:      64,
		Id:       0x1234,
		Flags:    layers.IPv4DontFragment,
		Protocol: proto,
		SrcIP:    src.AsSlice(),
		DstIP:    dst.AsSlice(),
	}
	for _, m := range mods {
		m(ip)
	}
	return ip
}

// tcpDatagram is an IPv4 datagram (no link header) carrying a TCP segment.
func tcpDatagram(t testing.TB, src, dst netip.AddrPort, f tcpFlags, mods ...ipMod) []byte {
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolTCP, mods...)
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()),
		DstPort: layers.TCPPort(dst.Port()),
		Seq:     1000,
		Window:  64240,
		FIN:     f&fin != 0,
		SYN:     f&syn != 0,
		RST:     f&rst != 0,
		ACK:     f&ack != 0,
	}
	if tcp.ACK {
		tcp.Ack = 5000
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload("pontoon tcp payload"))
}

func udpDatagram(t testing.TB, src, dst netip.AddrPort, mods ...ipMod) []byte {
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolUDP, mods...)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, udp, gopacket.Payload("pontoon udp payload"))
}

// noUDPChecksum clears the UDP checksum of a datagram: "no checksum".
func noUDPChecksum(d []byte) []byte {
	ihl := int(d[0]&0x0f) * 4
	d[ihl+6], d[ihl+7] = 0, 0
	return d
}

func icmpDatagram(t testing.TB, src, dst netip.Addr, tc layers.ICMPv4TypeCode, seq uint16, payload []byte) []byte {
	ip := ipv4(src, dst, layers.IPProtocolICMPv4)
	return serialize(t, ip, &layers.ICMPv4{TypeCode: tc, Id: 0, Seq: seq}, gopacket.Payload(payload))
}

// frame puts a datagram behind an Ethernet header (gopacket pads it to 60
// bytes, as a NIC would).
func frame(t testing.TB, datagram []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: macUplink, EthernetType: layers.EthernetTypeIPv4}
	return serialize(t, eth, gopacket.Payload(datagram))
}

func tcpFrame(t testing.TB, src, dst netip.AddrPort, f tcpFlags, mods ...ipMod) []byte {
	return frame(t, tcpDatagram(t, src, dst, f, mods...))
}

func udpFrame(t testing.TB, src, dst netip.AddrPort, mods ...ipMod) []byte {
	return frame(t, udpDatagram(t, src, dst, mods...))
}

// icmpErrorFrame quotes a datagram (whole, or its first quoteLen bytes
// when quoteLen > 0) in an ICMP error.
func icmpErrorFrame(t testing.TB, src, dst netip.Addr, tc layers.ICMPv4TypeCode, seq uint16, quoted []byte, quoteLen int) []byte {
	if quoteLen > 0 {
		quoted = quoted[:quoteLen]
	}
	return frame(t, icmpDatagram(t, src, dst, tc, seq, quoted))
}

var (
	portUnreachable = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)
	fragNeeded      = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded)
	ttlExceeded     = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeTTLExceeded)
	echoRequest     = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)
)

func arpFrame(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         layers.ARPRequest,
		SourceHwAddress:   macPeer,
		SourceProtAddress: client.AsSlice(),
		DstHwAddress:      make([]byte, 6),
		DstProtAddress:    hostIP.AsSlice(),
	}
	return serialize(t, eth, arp)
}

func ipv6Frame(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: macUplink, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{
		Version:    6,
		NextHeader: layers.IPProtocolUDP,
		HopLimit:   64,
		SrcIP:      netip.MustParseAddr("2001:db8::7").AsSlice(),
		DstIP:      netip.MustParseAddr("2001:db8::1").AsSlice(),
	}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 53}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, eth, ip, udp, gopacket.Payload("v6"))
}

// withByte returns a copy of p with p[off] = v.
func withByte(p []byte, off int, v byte) []byte {
	p = bytes.Clone(p)
	p[off] = v
	return p
}

// ---- map seeding and inspection ----

// netOrder gives the value a native uint16 map field must hold for the
// datapath to read port p in network byte order.
func netOrder(p uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, p))
}

func raw16(a netip.Addr) (out [16]byte) {
	if a.Is6() {
		return a.As16()
	}
	v4 := a.As4()
	copy(out[:], v4[:])
	return out
}

// family is the address family a map key carries for a.
func family(a netip.Addr) uint8 {
	if a.Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// putCT writes a DNAT reply entry the way ct_open_dnat4 would.
func putCT(t testing.TB, m *ebpf.Map, e maps.CTEntry) {
	t.Helper()
	putCTFlags(t, m, e, maps.CTDNATReply)
}

func putCTFlags(t testing.TB, m *ebpf.Map, e maps.CTEntry, flags uint8) {
	t.Helper()
	key := maps.CTKey{
		Family: family(e.Backend.Addr()),
		Proto:  e.Proto,
		Sport:  netOrder(e.Backend.Port()),
		Dport:  netOrder(e.Client.Port()),
		Saddr:  raw16(e.Backend.Addr()),
		Daddr:  raw16(e.Client.Addr()),
	}
	val := maps.CTValue{
		NatAddr:    raw16(e.Dialled.Addr()),
		NatPort:    netOrder(e.Dialled.Port()),
		Flags:      flags,
		TCPFlags:   e.TCPFlags,
		BindingID:  e.BindingID,
		LastSeenNs: 1,
		CreatedNs:  1,
	}
	if err := m.Put(key, val); err != nil {
		t.Fatalf("seed ct %v: %v", key, err)
	}
}

// clearMap deletes every key; keys are collected first, never deleted
// while iterating.
func clearMap(t testing.TB, m *ebpf.Map) {
	t.Helper()
	var keys [][]byte
	var prev any
	for {
		next := make([]byte, m.KeySize())
		err := m.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			t.Fatalf("iterate %v: %v", m, err)
		}
		keys = append(keys, next)
		prev = next
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("clear %v: %v", m, err)
		}
	}
}

func zeroStats(t testing.TB, m *ebpf.Map) {
	t.Helper()
	zero := make([]maps.Counter, ebpf.MustPossibleCPU())
	for i := range m.MaxEntries() {
		if err := m.Put(uint32(i), zero); err != nil {
			t.Fatalf("zero stat %d: %v", i, err)
		}
	}
}

// ctDump returns the conntrack tables (ct and ct_new: where a flow sits
// is conntrack_test.go's business) with the timestamps left out (they come
// from the kernel clock) and in a stable order.
func ctDump(t testing.TB, tables ...*ebpf.Map) []maps.CTEntry {
	t.Helper()
	all, err := maps.NewCT(tables...).All()
	if err != nil {
		t.Fatal(err)
	}
	for i := range all {
		if all[i].LastSeenNs == 0 || all[i].CreatedNs == 0 || all[i].CreatedNs > all[i].LastSeenNs {
			t.Errorf("ct entry %+v: want a created time, no later than its last-seen time", all[i])
		}
		all[i].LastSeenNs, all[i].CreatedNs = 0, 0
	}
	sortCT(all)
	return all
}

func sortCT(es []maps.CTEntry) {
	slices.SortFunc(es, func(a, b maps.CTEntry) int {
		if c := a.Backend.Compare(b.Backend); c != 0 {
			return c
		}
		if c := a.Client.Compare(b.Client); c != 0 {
			return c
		}
		return int(a.Proto) - int(b.Proto)
	})
}

type objects struct {
	bpf.TcUplinkObjects
	// xdpProg is xdp_uplink.c's program on the same maps, loaded by the
	// first test that asks for it (xdp): in a VM without KVM each load
	// takes tens of seconds, and most tests need only tc.
	xdpProg *ebpf.Program
	tweaks  []func(*ebpf.CollectionSpec)
}

// xdp loads the XDP program on o's maps once.
func (o *objects) xdp(t testing.TB) *ebpf.Program {
	t.Helper()
	// The XDP cases read the note XDP leaves for tc in the metadata,
	// which BPF_PROG_TEST_RUN hands back from Linux 5.15 on.
	if !kernelAtLeast(t, xdpTestMinKernel) {
		t.Skipf("BPF_PROG_TEST_RUN returns XDP metadata from Linux %d.%d on", xdpTestMinKernel[0], xdpTestMinKernel[1])
	}
	if o.xdpProg == nil {
		o.xdpProg = loadXDP(t, &o.TcUplinkMaps, o.tweaks...)
	}
	return o.xdpProg
}

// loadObjects loads the real uplink programs with fresh, unpinned maps;
// tweaks change the spec first (and the XDP program's, when loaded).
func loadObjects(t testing.TB, tweaks ...func(*ebpf.CollectionSpec)) *objects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs and BPF_PROG_TEST_RUN need root")
	}
	spec, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		t.Fatal(err)
	}
	for _, tweak := range tweaks {
		tweak(spec)
	}
	o := objects{tweaks: tweaks}
	if err := spec.LoadAndAssign(&o.TcUplinkObjects, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load tc_uplink: %+v", ve)
		}
		t.Fatalf("load tc_uplink: %v", err)
	}
	t.Cleanup(func() {
		o.Close()
		if o.xdpProg != nil {
			o.xdpProg.Close()
		}
	})
	return &o
}

// run feeds one frame to prog and returns the verdict and the frame as
// the program left it.
func run(t testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	ret, out, err := tryRun(prog, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

func tryRun(prog *ebpf.Program, in []byte, flags uint32) (uint32, []byte, error) {
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Flags: flags}
	ret, err := prog.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run %v: %w", prog, err)
	}
	return ret, opts.DataOut, nil
}

// skbMode is how the test skb carries its checksum state.
type skbMode struct {
	name  string
	flags uint32
	// minKernel is the first release with flags; older ones skip.
	minKernel [2]int
}

// bpfFTestSKBChecksumComplete is BPF_F_TEST_SKB_CHECKSUM_COMPLETE: the
// kernel seeds skb->csum from the input as a CHECKSUM_COMPLETE NIC would
// and fails the run with EBADMSG when the program leaves skb->csum out of
// step with the packet. With CHECKSUM_NONE (the default) a helper called
// with the wrong flags still writes the right checksum field, so only this
// mode catches it.
const bpfFTestSKBChecksumComplete = 1 << 2

var skbModes = []skbMode{
	{name: "csum_none"},
	{name: "csum_complete", flags: bpfFTestSKBChecksumComplete, minKernel: [2]int{6, 11}},
}

// xdpTestMinKernel is where BPF_PROG_TEST_RUN takes and returns an XDP
// program's metadata.
var xdpTestMinKernel = [2]int{5, 15}

// kernelAtLeast compares the running kernel's major.minor.
func kernelAtLeast(t testing.TB, want [2]int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("parse kernel release: %v", err)
	}
	return major > want[0] || (major == want[0] && minor >= want[1])
}

// ---- independent checksum verification ----

// onesSum is the RFC 1071 sum of b, not yet complemented.
func onesSum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum
}

// l4SumOK checks a TCP or UDP checksum over the pseudo header and segment.
func l4SumOK(src, dst []byte, proto layers.IPProtocol, seg []byte) bool {
	pseudo := slices.Concat(src, dst, []byte{0, byte(proto)}, binary.BigEndian.AppendUint16(nil, uint16(len(seg))))
	return onesSum(onesSum(0, pseudo), seg) == 0xffff
}

// verifyChecksums decodes a translated frame and checks every checksum in
// it from scratch: outer IP, TCP/UDP, ICMP, and the quoted IP and L4
// headers of an ICMP error (the L4 one when the whole datagram is quoted).
func verifyChecksums(t testing.TB, frame []byte) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode output: %v", el.Error())
	}
	if p.Layer(layers.LayerTypeIPv6) != nil {
		verifyChecksums6(t, frame[14:])
		return
	}
	ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		t.Fatalf("output has no IPv4 layer: %v", p)
	}
	if onesSum(0, ip.Contents) != 0xffff {
		t.Errorf("IPv4 header checksum %#04x is wrong", ip.Checksum)
	}
	switch ip.Protocol {
	case layers.IPProtocolTCP, layers.IPProtocolUDP:
		if ip.Protocol == layers.IPProtocolUDP && binary.BigEndian.Uint16(ip.Payload[6:]) == 0 {
			return // no checksum
		}
		if !l4SumOK(ip.SrcIP, ip.DstIP, ip.Protocol, ip.Payload) {
			t.Errorf("%v checksum %#04x is wrong", ip.Protocol, binary.BigEndian.Uint16(ip.Payload[l4CsumOff(ip.Protocol):]))
		}
	case layers.IPProtocolICMPv4:
		if onesSum(0, ip.Payload) != 0xffff {
			t.Errorf("ICMP checksum %#04x is wrong", binary.BigEndian.Uint16(ip.Payload[2:]))
		}
		verifyQuoted(t, ip.Payload[8:])
	default:
		t.Fatalf("unexpected protocol %v in output", ip.Protocol)
	}
}

func l4CsumOff(proto layers.IPProtocol) int {
	if proto == layers.IPProtocolTCP {
		return 16
	}
	return 6
}

func verifyQuoted(t testing.TB, q []byte) {
	t.Helper()
	if len(q) < 20 {
		t.Fatalf("ICMP error quotes only %d bytes", len(q))
	}
	ihl := int(q[0]&0x0f) * 4
	if onesSum(0, q[:ihl]) != 0xffff {
		t.Errorf("quoted IPv4 header checksum %#04x is wrong", binary.BigEndian.Uint16(q[10:]))
	}
	total := int(binary.BigEndian.Uint16(q[2:]))
	if total > len(q) {
		return // truncated quote: its L4 checksum cannot be checked
	}
	proto := layers.IPProtocol(q[9])
	seg := q[ihl:total]
	if proto == layers.IPProtocolUDP && binary.BigEndian.Uint16(seg[6:]) == 0 {
		return
	}
	if !l4SumOK(q[12:16], q[16:20], proto, seg) {
		t.Errorf("quoted %v checksum %#04x is wrong", proto, binary.BigEndian.Uint16(seg[l4CsumOff(proto):]))
	}
}

func describeDiff(want, got []byte) string {
	off := 0
	for off < len(want) && off < len(got) && want[off] == got[off] {
		off++
	}
	return fmt.Sprintf("first difference at byte %d (want %d bytes, got %d)\nwant:\n%sgot:\n%s",
		off, len(want), len(got), hex.Dump(want), hex.Dump(got))
}

// ---- the table ----

type seed struct {
	bindings  []maps.Binding
	hostAddrs []netip.Addr
	ct        []maps.CTEntry
	// ctOther are ct entries without CT_F_DNAT_REPLY: not DNAT replies.
	ctOther []maps.CTEntry
	// raw writes binding values as they are, to reach flags that Put
	// would derive on its own.
	raw      map[maps.BindingKey]maps.BindingValue
	networks []maps.Network
	// allow are --allow-from prefixes by binding id.
	allow map[uint32][]netip.Prefix
}

type datapathCase struct {
	name string
	seed seed
	// before are frames sent through uplink_ingress first, as the
	// traffic that sets up a flow.
	before [][]byte
	egress bool
	in     []byte
	ret    uint32
	out    []byte // nil: the frame must come out unchanged
	// shortIP marks a frame with less than an IPv4 header behind an IPv4
	// ethertype, which newer kernels refuse to test-run (EINVAL).
	shortIP bool
	stat    string // the one counter the verdict bumps
	// ct is the ct map after the run, timestamps aside; nil means it
	// must still hold exactly seed.ct.
	ct []maps.CTEntry
}

// resetMaps empties every hash-type map of the collection (arrays are
// reset by zeroStats or left at their zero value), so each case starts
// from its seed alone.
func resetMaps(t testing.TB, o *objects) {
	t.Helper()
	v := reflect.ValueOf(&o.TcUplinkMaps).Elem()
	for i := range v.NumField() {
		m, ok := v.Field(i).Interface().(*ebpf.Map)
		if !ok || m == nil {
			continue
		}
		switch m.Type() {
		case ebpf.Hash, ebpf.LRUHash, ebpf.LPMTrie, ebpf.PerCPUHash, ebpf.LRUCPUHash:
			clearMap(t, m)
		}
	}
}

// setPrefilter fills the filter maps from what the seed holds, as the
// agent does, and says the masquerade range holds; or turns both off.
// Every table runs both ways: the filter must never hide what the maps
// hold.
func setPrefilter(t testing.TB, o *objects, s seed, on bool) {
	t.Helper()
	cfg := maps.NewConfig(o.Config)
	v, err := cfg.Get()
	if err != nil {
		t.Fatal(err)
	}
	v.Flags &^= maps.ConfigSNATInRange
	prefilter, bindingFilter := maps.NewPrefilter(o.PrefilterSkip), maps.NewBindingFilter(o.BfilterSkip)
	if !on {
		if err := prefilter.Off(); err != nil {
			t.Fatal(err)
		}
		if err := bindingFilter.Off(); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Set(v); err != nil {
			t.Fatal(err)
		}
		return
	}
	var bits maps.PrefilterBits
	bindingBits := new(maps.BindingFilterBits)
	v.Flags |= maps.ConfigSNATInRange
	for _, b := range s.bindings {
		bits.AddBinding(b)
		bindingBits.AddBinding(b)
	}
	for k := range s.raw {
		b := maps.Binding{Proto: k.Proto, Host: netip.AddrPortFrom(k.HostAddr(), netOrder(k.Port))}
		bits.AddBinding(b)
		bindingBits.AddBinding(b)
	}
	for _, n := range s.networks {
		bits.AddNetwork(n.Subnet)
	}
	if err := prefilter.Write(&bits); err != nil {
		t.Fatal(err)
	}
	if err := bindingFilter.Write(bindingBits); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Set(v); err != nil {
		t.Fatal(err)
	}
}

func runTable(t *testing.T, o *objects, cases []datapathCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, mode := range skbModes {
				for _, prefilter := range []bool{false, true} {
					name := mode.name
					if prefilter {
						name += "/prefilter"
					}
					t.Run(name, func(t *testing.T) {
						if !kernelAtLeast(t, mode.minKernel) {
							t.Skipf("%s needs kernel >= %d.%d", mode.name, mode.minKernel[0], mode.minKernel[1])
						}
						setPrefilter(t, o, c.seed, prefilter)
						runCase(t, o, c, mode)
					})
				}
			}
			if c.egress {
				return
			}
			for _, prefilter := range []bool{false, true} {
				name := "xdp"
				if prefilter {
					name += "/prefilter"
				}
				t.Run(name, func(t *testing.T) {
					setPrefilter(t, o, c.seed, prefilter)
					runXDPCase(t, o, c)
				})
			}
		})
	}
}

func runCase(t *testing.T, o *objects, c datapathCase, mode skbMode) {
	seedCase(t, o, c, mode)
	prog := o.UplinkIngress
	if c.egress {
		prog = o.UplinkEgress
	}
	ret, got, err := tryRun(prog, c.in, mode.flags)
	if c.shortIP && errors.Is(err, unix.EINVAL) {
		t.Skip("this kernel's BPF_PROG_TEST_RUN rejects IPv4 frames shorter than an IP header; only real traffic reaches this path")
	}
	if errors.Is(err, unix.EBADMSG) {
		t.Fatalf("skb->csum no longer matches the packet after the run (EBADMSG): a checksum helper got the wrong flags for a CHECKSUM_COMPLETE skb")
	}
	if err != nil {
		t.Fatal(err)
	}
	wantCT := c.ct
	if wantCT == nil {
		wantCT = c.seed.ct
	}
	checkRun(t, o, c.in, ret, got, c.ret, c.out, c.stat, wantCT)
}

// seedCase fills the maps from the case's seed and sends its before
// frames through uplink_ingress.
func seedCase(t *testing.T, o *objects, c datapathCase, mode skbMode) {
	resetMaps(t, o)
	for id, ps := range c.seed.allow {
		for _, p := range ps {
			if err := maps.NewAllowFrom(o.AllowFrom).Put(id, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := maps.NewBindings(o.Bindings).PutBatch(c.seed.bindings); err != nil {
		t.Fatal(err)
	}
	for k, v := range c.seed.raw {
		if err := o.Bindings.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range c.seed.hostAddrs {
		if err := maps.NewHostAddrs(o.Hostaddrs).Put(a, 2); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range c.seed.ct {
		putCT(t, o.Ct, e)
	}
	for _, e := range c.seed.ctOther {
		putCTFlags(t, o.Ct, e, 0)
	}
	for _, n := range c.seed.networks {
		if err := maps.NewNetworks(o.Networks).Put(n); err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range c.before {
		ret, _, err := tryRun(o.UplinkIngress, f, mode.flags)
		if err != nil {
			t.Fatalf("before[%d]: %v", i, err)
		}
		if ret != actUnspec {
			t.Fatalf("before[%d]: uplink_ingress returned %#x, want TC_ACT_UNSPEC", i, ret)
		}
	}
	zeroStats(t, o.Stats)
}

// checkRun holds one run's verdict, output frame, counters and conntrack
// against what the case wants. wantStat "" means no counter may move.
func checkRun(t *testing.T, o *objects, in []byte, ret uint32, got []byte, wantRet uint32, wantOut []byte, wantStat string, wantCT []maps.CTEntry) {
	t.Helper()
	if ret != wantRet {
		t.Errorf("returned %#x, want %#x", ret, wantRet)
	}
	want := wantOut
	if want == nil {
		want = in
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output frame differs: %s", describeDiff(want, got))
	}
	if wantOut != nil {
		verifyChecksums(t, got)
	}

	stats, err := maps.NewStats(o.Stats).Read()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := stats[wantStat]; !ok && wantStat != "" {
		t.Fatalf("no counter %q", wantStat)
	}
	for name, cnt := range stats {
		want := maps.Counter{}
		if name == wantStat {
			want = maps.Counter{Packets: 1, Bytes: uint64(len(in))}
		}
		if cnt != want {
			t.Errorf("counter %s = %+v, want %+v", name, cnt, want)
		}
	}

	wantCT = slices.Clone(wantCT)
	sortCT(wantCT)
	if gotCT := ctDump(t, o.Ct, o.CtNew); !slices.Equal(gotCT, wantCT) {
		t.Errorf("ct map:\n got  %+v\n want %+v", gotCT, wantCT)
	}
}

func TestUplinkDatapath(t *testing.T) {
	o := loadObjects(t)

	host := []netip.Addr{hostIP, hostIP2}
	portRange, err := maps.PortRange(maps.TCP, hostIP, 10000, 10999, backend, 20000, 5)
	if err != nil {
		t.Fatal(err)
	}
	rangeSeed := seed{bindings: portRange, hostAddrs: host}
	rangeCase := func(name string, port uint16) datapathCase {
		return datapathCase{
			name: name,
			seed: rangeSeed,
			in:   tcpFrame(t, clientPort, ap(hostIP, port), syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, ap(backend, port+10000), syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: ap(backend, port+10000), Client: clientPort, Dialled: ap(hostIP, port), BindingID: 5, TCPFlags: maps.CTTCPSyn}},
		}
	}
	webCT := maps.CTEntry{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: tcpWeb.ID, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}
	appCT := maps.CTEntry{Proto: maps.UDP, Backend: udpApp.Backend, Client: clientPort, Dialled: udpApp.Host, BindingID: udpApp.ID}
	localOnlyRaw := maps.BindingValue{BackendAddr: raw16(backend), BackendPort: netOrder(8080), Flags: 1, ID: 7}
	localOnlyAny := maps.BindingValue{BackendAddr: raw16(backend2), BackendPort: netOrder(9090), Flags: 1, ID: 3}
	anyCT := maps.CTEntry{Proto: maps.TCP, Backend: tcpAny.Backend, Client: clientPort, Dialled: ap(hostIP, 80), BindingID: tcpAny.ID, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}
	anyClosed := anyCT
	anyClosed.TCPFlags |= maps.CTTCPFin
	allowAny := tcpAny
	allowAny.Allowlist = true

	cases := []datapathCase{
		{
			name: "dnat tcp syn",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpWeb.Backend, syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "dnat tcp on existing flow updates ct flags",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, ct: []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}}},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, fin|ack),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpWeb.Backend, fin|ack),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished | maps.CTTCPFin}},
		},
		{
			name: "dnat udp",
			seed: seed{bindings: []maps.Binding{udpApp}, hostAddrs: host},
			in:   udpFrame(t, clientPort, udpApp.Host),
			ret:  actUnspec,
			out:  udpFrame(t, clientPort, udpApp.Backend),
			stat: "dnat",
			ct:   []maps.CTEntry{appCT},
		},
		{
			name: "dnat udp zero checksum stays zero",
			seed: seed{bindings: []maps.Binding{udpApp}, hostAddrs: host},
			in:   frame(t, noUDPChecksum(udpDatagram(t, clientPort, udpApp.Host))),
			ret:  actUnspec,
			out:  frame(t, noUDPChecksum(udpDatagram(t, clientPort, udpApp.Backend))),
			stat: "dnat",
			ct:   []maps.CTEntry{appCT},
		},
		{
			name: "dnat same port rewrites only the address",
			seed: seed{bindings: []maps.Binding{tcpTLS}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, tcpTLS.Host, syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpTLS.Backend, syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpTLS.Backend, Client: clientPort, Dialled: tcpTLS.Host, BindingID: 6, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "dnat with ip options (ihl 6)",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn, routerAlert),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpWeb.Backend, syn, routerAlert),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "exact host ip beats wildcard",
			seed: seed{bindings: []maps.Binding{tcpWeb, tcpAny}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpWeb.Backend, syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "wildcard for another host address",
			seed: seed{bindings: []maps.Binding{tcpWeb, tcpAny}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, ap(hostIP2, 80), syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpAny.Backend, syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpAny.Backend, Client: clientPort, Dialled: ap(hostIP2, 80), BindingID: 3, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "wildcard not for an address that is not the host's",
			seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, ap(notHost, 80), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "wildcard not without host addresses",
			seed: seed{bindings: []maps.Binding{tcpAny}},
			in:   tcpFrame(t, clientPort, ap(hostIP, 80), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "wildcard established flow",
			seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: host, ct: []maps.CTEntry{anyCT}},
			in:   tcpFrame(t, clientPort, ap(hostIP, 80), ack),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpAny.Backend, ack),
			stat: "dnat",
			ct:   []maps.CTEntry{anyCT},
		},
		{
			// The flow's first packet passed the address check: the
			// flow outlives the address, as in netfilter's conntrack.
			name: "wildcard established flow after its address went",
			seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: []netip.Addr{hostIP2}, ct: []maps.CTEntry{anyCT}},
			in:   tcpFrame(t, clientPort, ap(hostIP, 80), ack),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpAny.Backend, ack),
			stat: "dnat",
			ct:   []maps.CTEntry{anyCT},
		},
		{
			// A SYN would restart the closed flow: a new flow's check.
			name: "wildcard syn on a closed flow after its address went",
			seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: []netip.Addr{hostIP2}, ct: []maps.CTEntry{anyClosed}},
			in:   tcpFrame(t, clientPort, ap(hostIP, 80), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "wildcard binding, destination 0.0.0.0",
			seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, ap(netip.IPv4Unspecified(), 80), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			// The address is checked once no flow takes the packet: then
			// the binding's flags must not judge it either.
			name: "wildcard loopback-only binding, not the host's address",
			seed: seed{hostAddrs: host, raw: map[maps.BindingKey]maps.BindingValue{tcpAny.Key(): localOnlyAny}},
			in:   tcpFrame(t, clientPort, ap(notHost, 80), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "wildcard allowlisted binding, not the host's address",
			seed: seed{bindings: []maps.Binding{allowAny}, hostAddrs: host, allow: map[uint32][]netip.Prefix{allowAny.ID: {netip.MustParsePrefix("10.0.0.0/8")}}},
			in:   tcpFrame(t, clientPort, ap(notHost, 80), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "wildcard allowlisted binding drops a source outside the list",
			seed: seed{bindings: []maps.Binding{allowAny}, hostAddrs: host, allow: map[uint32][]netip.Prefix{allowAny.ID: {netip.MustParsePrefix("10.0.0.0/8")}}},
			in:   tcpFrame(t, clientPort, ap(hostIP, 80), syn),
			ret:  tcActShot,
			stat: "drop_not_allowed",
		},
		rangeCase("port range first", 10000),
		rangeCase("port range middle", 10500),
		rangeCase("port range last", 10999),
		{
			name: "port range one past the end",
			seed: rangeSeed,
			in:   tcpFrame(t, clientPort, ap(hostIP, 11000), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "port range one before the start",
			seed: rangeSeed,
			in:   tcpFrame(t, clientPort, ap(hostIP, 9999), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "no binding",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, ap(hostIP, 81), syn),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "udp to a tcp-only binding",
			seed: seed{bindings: []maps.Binding{tcpWeb, tcpAny}, hostAddrs: host},
			in:   udpFrame(t, clientPort, tcpWeb.Host),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "loopback destination",
			seed: seed{bindings: []maps.Binding{tcpLo, tcpAny}, hostAddrs: []netip.Addr{hostIP, loopback}},
			in:   tcpFrame(t, clientPort, ap(loopback, 80), syn),
			ret:  actUnspec,
			stat: "pass_local_only",
		},
		{
			name: "loopback destination with only a wildcard binding",
			seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: []netip.Addr{hostIP, loopback, netip.MustParseAddr("127.0.0.5")}},
			in:   tcpFrame(t, clientPort, ap(netip.MustParseAddr("127.0.0.5"), 80), syn),
			ret:  actUnspec,
			stat: "pass_local_only",
		},
		{
			name: "local-only binding flag",
			seed: seed{hostAddrs: host, raw: map[maps.BindingKey]maps.BindingValue{tcpWeb.Key(): localOnlyRaw}},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn),
			ret:  actUnspec,
			stat: "pass_local_only",
		},
		{
			name: "first fragment (mf set) is translated",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn, moreFragments),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpWeb.Backend, syn, moreFragments),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "later fragment without its first (offset set)",
			seed: seed{bindings: []maps.Binding{udpApp}, hostAddrs: host},
			in:   udpFrame(t, clientPort, udpApp.Host, fragOffset),
			ret:  actUnspec,
			stat: "pass_fragment",
		},
		{
			name:    "truncated ipv4 header",
			seed:    seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:      tcpFrame(t, clientPort, tcpWeb.Host, syn)[:14+12],
			shortIP: true,
			ret:     actUnspec,
			stat:    "pass_malformed",
		},
		{
			name: "ihl past the end of the frame",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   withByte(tcpFrame(t, clientPort, tcpWeb.Host, syn)[:14+20+20], 14, 0x4f),
			ret:  actUnspec,
			stat: "pass_malformed",
		},
		{
			name: "truncated tcp header",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn)[:14+20+10],
			ret:  actUnspec,
			stat: "pass_malformed",
		},
		{
			name: "truncated udp header",
			seed: seed{bindings: []maps.Binding{udpApp}, hostAddrs: host},
			in:   udpFrame(t, clientPort, udpApp.Host)[:14+20+5],
			ret:  actUnspec,
			stat: "pass_malformed",
		},
		{
			name: "bad ihl",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   withByte(tcpFrame(t, clientPort, tcpWeb.Host, syn), 14, 0x44),
			ret:  actUnspec,
			stat: "pass_malformed",
		},
		{
			name: "ip version 6 behind an ipv4 ethertype",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   withByte(tcpFrame(t, clientPort, tcpWeb.Host, syn), 14, 0x65),
			ret:  actUnspec,
			stat: "pass_malformed",
		},
		{
			name: "arp",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   arpFrame(t),
			ret:  actUnspec,
			stat: "pass_not_ip",
		},
		{
			// IPv6 is judged (lib/ipv6.h) but not translated yet.
			name: "ipv6",
			seed: seed{bindings: []maps.Binding{udpApp}, hostAddrs: host},
			in:   ipv6Frame(t),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "icmp echo",
			seed: seed{bindings: []maps.Binding{tcpWeb, tcpAny}, hostAddrs: host},
			in:   frame(t, icmpDatagram(t, client, hostIP, echoRequest, 1, []byte("ping"))),
			ret:  actUnspec,
			stat: "pass_no_match",
		},

		// Reverse NAT on egress.
		{
			name:   "reverse nat tcp after dnat",
			seed:   seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			before: [][]byte{tcpFrame(t, clientPort, tcpWeb.Host, syn)},
			egress: true,
			in:     tcpFrame(t, tcpWeb.Backend, clientPort, syn|ack),
			ret:    actUnspec,
			out:    tcpFrame(t, tcpWeb.Host, clientPort, syn|ack),
			stat:   "rnat",
			// The SYN-ACK alone does not establish the flow: the client's ACK does.
			ct: []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: tcpWeb.ID, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck}},
		},
		{
			name:   "reverse nat udp after wildcard dnat",
			seed:   seed{bindings: []maps.Binding{{Proto: maps.UDP, Host: ap(netip.IPv4Unspecified(), 5300), Backend: udpApp.Backend, ID: 8}}, hostAddrs: host},
			before: [][]byte{udpFrame(t, clientPort, ap(hostIP2, 5300))},
			egress: true,
			in:     udpFrame(t, udpApp.Backend, clientPort),
			ret:    actUnspec,
			out:    udpFrame(t, ap(hostIP2, 5300), clientPort),
			stat:   "rnat",
			ct:     []maps.CTEntry{{Proto: maps.UDP, Backend: udpApp.Backend, Client: clientPort, Dialled: ap(hostIP2, 5300), BindingID: 8}},
		},
		{
			name:   "reverse nat udp zero checksum stays zero",
			seed:   seed{ct: []maps.CTEntry{appCT}},
			egress: true,
			in:     frame(t, noUDPChecksum(udpDatagram(t, udpApp.Backend, clientPort))),
			ret:    actUnspec,
			out:    frame(t, noUDPChecksum(udpDatagram(t, udpApp.Host, clientPort))),
			stat:   "rnat",
		},
		{
			name:   "reverse nat without ct entry",
			seed:   seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			egress: true,
			in:     tcpFrame(t, tcpWeb.Backend, clientPort, syn|ack),
			ret:    actUnspec,
			stat:   "pass_no_match",
		},
		{
			name:   "reverse nat ct entry of another client port",
			seed:   seed{ct: []maps.CTEntry{webCT}},
			egress: true,
			in:     tcpFrame(t, tcpWeb.Backend, ap(client, 40001), ack),
			ret:    actUnspec,
			stat:   "pass_no_match",
		},
		{
			name:   "reverse nat ignores a ct entry that is not a dnat reply",
			seed:   seed{ctOther: []maps.CTEntry{webCT}},
			egress: true,
			in:     tcpFrame(t, tcpWeb.Backend, clientPort, ack),
			ret:    actUnspec,
			stat:   "pass_no_match",
			ct:     []maps.CTEntry{webCT},
		},
		{
			name:   "egress first fragment is translated",
			seed:   seed{ct: []maps.CTEntry{appCT}},
			egress: true,
			in:     udpFrame(t, udpApp.Backend, clientPort, moreFragments),
			ret:    actUnspec,
			out:    udpFrame(t, udpApp.Host, clientPort, moreFragments),
			stat:   "rnat",
			ct:     []maps.CTEntry{appCT},
		},
		{
			name:   "egress truncated tcp header",
			seed:   seed{ct: []maps.CTEntry{webCT}},
			egress: true,
			in:     tcpFrame(t, tcpWeb.Backend, clientPort, ack)[:14+20+12],
			ret:    actUnspec,
			stat:   "pass_malformed",
		},

		// ICMP errors about translated flows.
		{
			name:   "icmp port unreachable from backend about udp flow",
			seed:   seed{ct: []maps.CTEntry{appCT}},
			egress: true,
			in:     icmpErrorFrame(t, backend, client, portUnreachable, 0, udpDatagram(t, clientPort, udpApp.Backend), 0),
			ret:    actUnspec,
			out:    icmpErrorFrame(t, hostIP, client, portUnreachable, 0, udpDatagram(t, clientPort, udpApp.Host), 0),
			stat:   "icmp_rnat",
		},
		{
			name:   "icmp port unreachable about udp flow without checksum",
			seed:   seed{ct: []maps.CTEntry{appCT}},
			egress: true,
			in:     icmpErrorFrame(t, backend, client, portUnreachable, 0, noUDPChecksum(udpDatagram(t, clientPort, udpApp.Backend)), 0),
			ret:    actUnspec,
			out:    icmpErrorFrame(t, hostIP, client, portUnreachable, 0, noUDPChecksum(udpDatagram(t, clientPort, udpApp.Host)), 0),
			stat:   "icmp_rnat",
		},
		{
			// The gateway's address is private too: the client sees the one it dialled.
			name:   "icmp time exceeded from the gateway about tcp flow leaves as the dialled address",
			seed:   seed{ct: []maps.CTEntry{webCT}, hostAddrs: []netip.Addr{gateway}, networks: []maps.Network{{Subnet: netip.PrefixFrom(gateway, 16).Masked(), Gateway: gateway, ID: 1, Masquerade: true}}},
			egress: true,
			in:     icmpErrorFrame(t, gateway, client, ttlExceeded, 0, tcpDatagram(t, clientPort, tcpWeb.Backend, ack), 0),
			ret:    actUnspec,
			out:    icmpErrorFrame(t, tcpWeb.Host.Addr(), client, ttlExceeded, 0, tcpDatagram(t, clientPort, tcpWeb.Host, ack), 0),
			stat:   "icmp_rnat",
		},
		{
			// Not ours to send: it could cut the client's flow.
			name:   "another container's port unreachable about a client's udp flow",
			seed:   seed{ct: []maps.CTEntry{appCT}, hostAddrs: []netip.Addr{gateway}, networks: []maps.Network{{Subnet: netip.PrefixFrom(gateway, 16).Masked(), Gateway: gateway, ID: 1, Masquerade: true}}},
			egress: true,
			in:     icmpErrorFrame(t, backend.Next(), client, portUnreachable, 0, udpDatagram(t, clientPort, udpApp.Backend), 0),
			ret:    tcActShot,
			stat:   "drop_unmasqueraded",
		},
		{
			name:   "icmp error from backend without ct entry",
			seed:   seed{bindings: []maps.Binding{udpApp}, hostAddrs: host},
			egress: true,
			in:     icmpErrorFrame(t, backend, client, portUnreachable, 0, udpDatagram(t, clientPort, udpApp.Backend), 0),
			ret:    actUnspec,
			stat:   "pass_no_match",
		},
		{
			name: "icmp frag needed from outside about a tcp reply",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, ct: []maps.CTEntry{webCT}},
			in:   icmpErrorFrame(t, router, hostIP, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Host, clientPort, ack), 0),
			ret:  actUnspec,
			out:  icmpErrorFrame(t, router, backend, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Backend, clientPort, ack), 0),
			stat: "icmp_dnat",
		},
		{
			name: "icmp frag needed quoting only eight bytes of tcp",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, ct: []maps.CTEntry{webCT}},
			in:   icmpErrorFrame(t, router, hostIP, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Host, clientPort, ack), 28),
			ret:  actUnspec,
			out:  icmpErrorFrame(t, router, backend, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Backend, clientPort, ack), 28),
			stat: "icmp_dnat",
		},
		{
			name: "icmp time exceeded from outside about a udp reply via wildcard",
			seed: seed{
				bindings:  []maps.Binding{{Proto: maps.UDP, Host: ap(netip.IPv4Unspecified(), 5300), Backend: udpApp.Backend, ID: 8}},
				hostAddrs: host,
				ct:        []maps.CTEntry{{Proto: maps.UDP, Backend: udpApp.Backend, Client: clientPort, Dialled: ap(hostIP2, 5300), BindingID: 8}},
			},
			in:   icmpErrorFrame(t, router, hostIP2, ttlExceeded, 0, udpDatagram(t, ap(hostIP2, 5300), clientPort), 0),
			ret:  actUnspec,
			out:  icmpErrorFrame(t, router, backend, ttlExceeded, 0, udpDatagram(t, udpApp.Backend, clientPort), 0),
			stat: "icmp_dnat",
		},
		{
			name: "icmp frag needed about a reply without ct entry",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host},
			in:   icmpErrorFrame(t, router, hostIP, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Host, clientPort, ack), 0),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "icmp frag needed about a reply of another client",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, ct: []maps.CTEntry{webCT}},
			in:   icmpErrorFrame(t, router, hostIP, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Host, ap(router, 40000), ack), 0),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "icmp frag needed about a reply that left from another host address",
			seed: seed{
				bindings:  []maps.Binding{tcpAny},
				hostAddrs: host,
				ct:        []maps.CTEntry{{Proto: maps.TCP, Backend: tcpAny.Backend, Client: clientPort, Dialled: ap(hostIP2, 80), BindingID: 3}},
			},
			in:   icmpErrorFrame(t, router, hostIP, fragNeeded, 1400, tcpDatagram(t, ap(hostIP, 80), clientPort, ack), 0),
			ret:  actUnspec,
			stat: "pass_no_match",
		},
		{
			name: "icmp error quoting a truncated ip header",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, ct: []maps.CTEntry{webCT}},
			in:   icmpErrorFrame(t, router, hostIP, fragNeeded, 1400, tcpDatagram(t, tcpWeb.Host, clientPort, ack), 12),
			ret:  actUnspec,
			stat: "pass_malformed",
		},
	}
	runTable(t, o, cases)
	t.Run("helper rewrites", func(t *testing.T) { runTable(t, loadObjects(t, helperRewrites(t)), cases) })
}

// helperRewrites makes the programs rewrite through the kernel's helpers,
// as they do a packet whose headers are not in the skb's linear data: a
// BPF_PROG_TEST_RUN skb has them there always.
func helperRewrites(t testing.TB) func(*ebpf.CollectionSpec) {
	return func(spec *ebpf.CollectionSpec) {
		if v, ok := spec.Variables["rewrite_in_place"]; ok {
			if err := v.Set(uint32(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestDNATThenReverse follows one TCP flow through both programs and checks
// that the reply leaves with exactly the addresses the client used.
func TestDNATThenReverse(t *testing.T) {
	o := loadObjects(t)
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		egress bool
		in     []byte
		out    []byte
	}{
		{"syn", false, tcpFrame(t, clientPort, tcpWeb.Host, syn), tcpFrame(t, clientPort, tcpWeb.Backend, syn)},
		{"syn-ack", true, tcpFrame(t, tcpWeb.Backend, clientPort, syn|ack), tcpFrame(t, tcpWeb.Host, clientPort, syn|ack)},
		{"ack", false, tcpFrame(t, clientPort, tcpWeb.Host, ack), tcpFrame(t, clientPort, tcpWeb.Backend, ack)},
		{"fin", true, tcpFrame(t, tcpWeb.Backend, clientPort, fin|ack), tcpFrame(t, tcpWeb.Host, clientPort, fin|ack)},
	}
	for _, s := range steps {
		prog := o.UplinkIngress
		if s.egress {
			prog = o.UplinkEgress
		}
		ret, got := run(t, prog, s.in)
		if ret != actUnspec {
			t.Errorf("%s: returned %#x, want TC_ACT_UNSPEC", s.name, ret)
		}
		if !bytes.Equal(got, s.out) {
			t.Errorf("%s: %s", s.name, describeDiff(s.out, got))
		}
	}
	want := []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: 1,
		TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished | maps.CTTCPFin}}
	if got := ctDump(t, o.Ct, o.CtNew); !slices.Equal(got, want) {
		t.Errorf("ct map:\n got  %+v\n want %+v", got, want)
	}
}

// ---- benchmarks ----

// benchRun runs prog b.N times in one BPF_PROG_TEST_RUN and reports the
// kernel's mean time per run. The kernel runs the program on the same skb
// each time, so a repeat sees the packet as the previous one left it: the
// benchmarks pick map contents under which every repeat takes the path
// measured, and the stats map proves that it did.
func benchRun(b *testing.B, o *objects, prog *ebpf.Program, in []byte, stat string) {
	benchPrefilter(b, o)
	zeroStats(b, o.Stats)
	b.ResetTimer()
	ret, perRun, err := prog.Benchmark(in, b.N, b.ResetTimer)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	wantRet := actUnspec
	if prog.Type() == ebpf.XDP {
		wantRet = xdpPass
	}
	if ret != wantRet {
		b.Fatalf("returned %#x, want %#x", ret, wantRet)
	}
	b.ReportMetric(float64(perRun.Nanoseconds()), "ns/pkt")

	stats, err := maps.NewStats(o.Stats).Read()
	if err != nil {
		b.Fatal(err)
	}
	// An interrupted run is restarted whole, so stat may count more. XDP
	// counts nothing it leaves to tc (stat "").
	if got := stats[stat].Packets; stat != "" && got < uint64(b.N) {
		b.Fatalf("%s counted %d of %d runs", stat, got, b.N)
	}
	for name, c := range stats {
		if name != stat && c.Packets != 0 {
			b.Fatalf("%d runs ended as %s, want all %s", c.Packets, name, stat)
		}
	}
}

// benchPrefilter turns the prefilter on with the bits of every binding the
// benchmark seeded, as the agent keeps it.
func benchPrefilter(b *testing.B, o *objects) {
	all, err := maps.NewBindings(o.Bindings).All()
	if err != nil {
		b.Fatal(err)
	}
	setPrefilter(b, o, seed{bindings: all}, true)
	var ids []uint32
	for _, bd := range all {
		ids = append(ids, bd.ID)
	}
	if err := maps.NewBindingStats(o.BindingStats).Create(ids); err != nil {
		b.Fatal(err)
	}
}

// fillBindings publishes n TCP ports of host addresses nothing dials, so
// the map is as big as a busy host's without matching the benchmark flow.
func fillBindings(b *testing.B, o *objects, n int) {
	for host := byte(200); n > 0; host++ {
		ports := min(n, 60000)
		filler, err := maps.PortRange(maps.TCP, netip.AddrFrom4([4]byte{192, 0, 2, host}), 1, uint16(ports), backend2, 1, 100)
		if err != nil {
			b.Fatal(err)
		}
		if err := maps.NewBindings(o.Bindings).PutBatch(filler); err != nil {
			b.Fatal(err)
		}
		n -= ports
	}
}

// seedDNATCycle publishes two bindings that lead to each other (host ->
// backend -> host) and tracks both legs, so every repeat of one test run
// is a full DNAT of an established flow.
func seedDNATCycle(b *testing.B, o *objects, proto maps.Proto, host, back netip.AddrPort) {
	cycle := []maps.Binding{
		{Proto: proto, Host: host, Backend: back, ID: 1},
		{Proto: proto, Host: back, Backend: host, ID: 2},
	}
	if err := maps.NewBindings(o.Bindings).PutBatch(cycle); err != nil {
		b.Fatal(err)
	}
	putCT(b, o.Ct, maps.CTEntry{Proto: proto, Backend: back, Client: clientPort, Dialled: host, BindingID: 1})
	putCT(b, o.Ct, maps.CTEntry{Proto: proto, Backend: host, Client: clientPort, Dialled: back, BindingID: 2})
}

// BenchmarkDNAT measures the DNAT path of an established flow: binding hit,
// ct hit, address, port and checksum rewrite, through a cycle
// (hostIP:80 -> backend:8080 -> hostIP:80). The rest of the map is filler.
func BenchmarkDNAT(b *testing.B) {
	for _, total := range []int{2, 65536} {
		b.Run(fmt.Sprintf("bindings=%d", total), func(b *testing.B) {
			o := loadObjects(b)
			seedDNATCycle(b, o, maps.TCP, ap(hostIP, 80), ap(backend, 8080))
			fillBindings(b, o, total-2)
			in := tcpFrame(b, clientPort, ap(hostIP, 80), ack)
			b.Run("tc", func(b *testing.B) { benchRun(b, o, o.UplinkIngress, in, "dnat") })
			b.Run("xdp", func(b *testing.B) { benchRun(b, o, o.xdp(b), in, "dnat") })
		})
	}
}

// BenchmarkDNATWildcard is BenchmarkDNAT through bindings on every address
// (0.0.0.0:80, what `-p 80:80` publishes), whose packets also ask
// hostaddrs whether the address is the host's.
func BenchmarkDNATWildcard(b *testing.B) {
	o := loadObjects(b)
	all := netip.IPv4Unspecified()
	cycle := []maps.Binding{
		{Proto: maps.TCP, Host: ap(all, 80), Backend: ap(backend, 8080), ID: 1},
		{Proto: maps.TCP, Host: ap(all, 8080), Backend: ap(hostIP, 80), ID: 2},
	}
	if err := maps.NewBindings(o.Bindings).PutBatch(cycle); err != nil {
		b.Fatal(err)
	}
	for _, a := range []netip.Addr{hostIP, backend} {
		if err := maps.NewHostAddrs(o.Hostaddrs).Put(a, 2); err != nil {
			b.Fatal(err)
		}
	}
	putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: ap(backend, 8080), Client: clientPort, Dialled: ap(hostIP, 80), BindingID: 1})
	putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: ap(hostIP, 80), Client: clientPort, Dialled: ap(backend, 8080), BindingID: 2})
	in := tcpFrame(b, clientPort, ap(hostIP, 80), ack)
	b.Run("tc", func(b *testing.B) { benchRun(b, o, o.UplinkIngress, in, "dnat") })
	b.Run("xdp", func(b *testing.B) { benchRun(b, o, o.xdp(b), in, "dnat") })
}

// BenchmarkDNATUDP is BenchmarkDNAT for a UDP flow. A datagram may not
// start a flow when a local socket owns its tuple; asking costs a socket
// lookup, which the packets of a tracked flow must not pay.
func BenchmarkDNATUDP(b *testing.B) {
	o := loadObjects(b)
	seedDNATCycle(b, o, maps.UDP, ap(hostIP, 53), ap(backend, 5353))
	in := udpFrame(b, clientPort, ap(hostIP, 53))
	b.Run("tc", func(b *testing.B) { benchRun(b, o, o.UplinkIngress, in, "dnat") })
	b.Run("xdp", func(b *testing.B) { benchRun(b, o, o.xdp(b), in, "dnat") })
}

// BenchmarkRNAT measures reverse NAT of replies, with the same trick: two
// ct entries whose translations lead to each other.
func BenchmarkRNAT(b *testing.B) {
	for _, total := range []int{2, 65536} {
		b.Run(fmt.Sprintf("ct=%d", total), func(b *testing.B) {
			o := loadObjects(b)
			putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: ap(backend, 8080), Client: clientPort, Dialled: ap(hostIP, 80), BindingID: 1})
			putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: ap(hostIP, 80), Client: clientPort, Dialled: ap(backend, 8080), BindingID: 1})
			keys := make([]maps.CTKey, 0, total)
			values := make([]maps.CTValue, 0, total)
			for i := range total - 2 {
				c := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
				keys = append(keys, maps.CTKey{Family: unix.AF_INET, Proto: maps.TCP, Sport: netOrder(8080), Dport: netOrder(40000), Saddr: raw16(backend), Daddr: raw16(c)})
				values = append(values, maps.CTValue{NatAddr: raw16(hostIP), NatPort: netOrder(80), Flags: maps.CTDNATReply, LastSeenNs: 1})
			}
			if len(keys) > 0 {
				if _, err := o.Ct.BatchUpdate(keys, values, nil); err != nil {
					b.Fatal(err)
				}
			}
			benchRun(b, o, o.UplinkEgress, tcpFrame(b, ap(backend, 8080), clientPort, ack), "rnat")
		})
	}
}

// BenchmarkNotIP is the floor: the test-run loop, the Ethernet type check
// and the counter, which every figure above includes.
func BenchmarkNotIP(b *testing.B) {
	o := loadObjects(b)
	benchRun(b, o, o.UplinkIngress, arpFrame(b), "pass_not_ip")
}

// BenchmarkMiss measures what every other packet on the uplink pays: a
// packet for the host itself, with 65,536 bindings on other ports.
// With XDP on, such a packet pays XDP's miss, then tc's.
func BenchmarkMiss(b *testing.B) {
	for _, total := range []int{1, 65536} {
		b.Run(fmt.Sprintf("bindings=%d", total), func(b *testing.B) {
			o := loadObjects(b)
			fillBindings(b, o, total)
			if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 2); err != nil {
				b.Fatal(err)
			}
			in := tcpFrame(b, clientPort, ap(hostIP, 22), ack)
			b.Run("tc", func(b *testing.B) { benchRun(b, o, o.UplinkIngress, in, "pass_no_match") })
			b.Run("xdp", func(b *testing.B) { benchRun(b, o, o.xdp(b), in, "") })
		})
	}
}

// TestPrefilterIsConsulted proves the programs read the prefilter once the
// agent turns it on: a binding whose port bit is clear is not looked up,
// nor a network whose /16 bit is clear. (The tables above run with the
// filter on and off, so a filter built from the maps hides nothing.)
func TestPrefilterIsConsulted(t *testing.T) {
	o := loadObjects(t)
	resetMaps(t, o)
	s := seed{bindings: []maps.Binding{tcpWeb, udpApp}, hostAddrs: []netip.Addr{hostIP}}
	if err := maps.NewBindings(o.Bindings).PutBatch(s.bindings); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 2); err != nil {
		t.Fatal(err)
	}
	syn := tcpFrame(t, clientPort, tcpWeb.Host, syn)
	for _, c := range []struct {
		name   string
		filter seed
		stat   string
	}{
		{"bit set", s, "dnat"},
		{"tcp port bit clear", seed{bindings: []maps.Binding{udpApp}}, "pass_no_match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearMap(t, o.Ct)
			clearMap(t, o.CtNew)
			setPrefilter(t, o, c.filter, true)
			ingressCounts(t, o, syn, c.stat)
		})
	}
}

// TestBindingFilterIsConsulted: a port bit set by a binding on another
// address no longer sends a packet to the lookups. With its address's bloom
// bit clear, a binding on one address is not looked up; with its port's
// wildcard bit clear, neither is a wildcard binding.
func TestBindingFilterIsConsulted(t *testing.T) {
	o := loadObjects(t)
	resetMaps(t, o)
	tcpAny := maps.Binding{Proto: maps.TCP, Host: ap(netip.IPv4Unspecified(), 81), Backend: ap(backend, 8081), ID: 3}
	s := seed{bindings: []maps.Binding{tcpWeb, tcpAny}, hostAddrs: []netip.Addr{hostIP}}
	if err := maps.NewBindings(o.Bindings).PutBatch(s.bindings); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 2); err != nil {
		t.Fatal(err)
	}
	// Port bits for 80 and 81 stay set in every case: only the binding
	// filter can tell these bindings from those of hostIP2.
	elsewhere := seed{bindings: []maps.Binding{
		{Proto: maps.TCP, Host: ap(hostIP2, 80), Backend: ap(backend, 8080), ID: 4},
		{Proto: maps.TCP, Host: ap(hostIP2, 81), Backend: ap(backend, 8081), ID: 5},
	}}
	for _, c := range []struct {
		name   string
		filter seed
		dial   netip.AddrPort
		stat   string
	}{
		{"exact bit set", s, tcpWeb.Host, "dnat"},
		{"wildcard bit set", s, ap(hostIP, 81), "dnat"},
		{"exact bit clear", elsewhere, tcpWeb.Host, "pass_no_match"},
		{"wildcard bit clear", elsewhere, ap(hostIP, 81), "pass_no_match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearMap(t, o.Ct)
			clearMap(t, o.CtNew)
			setPrefilter(t, o, c.filter, true)
			ingressCounts(t, o, tcpFrame(t, clientPort, c.dial, syn), c.stat)
		})
	}
}

// TestPrefilterNetworks: with its /16 bit clear, a network is not looked up,
// so a probe of a container's own address is not recognised as one.
func TestPrefilterNetworks(t *testing.T) {
	o := loadObjects(t)
	resetMaps(t, o)
	nw := maps.Network{Subnet: netip.PrefixFrom(backend, 24).Masked(), Gateway: gateway, ID: 1, Masquerade: true}
	if err := maps.NewNetworks(o.Networks).Put(nw); err != nil {
		t.Fatal(err)
	}
	probe := tcpFrame(t, clientPort, ap(backend, 22), syn)
	for _, c := range []struct {
		name   string
		filter seed
		stat   string
	}{
		{"bit set", seed{networks: []maps.Network{nw}}, "drop_not_published"},
		{"bit clear", seed{}, "pass_no_match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			setPrefilter(t, o, c.filter, true)
			ingressCounts(t, o, probe, c.stat)
		})
	}
}

// ingressCounts runs frame through uplink_ingress and checks that stat,
// and only stat, counted it.
func ingressCounts(t *testing.T, o *objects, frame []byte, stat string) {
	t.Helper()
	zeroStats(t, o.Stats)
	if _, _, err := tryRun(o.UplinkIngress, frame, 0); err != nil {
		t.Fatal(err)
	}
	stats, err := maps.NewStats(o.Stats).Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := nonZero(stats); len(got) != 1 || got[stat] != 1 {
		t.Errorf("counters %v, want %s once", got, stat)
	}
}

func nonZero(stats map[string]maps.Counter) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range stats {
		if v.Packets != 0 {
			out[k] = v.Packets
		}
	}
	return out
}
