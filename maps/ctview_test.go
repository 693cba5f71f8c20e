package maps

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func TestTCPState(t *testing.T) {
	for _, c := range []struct {
		flags uint8
		want  string
	}{
		{0, "NONE"},
		{CTTCPSyn, "SYN_SENT"},
		{CTTCPSyn | CTTCPSynAck, "SYN_RECV"},
		{CTTCPSyn | CTTCPSynAck | CTTCPEstablished, "ESTABLISHED"},
		{CTTCPSyn | CTTCPSynAck | CTTCPEstablished | CTTCPFin, "FIN_WAIT"},
		{CTTCPSyn | CTTCPEstablished | CTTCPFin | CTTCPRst, "CLOSE"},
	} {
		if got := TCPState(c.flags); got != c.want {
			t.Errorf("TCPState(%#x) = %s, want %s", c.flags, got, c.want)
		}
	}
}

func newTestMap(t *testing.T, key, value any, max uint32) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.Hash, KeySize: uint32(binary.Size(key)), ValueSize: uint32(binary.Size(value)), MaxEntries: max,
	})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func tupleKey(p Proto, src, dst netip.AddrPort) CTKey {
	f, s := rawAddr(src.Addr())
	_, d := rawAddr(dst.Addr())
	return CTKey{Family: f, Proto: p, Sport: netPort(src.Port()), Dport: netPort(dst.Port()), Saddr: s, Daddr: d}
}

// TestSNATFlows: a flow's two entries read as one flow, judged by the
// later stamp and the flags of both as GC judges them; a half without its
// other half and the host's echo id show as such.
func TestSNATFlows(t *testing.T) {
	m := newTestMap(t, CTKey{}, SNATValue{}, 64)
	ap := netip.MustParseAddrPort
	container, server, translated := ap("10.77.0.2:40000"), ap("192.0.2.9:443"), ap("198.19.0.1:2000")
	now := 100 * time.Hour
	stamp := func(ago time.Duration) uint64 { return uint64(now - ago) }
	_, trAddr := rawAddr(translated.Addr())
	_, ctAddr := rawAddr(container.Addr())
	put := func(k CTKey, v SNATValue) {
		if err := m.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	// Forward idle 50 s, reply idle 5 s: the flow is 5 s idle.
	put(tupleKey(TCP, container, server), SNATValue{Addr: trAddr, Port: netPort(translated.Port()), Flags: SNATForward,
		TCPFlags: CTTCPSyn | CTTCPEstablished, LastSeenNs: stamp(50 * time.Second)})
	put(tupleKey(TCP, server, translated), SNATValue{Addr: ctAddr, Port: netPort(container.Port()), Flags: SNATReverse,
		TCPFlags: CTTCPSynAck, LastSeenNs: stamp(5 * time.Second)})
	// A reply half alone, and the host's own ping id.
	put(tupleKey(UDP, ap("192.0.2.10:53"), ap("198.19.0.1:2001")), SNATValue{Addr: ctAddr, Port: netPort(41000), Flags: SNATReverse, LastSeenNs: stamp(time.Second)})
	put(tupleKey(1, ap("192.0.2.11:0"), ap("198.19.0.1:7")), SNATValue{Addr: trAddr, Port: netPort(7), Flags: SNATReverse | SNATHost, LastSeenNs: stamp(0)})

	l := DefaultLifetimes()
	flows, err := NewSNAT(m).Flows(now, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 3 {
		t.Fatalf("got %d flows, want 3: %v", len(flows), flows)
	}
	byProto := map[string]SNATView{}
	for _, f := range flows {
		byProto[f.Proto] = f
	}
	tcp := byProto["tcp"]
	want := SNATView{Proto: "tcp", State: "ESTABLISHED", Container: container, Translated: translated, Server: server,
		Idle: 5 * time.Second, ExpiresIn: l.TCPEstablished - 5*time.Second}
	if tcp != want {
		t.Errorf("tcp flow:\n got %+v\nwant %+v", tcp, want)
	}
	if u := byProto["udp"]; u.Half != "reply only" || u.Container != ap("10.77.0.2:41000") || u.Server != ap("192.0.2.10:53") || u.Translated != ap("198.19.0.1:2001") || u.State != "" {
		t.Errorf("reply-only udp half: %+v", u)
	}
	if i := byProto["icmp"]; i.Half != "host" {
		t.Errorf("host echo id: %+v", i)
	}

	if n, err := CountEntries(m); err != nil || n != 4 {
		t.Errorf("CountEntries = %d, %v; want 4", n, err)
	}
	if n, err := NewSNAT(m).Flush(); err != nil || n != 4 {
		t.Errorf("Flush = %d, %v; want 4", n, err)
	}
	if n, _ := CountEntries(m); n != 0 {
		t.Errorf("%d entries left after Flush", n)
	}
}

func TestCTView(t *testing.T) {
	m := newTestMap(t, CTKey{}, CTValue{}, 64)
	ap := netip.MustParseAddrPort
	client, dialled, backend := ap("198.19.0.2:50000"), ap("198.19.0.1:8080"), ap("10.77.0.2:80")
	now := 10 * time.Hour
	_, nat := rawAddr(dialled.Addr())
	// Keyed by the reply: backend -> client.
	if err := m.Put(tupleKey(TCP, backend, client), CTValue{NatAddr: nat, NatPort: netPort(dialled.Port()), Flags: CTDNATReply,
		TCPFlags: CTTCPSyn | CTTCPSynAck, BindingID: 7, LastSeenNs: uint64(now - 2*time.Second), CreatedNs: uint64(now - 83*time.Second)}); err != nil {
		t.Fatal(err)
	}
	es, err := NewCT(m).All()
	if err != nil || len(es) != 1 {
		t.Fatalf("All: %v %v", es, err)
	}
	l := DefaultLifetimes()
	got := es[0].View("ct_new", now, l)
	want := CTFlow{Proto: "tcp", State: "SYN_RECV", Client: client, Dialled: dialled, Backend: backend, Table: "ct_new",
		BindingID: 7, AgeSeconds: 83, Idle: 2 * time.Second, ExpiresIn: l.TCPOpening - 2*time.Second}
	if got != want {
		t.Errorf("view:\n got %+v\nwant %+v", got, want)
	}
	if got.AgeString() != "1m23s" {
		t.Errorf("age %q, want 1m23s", got.AgeString())
	}
	js, err := json.Marshal(got)
	if err != nil || !strings.Contains(string(js), `"age_seconds":83,`) || strings.Contains(string(js), "age_at_least") {
		t.Errorf("JSON %s (%v): want age_seconds 83 and no age_at_least", js, err)
	}
	// A flow carried over from a build without created_ns: its age is
	// counted from its last packet before the upgrade, a lower bound.
	upgraded := CTEntry{Proto: TCP, LastSeenNs: uint64(now - 2*time.Second), CreatedNs: uint64(now - 5*time.Second), AgeFromUpgrade: true}
	if f := upgraded.View("ct", now, l); !f.AgeAtLeast || f.AgeString() != ">=5s" {
		t.Errorf("upgraded flow: age %q (at least %v), want >=5s", f.AgeString(), f.AgeAtLeast)
	}
	if n, err := NewCT(m).Flush(); err != nil || n != 1 {
		t.Errorf("Flush = %d, %v; want 1", n, err)
	}
}

// BenchmarkCountEntries is the cost of reading a full ct's fill, which
// each scrape and each GC pass pays per watched table.
func BenchmarkCountEntries(b *testing.B) {
	const n = 131072
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: uint32(binary.Size(CTKey{})), ValueSize: uint32(binary.Size(CTValue{})), MaxEntries: n})
	if err != nil {
		b.Skipf("needs root (CAP_BPF) to create BPF maps: %v", err)
	}
	defer m.Close()
	keys, values := make([]CTKey, n), make([]CTValue, n)
	for i := range keys {
		keys[i] = CTKey{Family: familyInet, Proto: TCP, Sport: uint16(i), Dport: uint16(i >> 16)}
	}
	if _, err := m.BatchUpdate(keys, values, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if got, err := CountEntries(m); err != nil || got != n {
			b.Fatalf("counted %d, %v", got, err)
		}
	}
}
