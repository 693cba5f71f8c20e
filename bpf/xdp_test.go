package bpf_test

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

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
// the loader shares one set of maps between all programs. The caller
// closes it.
func loadXDP(t testing.TB, m *bpf.TcUplinkMaps) *ebpf.Program {
	t.Helper()
	spec, err := bpf.LoadForKernel(bpf.LoadXdpUplink)
	if err != nil {
		t.Fatal(err)
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

// xdpMarked reads struct xdp_meta: XDP_META_MAGIC, XDP_META_TRANSLATED.
func xdpMarked(meta []byte) bool {
	return len(meta) == 8 && binary.NativeEndian.Uint32(meta) == 0x706e746e && binary.NativeEndian.Uint32(meta[4:])&1 != 0
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
