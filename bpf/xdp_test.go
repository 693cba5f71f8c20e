package bpf_test

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/maps"
)

// XDP verdicts as BPF_PROG_TEST_RUN returns them.
const (
	xdpDrop = 1
	xdpPass = 2
)

// tcActShot is TC_ACT_SHOT.
const tcActShot = 2

// loadXDP loads xdp_uplink.c's program on the maps of the tc objects, as
// the loader shares one set of maps between all programs, with the tweaks
// the tc spec had. The caller closes it.
func loadXDP(t testing.TB, m *bpf.TcUplinkMaps, tweaks ...func(*ebpf.CollectionSpec)) *ebpf.Program {
	t.Helper()
	spec, err := bpf.LoadForKernel(bpf.LoadXdpUplink)
	if err != nil {
		t.Fatal(err)
	}
	for _, tweak := range tweaks {
		tweak(spec)
	}
	// The same maps: tc's, by their section names.
	repl := map[string]*ebpf.Map{}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if _, ok := spec.Maps[name]; ok {
			repl[name] = v.Field(i).Interface().(*ebpf.Map)
		}
	}
	var objs bpf.XdpUplinkObjects
	err = spec.LoadAndAssign(&objs.XdpUplinkPrograms, &ebpf.CollectionOptions{MapReplacements: repl})
	if err == nil {
		return objs.UplinkXdp
	}
	// 6.1 refuses the walk of a SYN's options: the loader then takes
	// the build that leaves those SYNs to tc (no case here has any).
	t.Logf("full xdp_uplink refused (%v): testing the build that leaves SYNs with options to tc", err)
	fallback, ferr := bpf.LoadForKernel(bpf.LoadXdpUplinkSynoptsToTc)
	if ferr != nil {
		t.Fatal(ferr)
	}
	for _, tweak := range tweaks {
		tweak(fallback)
	}
	var objs2 bpf.XdpUplinkSynoptsToTcObjects
	if ferr := fallback.LoadAndAssign(&objs2.XdpUplinkSynoptsToTcPrograms, &ebpf.CollectionOptions{MapReplacements: repl}); ferr != nil {
		var ve *ebpf.VerifierError
		if errors.As(ferr, &ve) {
			t.Fatalf("load xdp_uplink: %v; fallback: %+v", err, ve)
		}
		t.Fatalf("load xdp_uplink: %v; fallback: %v", err, ferr)
	}
	return objs2.UplinkXdp
}

// TestXDPLoads: the XDP program loads on the tc programs' maps on every
// kernel the project supports, also below xdpTestMinKernel, where the
// tables that run it skip.
func TestXDPLoads(t *testing.T) {
	o := loadObjects(t)
	prog := loadXDP(t, &o.TcUplinkMaps)
	defer prog.Close()
	if prog.Type() != ebpf.XDP {
		t.Errorf("loaded a %s program, want XDP", prog.Type())
	}
}

// xdpParses says whether the XDP program looks at a frame at all:
// Ethernet, IPv4 without options, not a fragment, a whole TCP or UDP
// header. The rest it leaves to tc untouched and uncounted.
func xdpParses(f []byte) bool {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14] != 0x45 {
		return false
	}
	if binary.BigEndian.Uint16(f[20:])&0x3fff != 0 {
		return false
	}
	totLen := int(binary.BigEndian.Uint16(f[16:]))
	switch f[23] {
	case 6:
		return len(f) >= 14+20+20 && totLen >= 40 && f[14+20+12]>>4 >= 5
	case 17:
		return len(f) >= 14+20+8 && totLen >= 28
	}
	return false
}

// struct xdp_meta's flags: XDP_META_TRANSLATED, XDP_META_MISS.
const (
	xdpNoteTranslated = 1 << 0
	xdpNoteMiss       = 1 << 1
)

// xdpNote reads struct xdp_meta (XDP_META_MAGIC, flags): the flags of
// the note, 0 for none.
func xdpNote(meta []byte) uint32 {
	if len(meta) != 8 || binary.NativeEndian.Uint32(meta) != 0x706e746e {
		return 0
	}
	return binary.NativeEndian.Uint32(meta[4:])
}

// xdpMarked says whether meta is the note of a translated packet.
func xdpMarked(meta []byte) bool {
	return xdpNote(meta) == xdpNoteTranslated
}

// runXDPCase runs one case of a tc ingress table through the XDP program
// with the same seed. What XDP decides (DNAT, drops of loopback-only
// bindings and of sources not allowed, conntrack refusals) must come out
// as tc's would; everything else must reach tc exactly as it came, with
// no counter moved and conntrack untouched.
func runXDPCase(t *testing.T, o *objects, c datapathCase) {
	seedCase(t, o, c, skbModes[0])
	ctBefore := ctDump(t, o.Ct, o.CtNew)
	ret, got, err := tryRun(o.xdp(t), c.in, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The run hands back the metadata in front of the frame: XDP never
	// changes a frame's length, so what is over is the note to tc.
	meta, got := got[:len(got)-len(c.in)], got[len(got)-len(c.in):]
	if marked := xdpMarked(meta); marked != (ret == xdpPass && c.stat == "dnat" && xdpParses(c.in)) {
		t.Errorf("metadata %x: translated note %v, want it exactly on packets XDP translated", meta, marked)
	}
	// The miss note lets tc skip its look: it must be on exactly the
	// packets XDP parses that tc would pass as matching nothing.
	if missed := xdpNote(meta) == xdpNoteMiss; missed != (c.stat == "pass_no_match" && xdpParses(c.in)) {
		t.Errorf("metadata %x: miss note %v, tc's verdict %s: want the note exactly on packets tc finds nothing for", meta, missed, c.stat)
	}
	wantCT := c.ct
	if wantCT == nil {
		wantCT = c.seed.ct
	}
	handled := xdpParses(c.in)
	switch {
	case handled && (c.stat == "dnat" || c.stat == "drop_not_allowed" || c.stat == "drop_ct_clash" || c.stat == "drop_ct_full"):
		wantRet := uint32(xdpPass)
		if c.ret == tcActShot {
			wantRet = xdpDrop
		}
		checkRun(t, o, c.in, ret, got, wantRet, c.out, c.stat, wantCT)
	case handled && c.stat == "pass_local_only":
		checkRun(t, o, c.in, ret, got, xdpDrop, nil, "drop_local_only", ctBefore)
	default:
		checkRun(t, o, c.in, ret, got, xdpPass, nil, "", ctBefore)
	}
}

// TestXDPDefersWhatItCannotDo pins down the split: the packets tc's table
// translates that XDP must leave to tc.
func TestXDPDefersWhatItCannotDo(t *testing.T) {
	for _, f := range [][]byte{
		tcpFrame(t, clientPort, tcpWeb.Host, syn, routerAlert),
		tcpFrame(t, clientPort, tcpWeb.Host, syn, moreFragments),
		udpFrame(t, clientPort, udpApp.Host, fragOffset),
		frame(t, icmpDatagram(t, client, hostIP, echoRequest, 1, []byte("ping"))),
		arpFrame(t),
		ipv6Frame(t),
	} {
		if xdpParses(f) {
			t.Errorf("xdpParses takes a frame XDP must leave to tc:\n%x", f)
		}
	}
}

// allowCases are --allow-from's: the same table runs through tc and XDP.
func allowCases(t *testing.T) []datapathCase {
	host := []netip.Addr{hostIP, hostIP2}
	web := tcpWeb
	web.Allowlist = true
	other := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.50"), 40000)
	allow := map[uint32][]netip.Prefix{web.ID: {netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.1.2.3/32")}}
	return []datapathCase{
		{
			name: "allow-from lets a source in the list in",
			seed: seed{bindings: []maps.Binding{web}, hostAddrs: host, allow: allow},
			in:   tcpFrame(t, clientPort, web.Host, syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, web.Backend, syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: web.Backend, Client: clientPort, Dialled: web.Host, BindingID: web.ID, TCPFlags: maps.CTTCPSyn}},
		},
		{
			name: "allow-from drops a source outside the list",
			seed: seed{bindings: []maps.Binding{web}, hostAddrs: host, allow: allow},
			in:   tcpFrame(t, other, web.Host, syn),
			ret:  tcActShot,
			stat: "drop_not_allowed",
		},
		{
			name: "allow-from drops a source outside the list on an established flow too",
			seed: seed{bindings: []maps.Binding{web}, hostAddrs: host, allow: allow, ct: []maps.CTEntry{{Proto: maps.TCP, Backend: web.Backend, Client: other, Dialled: web.Host, BindingID: web.ID, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}}},
			in:   tcpFrame(t, other, web.Host, ack),
			ret:  tcActShot,
			stat: "drop_not_allowed",
		},
		{
			name: "allow-from of another binding does not let a source in",
			seed: seed{bindings: []maps.Binding{web}, hostAddrs: host, allow: map[uint32][]netip.Prefix{99: {netip.MustParsePrefix("0.0.0.0/0")}}},
			in:   tcpFrame(t, clientPort, web.Host, syn),
			ret:  tcActShot,
			stat: "drop_not_allowed",
		},
		{
			name: "no allowlist flag: the allow map is not consulted",
			seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, allow: map[uint32][]netip.Prefix{tcpWeb.ID: {netip.MustParsePrefix("10.0.0.0/8")}}},
			in:   tcpFrame(t, clientPort, tcpWeb.Host, syn),
			ret:  actUnspec,
			out:  tcpFrame(t, clientPort, tcpWeb.Backend, syn),
			stat: "dnat",
			ct:   []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: tcpWeb.ID, TCPFlags: maps.CTTCPSyn}},
		},
	}
}

func TestAllowFrom(t *testing.T) {
	o := loadObjects(t)
	runTable(t, o, allowCases(t))
}

// TestXDPSharesCTWithTC: a flow XDP opened is one tc's reverse NAT
// knows.
func TestXDPSharesCTWithTC(t *testing.T) {
	o := loadObjects(t)
	c := datapathCase{seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: []netip.Addr{hostIP}}}
	seedCase(t, o, c, skbModes[0])
	// XDP opens the flow; tc's reverse NAT on egress finds it.
	ret, out := run(t, o.xdp(t), tcpFrame(t, clientPort, tcpWeb.Host, syn))
	if ret != xdpPass || !xdpMarked(out[:8]) {
		t.Fatalf("xdp returned %d and metadata %x, want XDP_PASS and the translated note", ret, out[:8])
	}
	ret, got := run(t, o.UplinkEgress, tcpFrame(t, tcpWeb.Backend, clientPort, syn|ack))
	if ret != actUnspec {
		t.Fatalf("egress returned %#x", ret)
	}
	if want := tcpFrame(t, tcpWeb.Host, clientPort, syn|ack); !slices.Equal(got, want) {
		t.Errorf("reply after an XDP DNAT: %s", describeDiff(want, got))
	}
}

// xdpMD mirrors struct xdp_md, the context of an XDP test run: data is
// where the packet starts behind the metadata the run is given.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// TestXDPMissNote: XDP tells tc "nothing matched" on exactly the packets
// tc's own look would pass as matching nothing, and on no packet tc has
// work for (a masqueraded flow's reply, an orphaned one, a container's
// address the outside must not reach). tc trusts the note and skips its
// look, so a note too many would let such a packet by untouched.
func TestXDPMissNote(t *testing.T) {
	o := loadObjects(t)
	host := []netip.Addr{hostIP}
	server443 := ap(server, 443)
	reply := masquerading.withSNAT(snatFlow(maps.TCP, ap(backend, 40001), server443, ap(hostIP, 40001)))
	reply.bindings, reply.hostAddrs = []maps.Binding{tcpWeb}, host
	orphan := masquerading.withSNAT(snatFlow(maps.TCP, ap(backend, 40001), server443, ap(hostIP, 40001))[1:])
	orphan.hostAddrs = host
	routed := masqNet
	routed.Routed = true
	for _, c := range []struct {
		name string
		seed flowSeed
		in   []byte
		stat string
		note bool
	}{
		{"a port of the host nothing publishes", flowSeed{seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host}}, tcpFrame(t, clientPort, ap(hostIP, 22), syn), "pass_no_match", true},
		{"udp to the host", flowSeed{seed: seed{bindings: []maps.Binding{udpApp}, hostAddrs: host}}, udpFrame(t, clientPort, ap(hostIP, 53)), "pass_no_match", true},
		{"a masqueraded flow's reply", reply, tcpFrame(t, server443, ap(hostIP, 40001), syn|ack), "snat_reverse", false},
		{"an orphaned masquerade reply", orphan, tcpFrame(t, server443, ap(hostIP, 40001), ack), "drop_snat_orphan", false},
		{"a container's address, not routed", flowSeed{seed: seed{hostAddrs: host}, networks: []maps.Network{masqNet}}, tcpFrame(t, clientPort, ap(backend, 22), syn), "drop_not_published", false},
		{"a container's address, routed", flowSeed{seed: seed{hostAddrs: host}, networks: []maps.Network{routed}}, tcpFrame(t, clientPort, ap(backend, 22), syn), "pass_no_match", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			filter := c.seed.seed
			filter.networks = c.seed.networks
			for _, prefilter := range []bool{false, true} {
				seedFlow(t, o, c.seed)
				setPrefilter(t, o, filter, prefilter)
				zeroStats(t, o.Stats)
				run(t, o.UplinkIngress, c.in)
				stats, err := maps.NewStats(o.Stats).Read()
				if err != nil {
					t.Fatal(err)
				}
				if got := nonZero(stats); len(got) != 1 || got[c.stat] != 1 {
					t.Fatalf("prefilter %v: tc counted %v, want %s: the case does not test what it says", prefilter, got, c.stat)
				}
				seedFlow(t, o, c.seed)
				setPrefilter(t, o, filter, prefilter)
				zeroStats(t, o.Stats)
				ret, out := run(t, o.xdp(t), c.in)
				meta := out[:len(out)-len(c.in)]
				if ret != xdpPass || (xdpNote(meta) == xdpNoteMiss) != c.note {
					t.Errorf("prefilter %v: XDP returned %d with metadata %x, want XDP_PASS and the miss note %v", prefilter, ret, meta, c.note)
				}
				// tc counts what XDP leaves it, noted or not.
				stats, err = maps.NewStats(o.Stats).Read()
				if err != nil {
					t.Fatal(err)
				}
				if got := nonZero(stats); len(got) != 0 {
					t.Errorf("prefilter %v: XDP counted %v, want nothing", prefilter, got)
				}
			}
		})
	}
}

// TestXDPDropsForeignMetadata: metadata a frame brings into XDP (a veth
// peer's XDP_TX or redirect hands its own over) never reaches tc, even
// when it reads as our note: a packet XDP leaves to tc unjudged goes
// with no metadata, and a judged one with exactly its own note.
func TestXDPDropsForeignMetadata(t *testing.T) {
	o := loadObjects(t)
	prog := o.xdp(t)
	resetMaps(t, o)
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 2); err != nil {
		t.Fatal(err)
	}
	forged := binary.NativeEndian.AppendUint32(binary.NativeEndian.AppendUint32(nil, 0x706e746e), xdpNoteMiss|xdpNoteTranslated)
	forged = append(forged, forged...) // 16 bytes: more than a note
	for _, c := range []struct {
		name string
		in   []byte
		want uint32 // the note's flags
	}{
		{"a fragment, left to tc", udpFrame(t, clientPort, udpApp.Host, fragOffset), 0},
		{"an icmp echo, left to tc", frame(t, icmpDatagram(t, client, hostIP, echoRequest, 1, []byte("ping"))), 0},
		{"a miss", tcpFrame(t, clientPort, ap(hostIP, 22), syn), xdpNoteMiss},
		{"a dnat", tcpFrame(t, clientPort, tcpWeb.Host, syn), xdpNoteTranslated},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearMap(t, o.Ct)
			clearMap(t, o.CtNew)
			for _, meta := range [][]byte{forged[:8], forged} {
				in := slices.Concat(meta, c.in)
				md := xdpMD{Data: uint32(len(meta)), DataEnd: uint32(len(in))}
				opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Context: md}
				ret, err := prog.Run(&opts)
				if err != nil {
					t.Fatal(err)
				}
				out := opts.DataOut
				got := out[:len(out)-len(c.in)]
				if ret != xdpPass {
					t.Fatalf("returned %d, want XDP_PASS", ret)
				}
				if c.want == 0 && len(got) != 0 {
					t.Errorf("with %d bytes of metadata in: %x left for tc, want none", len(meta), got)
				}
				if c.want != 0 && (len(got) != 8 || xdpNote(got) != c.want) {
					t.Errorf("with %d bytes of metadata in: %x left for tc, want the note %#x alone", len(meta), got, c.want)
				}
				clearMap(t, o.Ct)
				clearMap(t, o.CtNew)
			}
		})
	}
}

// TestXDPDropEvents: XDP's drops reach `pontoon monitor` as tc's do: one
// event each while a monitor listens, with the reason, the packet's
// addresses as they arrived and its length; none when nobody listens.
func TestXDPDropEvents(t *testing.T) {
	o := loadObjects(t)
	prog := o.xdp(t)
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	host := []netip.Addr{hostIP}
	allowed := tcpWeb
	allowed.Allowlist = true
	other := ap(netip.MustParseAddr("203.0.113.50"), 40000)
	// A binding published on loopback only, as the agent keeps one for a
	// host address too (Put derives the flag from a loopback address).
	localOnly := maps.Binding{Proto: maps.UDP, Host: ap(hostIP, 5353)}
	localOnlyRaw := map[maps.BindingKey]maps.BindingValue{localOnly.Key(): {BackendAddr: raw16(backend), BackendPort: netOrder(53), Flags: 1, ID: 9}}
	for _, c := range []struct {
		reason   string
		seed     seed
		src, dst netip.AddrPort
		udp      bool
	}{
		{"drop_not_allowed", seed{bindings: []maps.Binding{allowed}, hostAddrs: host, allow: map[uint32][]netip.Prefix{allowed.ID: {netip.MustParsePrefix("198.51.100.0/24")}}}, other, allowed.Host, false},
		{"drop_local_only", seed{raw: localOnlyRaw, hostAddrs: host}, clientPort, localOnly.Host, true},
		{"drop_local_only", seed{hostAddrs: host}, clientPort, ap(netip.MustParseAddr("127.0.0.1"), 80), false},
	} {
		t.Run(c.reason+" to "+c.dst.String(), func(t *testing.T) {
			seedCase(t, o, datapathCase{seed: c.seed}, skbModes[0])
			in := tcpFrame(t, c.src, c.dst, syn)
			proto := "tcp"
			if c.udp {
				in, proto = udpFrame(t, c.src, c.dst), "udp"
			}
			for _, on := range []bool{false, true} {
				setEvents(t, o, on)
				drainEvents(t, rd)
				zeroStats(t, o.Stats)
				if ret, _ := run(t, prog, in); ret != xdpDrop {
					t.Fatalf("returned %d, want XDP_DROP", ret)
				}
				stats, err := maps.NewStats(o.Stats).Read()
				if err != nil {
					t.Fatal(err)
				}
				if got := nonZero(stats); len(got) != 1 || got[c.reason] != 1 {
					t.Errorf("counters %v, want %s once", got, c.reason)
				}
				got := drainEvents(t, rd)
				if !on {
					if len(got) != 0 {
						t.Errorf("monitor off: %d events, want none: %+v", len(got), got)
					}
					continue
				}
				if len(got) != 1 {
					t.Fatalf("%d events, want the drop: %+v", len(got), got)
				}
				e := got[0].View()
				if e.Type != "drop" || e.Reason != c.reason || e.Source != c.src || e.Destination != c.dst || e.Proto != proto || e.Bytes != uint32(len(in)) {
					t.Errorf("event %q, want a drop %s of %s %s -> %s, %d bytes", e, c.reason, proto, c.src, c.dst, len(in))
				}
			}
			setEvents(t, o, false)
		})
	}
}
