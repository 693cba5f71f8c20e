package control

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/maps"
)

// TestMonitorHub: each client gets the events its filter wants, a client
// that does not read loses events (counted) without holding up the
// others, and the conntrack GC's idle ends reach clients only for flows
// the datapath did not see close.
func TestMonitorHub(t *testing.T) {
	ep := netip.MustParseAddr("10.1.0.2")
	other := netip.MustParseAddr("10.1.0.3")
	flow := maps.Event{Type: "flow_new", Source: netip.MustParseAddrPort("198.51.100.2:4000"), Translated: netip.AddrPortFrom(ep, 80)}
	drop := maps.Event{Type: "drop", Reason: "drop_icc", Source: netip.AddrPortFrom(other, 1), Destination: netip.AddrPortFrom(ep, 2)}
	elsewhere := maps.Event{Type: "drop", Reason: "drop_spoofed", Source: netip.AddrPortFrom(other, 1)}

	a := &Agent{}
	if a.idleFlowEnds(0) != nil {
		t.Error("the GC reports idle flows with nobody listening")
	}
	all, _ := a.events.add(monitorFilter{})
	drops, _ := a.events.add(monitorFilter{drops: true, endpoint: ep})
	for _, e := range []maps.Event{flow, drop, elsewhere} {
		a.events.publish(e)
	}
	got := func(s *monitorSub) []string {
		var out []string
		for len(s.ch) > 0 {
			e := <-s.ch
			out = append(out, e.Type+" "+e.Reason)
		}
		return out
	}
	if g := got(all); len(g) != 3 {
		t.Errorf("unfiltered client got %q, want all three", g)
	}
	if g := got(drops); len(g) != 1 || g[0] != "drop drop_icc" {
		t.Errorf("--drops --endpoint client got %q, want the drop naming the endpoint", g)
	}

	for range cap(drops.ch) + 5 {
		a.events.publish(drop)
	}
	if n := drops.lost.Load(); n != 5 {
		t.Errorf("a client that does not read lost %d events, want 5", n)
	}
	got(all)

	gone := a.idleFlowEnds(time.Hour)
	if gone == nil {
		t.Fatal("no idle flow ends while clients listen")
	}
	udp := maps.CTEntry{Proto: maps.UDP, Backend: netip.AddrPortFrom(ep, 53), Client: netip.MustParseAddrPort("198.51.100.2:5000"), Dialled: netip.MustParseAddrPort("198.51.100.1:53"), BindingID: 3}
	closed := maps.CTEntry{Proto: maps.TCP, TCPFlags: maps.CTTCPFin, Backend: netip.AddrPortFrom(ep, 80)}
	gone(udp)
	gone(closed)
	g := <-all.ch
	if g.Type != "flow_end" || g.Ended != "idle" || g.Source != udp.Client || g.Destination != udp.Dialled || g.Translated != udp.Backend || g.BindingID != 3 {
		t.Errorf("idle end %+v, want the UDP flow's", g)
	}
	if want := "flow_end published udp 198.51.100.2:5000 -> 198.51.100.1:53 to 10.1.0.2:53 binding 3 (idle)"; g.String() != want {
		t.Errorf("idle end reads %q, want %q", g, want)
	}
	if len(all.ch) != 0 {
		t.Errorf("a TCP flow the datapath saw close got a second end: %+v", <-all.ch)
	}

	a.events.remove(all)
	if _, open := <-all.ch; open {
		t.Error("a removed client's stream is still open")
	}
	a.events.close()
	got(drops)
	if _, open := <-drops.ch; open {
		t.Error("closing the hub left a stream open")
	}
	if _, ok := a.events.add(monitorFilter{}); ok {
		t.Error("a closed hub took a new client")
	}
}

// TestMonitorMessageText: the lines 'pontoon monitor' prints for its own
// messages and for a drop.
func TestMonitorMessageText(t *testing.T) {
	for _, c := range []struct {
		m    MonitorMessage
		want string
	}{
		{MonitorMessage{Event: maps.Event{Type: MonitorStart}}, "monitoring the datapath's events (Ctrl-C stops)"},
		{MonitorMessage{Event: maps.Event{Type: MonitorLost}, Lost: 212}, "lost     212 events (rate limit, or the reader fell behind)"},
		{MonitorMessage{Event: maps.Event{Type: "drop", Reason: "drop_protocol", Ifindex: 7, Bytes: 54}}, "drop     drop_protocol a packet that is not IP, ifindex 7, 54 bytes"},
	} {
		if got := c.m.String(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}
