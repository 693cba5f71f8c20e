package bpf_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/pontoon-net/pontoon/maps"
)

// setEvents turns the datapath's events on or off, as the agent does
// while a monitor client is connected.
func setEvents(t testing.TB, o *objects, on bool) {
	t.Helper()
	cfg := maps.NewConfig(o.Config)
	v, err := cfg.Get()
	if err != nil {
		t.Fatal(err)
	}
	v.Flags &^= maps.ConfigEvents
	if on {
		v.Flags |= maps.ConfigEvents
	}
	if err := cfg.Set(v); err != nil {
		t.Fatal(err)
	}
}

// drainEvents returns every record in the ring, decoded, and checks each
// is exactly one struct event.
func drainEvents(t testing.TB, rd *ringbuf.Reader) []maps.RawEvent {
	t.Helper()
	var out []maps.RawEvent
	rd.SetDeadline(time.Now()) // whatever is there now; never waits
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.RawSample) != maps.RawEventSize {
			t.Fatalf("ring record of %d bytes, Go's RawEvent is %d: keep maps/events.go in step with struct event", len(rec.RawSample), maps.RawEventSize)
		}
		e, err := maps.ParseRawEvent(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

// TestEventsRing: with events off, nothing reaches the ring; with them on,
// a new DNAT flow (IPv4 and IPv6), its end (an RST from the backend), a
// new masqueraded flow (IPv4 and NAT66), its end (an RST from the server,
// or a FIN from the container) and a drop each write one event whose
// fields decode to the packet's addresses, and the drop names its reason.
// A flow's later packets write none.
func TestEventsRing(t *testing.T) {
	o := loadObjects(t)
	resetMaps(t, o)
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
		t.Fatal(err)
	}
	nw := maps.Network{Subnet: netip.PrefixFrom(backend, 24).Masked(), Gateway: gateway, ID: 1, Masquerade: true}
	if err := maps.NewNetworks(o.Networks).Put(nw); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 1); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewUplinks(o.Uplinks).Put(1, hostIP); err != nil {
		t.Fatal(err)
	}
	syn1 := tcpFrame(t, clientPort, tcpWeb.Host, syn)
	probe := tcpFrame(t, clientPort, ap(backend, 22), syn)

	setEvents(t, o, false)
	run(t, o.UplinkIngress, syn1)
	run(t, o.UplinkIngress, probe)
	if got := drainEvents(t, rd); len(got) != 0 {
		t.Fatalf("events off, yet the ring holds %d events: %+v", len(got), got)
	}
	resetMaps(t, o)
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewNetworks(o.Networks).Put(nw); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 1); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewUplinks(o.Uplinks).Put(1, hostIP); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb6); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(v6Host, 1); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewNetworks(o.Networks).Put(nat66Net); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewUplinks(o.Uplinks6).Put(1, v6Host); err != nil {
		t.Fatal(err)
	}
	container6, server6 := ap(v6Me, 30003), ap(v6Server, 443)
	// Kept: a source port inside the SNAT range.
	container, container2, server := ap(backend, 30001), ap(backend, 30002), ap(client, 443)
	masqSyn := tcpFrame(t, container, server, syn)

	setEvents(t, o, true)
	defer setEvents(t, o, false)
	for _, c := range []struct {
		name string
		run  func()
		want string // the event's String()
	}{
		{
			name: "new published flow",
			run:  func() { run(t, o.UplinkIngress, syn1) },
			want: fmt.Sprintf("flow_new published tcp %s -> %s to %s binding %d SYN_SENT", clientPort, tcpWeb.Host, tcpWeb.Backend, tcpWeb.ID),
		},
		{
			name: "reset ends it",
			run: func() {
				run(t, o.UplinkEgress, tcpFrame(t, tcpWeb.Backend, clientPort, rst))
			},
			want: fmt.Sprintf("flow_end published tcp %s -> %s to %s binding %d CLOSE (rst)", clientPort, tcpWeb.Host, tcpWeb.Backend, tcpWeb.ID),
		},
		{
			name: "new masqueraded flow",
			run:  func() { run(t, o.UplinkEgress, masqSyn) },
			want: fmt.Sprintf("flow_new masquerade tcp %s -> %s as %s SYN_SENT", container, server, ap(hostIP, container.Port())),
		},
		{
			name: "a masqueraded flow's next packet",
			run:  func() { run(t, o.UplinkEgress, tcpFrame(t, container, server, ack)) },
		},
		{
			// The server's RST arrives at the translated address; the
			// event names the flow as its start did.
			name: "the server's reset ends the masqueraded flow",
			run:  func() { run(t, o.UplinkIngress, tcpFrame(t, server, ap(hostIP, container.Port()), rst)) },
			want: fmt.Sprintf("flow_end masquerade tcp %s -> %s as %s CLOSE (rst)", container, server, ap(hostIP, container.Port())),
		},
		{
			name: "a second masqueraded flow",
			run:  func() { run(t, o.UplinkEgress, tcpFrame(t, container2, server, syn)) },
			want: fmt.Sprintf("flow_new masquerade tcp %s -> %s as %s SYN_SENT", container2, server, ap(hostIP, container2.Port())),
		},
		{
			name: "the container's FIN ends it",
			run:  func() { run(t, o.UplinkEgress, tcpFrame(t, container2, server, fin|ack)) },
			want: fmt.Sprintf("flow_end masquerade tcp %s -> %s as %s %s (fin)", container2, server, ap(hostIP, container2.Port()), maps.TCPState(maps.CTTCPSyn|maps.CTTCPFin)),
		},
		{
			name: "the server's FIN after it writes none",
			run:  func() { run(t, o.UplinkIngress, tcpFrame(t, server, ap(hostIP, container2.Port()), fin|ack)) },
		},
		{
			name: "new published flow over IPv6",
			run:  func() { run(t, o.UplinkIngress, tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn)) },
			want: fmt.Sprintf("flow_new published tcp %s -> %s to %s binding %d SYN_SENT", v6ClientPort, tcpWeb6.Host, tcpWeb6.Backend, tcpWeb6.ID),
		},
		{
			name: "its next packet",
			run:  func() { run(t, o.UplinkIngress, tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn)) },
		},
		{
			name: "reset ends the IPv6 flow",
			run:  func() { run(t, o.UplinkEgress, tcp6Frame(t, tcpWeb6.Backend, v6ClientPort, rst)) },
			want: fmt.Sprintf("flow_end published tcp %s -> %s to %s binding %d CLOSE (rst)", v6ClientPort, tcpWeb6.Host, tcpWeb6.Backend, tcpWeb6.ID),
		},
		{
			name: "new NAT66 flow",
			run:  func() { run(t, o.UplinkEgress, tcp6Frame(t, container6, server6, syn)) },
			want: fmt.Sprintf("flow_new masquerade tcp %s -> %s as %s SYN_SENT", container6, server6, ap(v6Host, container6.Port())),
		},
		{
			name: "its next packet writes none",
			run:  func() { run(t, o.UplinkEgress, tcp6Frame(t, container6, server6, syn)) },
		},
		{
			name: "the server's reset ends the NAT66 flow",
			run:  func() { run(t, o.UplinkIngress, tcp6Frame(t, server6, ap(v6Host, container6.Port()), rst|ack)) },
			want: fmt.Sprintf("flow_end masquerade tcp %s -> %s as %s CLOSE (rst)", container6, server6, ap(v6Host, container6.Port())),
		},
		{
			name: "drop with its reason",
			run:  func() { run(t, o.UplinkIngress, probe) },
			want: fmt.Sprintf("drop     drop_not_published tcp %s -> %s ifindex 1, %d bytes", clientPort, ap(backend, 22), len(probe)),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.run()
			got := drainEvents(t, rd)
			if c.want == "" {
				if len(got) != 0 {
					t.Fatalf("%d events, want none: %+v", len(got), got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(got), got)
			}
			if e := got[0].View(); e.String() != c.want {
				t.Errorf("event\n %q, want\n %q", e, c.want)
			}
		})
	}
}

// TestEventsBudget: a flood of drops writes at most the per-CPU budget to
// the ring, and what it holds back is counted, never lost silently.
func TestEventsBudget(t *testing.T) {
	o := loadObjects(t)
	resetMaps(t, o)
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	nw := maps.Network{Subnet: netip.PrefixFrom(backend, 24).Masked(), Gateway: gateway, ID: 1}
	if err := maps.NewNetworks(o.Networks).Put(nw); err != nil {
		t.Fatal(err)
	}
	setEvents(t, o, true)
	defer setEvents(t, o, false)
	// One test run is one CPU; 3,000 runs take milliseconds, so they
	// straddle at most one second boundary: at most two budgets.
	const budget, runs = 1000, 3000
	ret, _, err := o.UplinkIngress.Benchmark(tcpFrame(t, clientPort, ap(backend, 22), syn), runs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ret != 2 { // TC_ACT_SHOT
		t.Fatalf("returned %d, want the drop", ret)
	}
	written := len(drainEvents(t, rd))
	losses, err := maps.ReadEventLosses(o.EventBudget)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d runs: %d events written, %+v", runs, written, losses)
	if written > 2*budget || written < budget {
		t.Errorf("%d events written, want between one and two budgets (%d)", written, budget)
	}
	if got := uint64(written) + losses.Suppressed + losses.RingFull; got < runs {
		t.Errorf("written %d + held back %+v = %d, want every one of the %d drops accounted for", written, losses, got, runs)
	}
}

// TestDropEvents: the drop reasons a namespace world cannot easily bring
// about (cmd/pontoon's TestDropReasons produces the others), produced by
// the packets that cause them. Each is counted under its name (what
// 'status' and /metrics read) and written to the ring with its reason.
func TestDropEvents(t *testing.T) {
	o := loadObjects(t)
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	server := ap(notHost, 443)
	nw := maps.Network{Subnet: netip.PrefixFrom(backend, 24).Masked(), Gateway: gateway, ID: 1, Masquerade: true}
	masq := flowSeed{networks: []maps.Network{nw}, uplinks: map[uint32]netip.Addr{1: hostIP}, config: oneSNATPort}
	p80 := maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 80), Backend: ap(backend, 80), ID: 21}
	p8080 := maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 8080), Backend: ap(backend, 80), ID: 22}
	for _, c := range []struct {
		reason   string
		seed     flowSeed
		before   []step // run first, their events ignored
		egress   bool
		src, dst netip.AddrPort
		tcp      tcpFlags
	}{
		{
			// Two bindings to one backend port, one client source port:
			// the second flow would share the first's reply tuple.
			reason: "drop_ct_clash",
			seed:   flowSeed{seed: seed{bindings: []maps.Binding{p80, p8080}, hostAddrs: []netip.Addr{hostIP}}},
			before: []step{{in: tcpFrame(t, clientPort, p80.Host, syn)}},
			src:    clientPort, dst: p8080.Host, tcp: syn,
		},
		{
			// The range's one port is taken by another flow to the server.
			reason: "drop_snat_exhausted",
			seed: masq.withSNAT([]snatEntry{
				{Proto: maps.TCP, Src: ap(backend2, 6000), Dst: server, Nat: ap(hostIP, 50000), Flags: maps.SNATForward},
				{Proto: maps.TCP, Src: server, Dst: ap(hostIP, 50000), Nat: ap(backend2, 6000), Flags: maps.SNATReverse},
			}),
			egress: true, src: ap(backend, 7000), dst: server, tcp: syn,
		},
		{
			// A reverse half without its forward half.
			reason: "drop_snat_orphan",
			seed: masq.withSNAT([]snatEntry{
				{Proto: maps.TCP, Src: server, Dst: ap(hostIP, 50000), Nat: ap(backend, 7000), Flags: maps.SNATReverse},
			}),
			src: server, dst: ap(hostIP, 50000), tcp: ack,
		},
	} {
		t.Run(c.reason, func(t *testing.T) {
			seedFlow(t, o, c.seed)
			setEvents(t, o, true)
			defer setEvents(t, o, false)
			for _, s := range c.before {
				run(t, o.UplinkIngress, s.in)
			}
			drainEvents(t, rd)
			zeroStats(t, o.Stats)
			prog := o.UplinkIngress
			if c.egress {
				prog = o.UplinkEgress
			}
			in := tcpFrame(t, c.src, c.dst, c.tcp)
			if ret, _ := run(t, prog, in); ret != 2 { // TC_ACT_SHOT
				t.Errorf("returned %#x, want TC_ACT_SHOT", ret)
			}
			stats, err := maps.NewStats(o.Stats).Read()
			if err != nil {
				t.Fatal(err)
			}
			if got := nonZero(stats); len(got) != 1 || got[c.reason] != 1 {
				t.Errorf("counters %v, want %s once", got, c.reason)
			}
			got := drainEvents(t, rd)
			if len(got) != 1 {
				t.Fatalf("%d events, want the drop: %+v", len(got), got)
			}
			e := got[0].View()
			if e.Type != "drop" || e.Reason != c.reason || e.Source != c.src || e.Destination != c.dst || e.Proto != "tcp" || e.Bytes != uint32(len(in)) {
				t.Errorf("event %q, want a drop %s of tcp %s -> %s, %d bytes", e, c.reason, c.src, c.dst, len(in))
			}
		})
	}
}

// BenchmarkEvents: what a packet costs with no monitor listening and with
// one, for a translated packet of an established flow (no event either
// way) and for a dropped packet (an event each, while the budget lasts).
// Compare dnat/monitor=off with BenchmarkDNAT/bindings=2 of a build
// without events.
func BenchmarkEvents(b *testing.B) {
	for _, on := range []bool{false, true} {
		monitor := map[bool]string{false: "off", true: "on"}[on]
		b.Run("dnat/monitor="+monitor, func(b *testing.B) {
			o := loadObjects(b)
			cycle := []maps.Binding{
				{Proto: maps.TCP, Host: ap(hostIP, 80), Backend: ap(backend, 8080), ID: 1},
				{Proto: maps.TCP, Host: ap(backend, 8080), Backend: ap(hostIP, 80), ID: 2},
			}
			if err := maps.NewBindings(o.Bindings).PutBatch(cycle); err != nil {
				b.Fatal(err)
			}
			putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: ap(backend, 8080), Client: clientPort, Dialled: ap(hostIP, 80), BindingID: 1})
			putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: ap(hostIP, 80), Client: clientPort, Dialled: ap(backend, 8080), BindingID: 2})
			benchPrefilter(b, o)
			setEvents(b, o, on)
			benchRun(b, o, o.UplinkIngress, tcpFrame(b, clientPort, ap(hostIP, 80), ack), "dnat")
		})
		b.Run("drop/monitor="+monitor, func(b *testing.B) {
			o := loadObjects(b)
			rd, err := ringbuf.NewReader(o.Events)
			if err != nil {
				b.Fatal(err)
			}
			defer rd.Close()
			nw := maps.Network{Subnet: netip.PrefixFrom(backend, 24).Masked(), Gateway: gateway, ID: 1}
			if err := maps.NewNetworks(o.Networks).Put(nw); err != nil {
				b.Fatal(err)
			}
			setEvents(b, o, on)
			b.ResetTimer()
			ret, perRun, err := o.UplinkIngress.Benchmark(tcpFrame(b, clientPort, ap(backend, 22), syn), b.N, b.ResetTimer)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if ret != 2 {
				b.Fatalf("returned %d, want TC_ACT_SHOT", ret)
			}
			b.ReportMetric(float64(perRun.Nanoseconds()), "ns/pkt")
			if written := len(drainEvents(b, rd)); on != (written > 0) {
				b.Fatalf("monitor %s: %d events written", monitor, written)
			}
		})
	}
}
