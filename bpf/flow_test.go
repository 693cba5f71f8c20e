package bpf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/maps"
)

// Multi-packet cases: the packets of one or more flows through uplink
// ingress and egress in turn, each with its own verdict, output frame and
// counters, then the ct and snat maps as the flows left them. Fragments,
// GSO packets and conntrack state all need more than one packet to say
// anything.

// actShot is TC_ACT_SHOT: the verdict of every drop_* counter.
const actShot = uint32(2)

// testIfindex is the device BPF_PROG_TEST_RUN runs a program on when the
// context names none: loopback. Masquerade finds its uplink by it.
const testIfindex = 1

var (
	// server is somewhere outside that containers talk to.
	server     = netip.MustParseAddr("203.0.113.80")
	containers = netip.MustParsePrefix("172.18.0.0/16")
	masqNet    = maps.Network{Subnet: containers, Gateway: gateway, ID: 1, Masquerade: true}
	// masquerading is a container network that leaves through hostIP,
	// with a SNAT port range that holds the containers' source ports
	// (40000 and up): they keep them.
	masquerading = flowSeed{
		networks: []maps.Network{masqNet},
		uplinks:  map[uint32]netip.Addr{testIfindex: hostIP},
		config:   maps.ConfigValue{SnatPortMin: 40000, SnatPortMax: 40999},
	}
	// oneSNATPort is a SNAT range of one port, 50000: a flow from any
	// other port moves there.
	oneSNATPort = maps.ConfigValue{SnatPortMin: 50000, SnatPortMax: 50000}
)

// skBuff mirrors struct __sk_buff, the context of a tc program. A test run
// copies only some fields into its skb (on 6.18: mark, priority,
// ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size,
// hwtstamp) and fails with EINVAL when any other is not zero; gso_segs
// may be at most 65535, wire_len at least the data's length and at most
// 65536.
type skBuff struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex, TCIndex                                  uint32
	CB                                                                          [5]uint32
	Hash, TCClassid, Data, DataEnd, NapiID                                      uint32
	Family, RemoteIP4, LocalIP4                                                 uint32
	RemoteIP6, LocalIP6                                                         [4]uint32
	RemotePort, LocalPort, DataMeta                                             uint32
	FlowKeys                                                                    uint64
	Tstamp                                                                      uint64
	WireLen, GSOSegs                                                            uint32
	SK                                                                          uint64
	GSOSize                                                                     uint32
	TstampType                                                                  uint8
	_                                                                           [3]uint8
	HWTstamp                                                                    uint64
}

// sizeof(struct __sk_buff) in the UAPI headers this project builds with.
const skBuffSize = 192

var _ [skBuffSize - unsafe.Sizeof(skBuff{})]struct{}
var _ [unsafe.Sizeof(skBuff{}) - skBuffSize]struct{}

// snatEntry is one snat map entry in readable form.
type snatEntry struct {
	Proto    maps.Proto
	Src, Dst netip.AddrPort // the key: a packet's tuple as it is on the wire
	// Nat is the translated source of a forward entry, the container's
	// address of a reverse one.
	Nat      netip.AddrPort
	Flags    uint8
	TCPFlags uint8
	TCP      maps.TCPSide
}

// ctFReplied is CT_F_REPLIED: the backend answered.
const ctFReplied = 1 << 1

// ctRow is a DNAT flow in either conntrack table, with what maps.CTEntry
// leaves out.
type ctRow struct {
	maps.CTEntry
	// New: the flow is in ct_new, not (yet) promoted to ct.
	New     bool
	Replied bool            // CT_F_REPLIED
	TCP     [2]maps.TCPSide // the client's, then the backend's
}

type flowSeed struct {
	seed // ct entries go to ct, as answered flows
	// ctNew are unanswered flows, in ct_new.
	ctNew    []maps.CTEntry
	networks []maps.Network
	uplinks  map[uint32]netip.Addr
	uplinks6 map[uint32]netip.Addr // NAT66's addresses
	snat     []snatEntry
	config   maps.ConfigValue
}

// with returns s plus the bindings, host addresses and ct entries of o.
func (s flowSeed) with(o seed) flowSeed {
	s.bindings = slices.Concat(s.bindings, o.bindings)
	s.hostAddrs = slices.Concat(s.hostAddrs, o.hostAddrs)
	s.ct = slices.Concat(s.ct, o.ct)
	return s
}

// withSNAT returns s with the snat entries es seeded as well.
func (s flowSeed) withSNAT(es []snatEntry) flowSeed {
	s.snat = slices.Concat(s.snat, es)
	return s
}

type step struct {
	name   string
	egress bool
	in     []byte
	// ctx, when set, is the skb's context (GSO fields); the run must
	// leave it as it was.
	ctx  *skBuff
	ret  uint32
	out  []byte // nil: the frame must come out unchanged
	stat string // the verdict's counter: one packet of len(in) bytes
	// also are counters the step bumps besides stat.
	also map[string]maps.Counter
}

type flowCase struct {
	name  string
	seed  flowSeed
	steps []step
	// ct and snat are the maps after the last step, timestamps aside;
	// nil means they still hold exactly what was seeded.
	ct   []ctRow
	snat []snatEntry
	// check, when set, looks at every step's output frame.
	check func(t *testing.T, outs [][]byte)
}

func runFlows(t *testing.T, o *objects, cases []flowCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, mode := range skbModes {
				t.Run(mode.name, func(t *testing.T) {
					if !kernelAtLeast(t, mode.minKernel) {
						t.Skipf("%s needs kernel >= %d.%d", mode.name, mode.minKernel[0], mode.minKernel[1])
					}
					runFlow(t, o, c, mode)
				})
			}
		})
	}
}

func seedFlow(t *testing.T, o *objects, s flowSeed) {
	t.Helper()
	resetMaps(t, o)
	if err := maps.NewBindings(o.Bindings).PutBatch(s.bindings); err != nil {
		t.Fatal(err)
	}
	for k, v := range s.raw {
		if err := o.Bindings.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for id, ps := range s.allow {
		for _, p := range ps {
			if err := maps.NewAllowFrom(o.AllowFrom).Put(id, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, a := range s.hostAddrs {
		if err := maps.NewHostAddrs(o.Hostaddrs).Put(a, 2); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range s.ct {
		putCT(t, o.Ct, e)
	}
	for _, e := range s.ctNew {
		putCT(t, o.CtNew, e)
	}
	for _, n := range s.networks {
		if err := maps.NewNetworks(o.Networks).Put(n); err != nil {
			t.Fatal(err)
		}
	}
	for ifindex, a := range s.uplinks {
		if err := maps.NewUplinks(o.Uplinks).Put(ifindex, a); err != nil {
			t.Fatal(err)
		}
	}
	for ifindex, a := range s.uplinks6 {
		if err := maps.NewUplinks(o.Uplinks6).Put(ifindex, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range s.snat {
		putSNAT(t, o.Snat, e)
	}
	// config is an array: resetMaps leaves it as the last case set it.
	if err := maps.NewConfig(o.Config).Set(s.config); err != nil {
		t.Fatal(err)
	}
}

func runFlow(t *testing.T, o *objects, c flowCase, mode skbMode) {
	seedFlow(t, o, c.seed)
	outs := make([][]byte, len(c.steps))
	for i, s := range c.steps {
		name := s.name
		if name == "" {
			name = fmt.Sprintf("step %d", i)
		}
		outs[i] = runStep(t, o, s, mode, name)
		if t.Failed() {
			return // later steps build on this one
		}
	}
	if c.check != nil {
		c.check(t, outs)
	}

	wantCT := c.ct
	if wantCT == nil {
		for _, e := range c.seed.ct {
			wantCT = append(wantCT, ctRow{CTEntry: e})
		}
		for _, e := range c.seed.ctNew {
			wantCT = append(wantCT, ctRow{CTEntry: e, New: true})
		}
	}
	wantCT = slices.Clone(wantCT)
	sortCTRows(wantCT)
	if gotCT := ctRows(t, o); !slices.Equal(gotCT, wantCT) {
		t.Errorf("ct map:\n got  %+v\n want %+v", gotCT, wantCT)
	}
	wantSNAT := c.snat
	if wantSNAT == nil {
		wantSNAT = c.seed.snat
	}
	wantSNAT = slices.Clone(wantSNAT)
	sortSNAT(wantSNAT)
	if got := snatDump(t, o.Snat); !slices.Equal(got, wantSNAT) {
		t.Errorf("snat map:\n got  %+v\n want %+v", got, wantSNAT)
	}
}

// runStep runs one packet and checks its verdict, output and counters. It
// returns the output frame.
func runStep(t *testing.T, o *objects, s step, mode skbMode, name string) []byte {
	t.Helper()
	zeroStats(t, o.Stats)
	prog := o.UplinkIngress
	if s.egress {
		prog = o.UplinkEgress
	}
	opts := ebpf.RunOptions{Data: s.in, DataOut: make([]byte, len(s.in)+256), Flags: mode.flags}
	var ctxOut skBuff
	if s.ctx != nil {
		opts.Context = *s.ctx
		opts.ContextOut = &ctxOut
	}
	ret, err := prog.Run(&opts)
	if errors.Is(err, unix.EBADMSG) {
		t.Fatalf("%s: skb->csum no longer matches the packet after the run (EBADMSG): a checksum helper got the wrong flags for a CHECKSUM_COMPLETE skb", name)
	}
	if err != nil {
		t.Fatalf("%s: run %v: %v", name, prog, err)
	}
	got := opts.DataOut
	if ret != s.ret {
		t.Errorf("%s: returned %#x, want %#x", name, ret, s.ret)
	}
	want := s.out
	if want == nil {
		want = s.in
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: output frame differs: %s", name, describeDiff(want, got))
	}
	if s.ctx != nil && (ctxOut.GSOSize != s.ctx.GSOSize || ctxOut.GSOSegs != s.ctx.GSOSegs || ctxOut.WireLen != s.ctx.WireLen) {
		t.Errorf("%s: skb left with gso_size %d, gso_segs %d, wire_len %d; want %d, %d, %d", name,
			ctxOut.GSOSize, ctxOut.GSOSegs, ctxOut.WireLen, s.ctx.GSOSize, s.ctx.GSOSegs, s.ctx.WireLen)
	}

	stats, err := maps.NewStats(o.Stats).Read()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := stats[s.stat]; !ok {
		t.Fatalf("%s: no counter %q", name, s.stat)
	}
	for n, cnt := range stats {
		want, ok := s.also[n]
		if n == s.stat {
			want = maps.Counter{Packets: 1, Bytes: uint64(len(s.in))}
		} else if !ok {
			want = maps.Counter{}
		}
		if cnt != want {
			t.Errorf("%s: counter %s = %+v, want %+v", name, n, cnt, want)
		}
	}
	return got
}

// ---- steps ----

// dnatStep is a client's packet to a published port on uplink ingress:
// in is what the client sent, out the packet as the backend must get it.
func dnatStep(in, out []byte) step {
	return step{in: in, ret: actUnspec, out: out, stat: "dnat"}
}

// rnatStep is a backend's reply on uplink egress.
func rnatStep(in, out []byte) step {
	return step{egress: true, in: in, ret: actUnspec, out: out, stat: "rnat"}
}

// snatStep is a container's packet masqueraded on uplink egress.
func snatStep(in, out []byte) step {
	return step{egress: true, in: in, ret: actUnspec, out: out, stat: "snat"}
}

// snatReverseStep is a server's reply to a masqueraded flow on uplink
// ingress.
func snatReverseStep(in, out []byte) step {
	return step{in: in, ret: actUnspec, out: out, stat: "snat_reverse"}
}

// rstIgnored marks a step whose RST falls outside the window.
func rstIgnored(s step) step {
	s.also = map[string]maps.Counter{"tcp_rst_ignored": {Packets: 1}}
	return s
}

func named(name string, s step) step {
	s.name = name
	return s
}

// ---- TCP segments ----

// tcpSeg is what a TCP segment carries besides its ports.
type tcpSeg struct {
	flags    tcpFlags
	seq, ack uint32
	win      uint16
	opts     []layers.TCPOption
	payload  []byte
	psh      bool
}

// wscaleOpt is a window scale option as Linux sends it: NOP, then WS.
func wscaleOpt(shift uint8) []layers.TCPOption {
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{shift}},
	}
}

// segDatagram is an IPv4 datagram (DF set) carrying s from src to dst.
// segTCP is s's TCP header from src to dst.
func segTCP(src, dst netip.AddrPort, s tcpSeg) *layers.TCP {
	return &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()),
		DstPort: layers.TCPPort(dst.Port()),
		Seq:     s.seq,
		Ack:     s.ack,
		Window:  s.win,
		FIN:     s.flags&fin != 0,
		SYN:     s.flags&syn != 0,
		RST:     s.flags&rst != 0,
		ACK:     s.flags&ack != 0,
		PSH:     s.psh,
		Options: s.opts,
	}
}

func segDatagram(t testing.TB, src, dst netip.AddrPort, s tcpSeg) []byte {
	t.Helper()
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	tcp := segTCP(src, dst, s)
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if len(s.payload) == 0 {
		return serialize(t, ip, tcp)
	}
	return serialize(t, ip, tcp, gopacket.Payload(s.payload))
}

func segFrame(t testing.TB, src, dst netip.AddrPort, s tcpSeg) []byte {
	return frame(t, segDatagram(t, src, dst, s))
}

// pattern is n bytes no two neighbouring 16-bit words of which are alike,
// so a checksum that skips or doubles a word shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + 3)
	}
	return b
}

// ---- map contents ----

func hostOrder(p uint16) uint16 { return netOrder(p) } // a byte swap both ways

func addr4(raw [16]byte) netip.Addr { return netip.AddrFrom4([4]byte(raw[:4])) }

// addrOf reads a map's address field of the given family.
func addrOf(family uint8, raw [16]byte) netip.Addr {
	if family == unix.AF_INET6 {
		return netip.AddrFrom16(raw)
	}
	return addr4(raw)
}

func putSNAT(t testing.TB, m *ebpf.Map, e snatEntry) {
	t.Helper()
	key := maps.CTKey{
		Family: family(e.Src.Addr()),
		Proto:  e.Proto,
		Sport:  netOrder(e.Src.Port()),
		Dport:  netOrder(e.Dst.Port()),
		Saddr:  raw16(e.Src.Addr()),
		Daddr:  raw16(e.Dst.Addr()),
	}
	val := maps.SNATValue{
		Addr:       raw16(e.Nat.Addr()),
		Port:       netOrder(e.Nat.Port()),
		Flags:      e.Flags,
		TCPFlags:   e.TCPFlags,
		LastSeenNs: 1,
		TCP:        e.TCP,
	}
	if err := m.Put(key, val); err != nil {
		t.Fatalf("seed snat %v: %v", key, err)
	}
}

func snatDump(t testing.TB, m *ebpf.Map) []snatEntry {
	t.Helper()
	var (
		out []snatEntry
		k   maps.CTKey
		v   maps.SNATValue
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if v.LastSeenNs == 0 {
			t.Errorf("snat entry %v has no last-seen time", k)
		}
		out = append(out, snatEntry{
			Proto:    k.Proto,
			Src:      netip.AddrPortFrom(addrOf(k.Family, k.Saddr), hostOrder(k.Sport)),
			Dst:      netip.AddrPortFrom(addrOf(k.Family, k.Daddr), hostOrder(k.Dport)),
			Nat:      netip.AddrPortFrom(addrOf(k.Family, v.Addr), hostOrder(v.Port)),
			Flags:    v.Flags,
			TCPFlags: v.TCPFlags,
			TCP:      v.TCP,
		})
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate snat: %v", err)
	}
	sortSNAT(out)
	return out
}

func sortSNAT(es []snatEntry) {
	slices.SortFunc(es, func(a, b snatEntry) int {
		if c := a.Src.Compare(b.Src); c != 0 {
			return c
		}
		if c := a.Dst.Compare(b.Dst); c != 0 {
			return c
		}
		return int(a.Proto) - int(b.Proto)
	})
}

// ctRows is every DNAT flow of ct and ct_new, timestamps aside.
func ctRows(t testing.TB, o *objects) []ctRow {
	t.Helper()
	var out []ctRow
	for _, m := range []*ebpf.Map{o.Ct, o.CtNew} {
		var (
			k maps.CTKey
			v maps.CTValue
		)
		it := m.Iterate()
		for it.Next(&k, &v) {
			if v.LastSeenNs == 0 {
				t.Errorf("%v entry %v has no last-seen time", m, k)
			}
			if v.Flags&maps.CTDNATReply == 0 || v.Flags&^(maps.CTDNATReply|ctFReplied) != 0 {
				t.Errorf("%v entry %v has flags %#x", m, k, v.Flags)
			}
			out = append(out, ctRow{
				CTEntry: maps.CTEntry{
					Proto:     k.Proto,
					Backend:   netip.AddrPortFrom(addr4(k.Saddr), hostOrder(k.Sport)),
					Client:    netip.AddrPortFrom(addr4(k.Daddr), hostOrder(k.Dport)),
					Dialled:   netip.AddrPortFrom(addr4(v.NatAddr), hostOrder(v.NatPort)),
					BindingID: v.BindingID,
					TCPFlags:  v.TCPFlags,
				},
				New:     m == o.CtNew,
				Replied: v.Flags&ctFReplied != 0,
				TCP:     v.TCP,
			})
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterate %v: %v", m, err)
		}
	}
	sortCTRows(out)
	return out
}

func sortCTRows(rs []ctRow) {
	slices.SortFunc(rs, func(a, b ctRow) int {
		if c := a.Backend.Compare(b.Backend); c != 0 {
			return c
		}
		if c := a.Client.Compare(b.Client); c != 0 {
			return c
		}
		return int(a.Proto) - int(b.Proto)
	})
}

// side is a tcp_side as a segment without SYN, carrying ackNum and win,
// leaves it. wscale > 0 says the side offered that scale in its SYN.
func side(ackNum uint32, win uint16, wscale uint8) maps.TCPSide {
	s := maps.TCPSide{Ack: ackNum, Window: win, Wscale: wscale, Seen: maps.TCPSideAcked}
	if wscale > 0 {
		s.Seen |= maps.TCPSideWscale
	}
	return s
}

// synAckSide is side for a SYN-ACK, whose window is never scaled.
func synAckSide(ackNum uint32, win uint16, wscale uint8) maps.TCPSide {
	s := side(ackNum, win, wscale)
	s.Seen |= maps.TCPSideSynWindow
	return s
}

// ---- checksums of whole datagrams ----

// l4ChecksumOK verifies the transport checksum of a whole datagram: TCP and
// UDP over the pseudo header (a UDP checksum of 0 is "none"), ICMP over the
// message alone.
func l4ChecksumOK(t testing.TB, src, dst netip.Addr, proto layers.IPProtocol, l4 []byte) {
	t.Helper()
	switch proto {
	case layers.IPProtocolTCP, layers.IPProtocolUDP:
		if proto == layers.IPProtocolUDP && binary.BigEndian.Uint16(l4[6:]) == 0 {
			return
		}
		if !l4SumOK(src.AsSlice(), dst.AsSlice(), proto, l4) {
			t.Errorf("%v checksum %#04x is wrong for the %d-byte datagram %s -> %s", proto,
				binary.BigEndian.Uint16(l4[l4CsumOff(proto):]), len(l4), src, dst)
		}
	case layers.IPProtocolICMPv4:
		if onesSum(0, l4) != 0xffff {
			t.Errorf("ICMP checksum %#04x is wrong for the %d-byte message", binary.BigEndian.Uint16(l4[2:]), len(l4))
		}
	default:
		t.Fatalf("no checksum check for %v", proto)
	}
}
