package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// monitorProc is a running `pontoon monitor -o json`.
type monitorProc struct {
	cmd    *exec.Cmd
	stderr strings.Builder
	done   chan struct{}

	mu   sync.Mutex
	msgs []control.MonitorMessage
	more chan struct{} // signalled on each message
}

// startMonitor runs `pontoon monitor -o json ARGS` until the test ends,
// and returns once the agent says events flow.
func (w *world) startMonitor(args ...string) *monitorProc {
	w.t.Helper()
	m := &monitorProc{done: make(chan struct{}), more: make(chan struct{}, 1)}
	m.cmd = exec.Command(bin, append([]string{"--socket", w.socket, "monitor", "-o", "json"}, args...)...)
	m.cmd.Stderr = &m.stderr
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		w.t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var msg control.MonitorMessage
			if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
				msg = control.MonitorMessage{Event: maps.Event{Type: "unparsable: " + sc.Text()}}
			}
			m.mu.Lock()
			m.msgs = append(m.msgs, msg)
			m.mu.Unlock()
			select {
			case m.more <- struct{}{}:
			default:
			}
		}
		m.cmd.Wait()
	}()
	w.t.Cleanup(func() { m.stop() })
	m.waitFor(w.t, "the start line", func(msg control.MonitorMessage) bool { return msg.Type == control.MonitorStart })
	return m
}

// waitFor returns the first message that matches; the deadline is a hang
// guard, not a timing assertion.
func (m *monitorProc) waitFor(t testing.TB, what string, match func(control.MonitorMessage) bool) control.MonitorMessage {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for _, msg := range m.received() {
			if match(msg) {
				return msg
			}
		}
		select {
		case <-m.more:
		case <-m.done:
			t.Fatalf("monitor ended before %s: %s\nreceived %+v", what, m.stderr.String(), m.received())
		case <-deadline:
			t.Fatalf("no %s from the monitor; received %+v", what, m.received())
		}
	}
}

func (m *monitorProc) received() []control.MonitorMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]control.MonitorMessage(nil), m.msgs...)
}

// stop interrupts the monitor as Ctrl-C would and returns its exit code.
func (m *monitorProc) stop() int {
	m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	return m.cmd.ProcessState.ExitCode()
}

// udpProbe is one datagram from src:port to dst:9 (discard), as a whole
// IPv4 packet for SendIPv4.
func udpProbe(t *testing.T, src, dst netip.Addr, port layers.UDPPort) []byte {
	t.Helper()
	ip := testenv.IPv4Header(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: port, DstPort: 9}
	udp.SetNetworkLayerForChecksum(ip)
	p, err := testenv.Serialize(ip, udp, gopacket.Payload("pontoon probe"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// eventsOn reads the datapath's CONFIG_F_EVENTS flag.
func (w *world) eventsOn(t *testing.T) bool {
	t.Helper()
	v, err := maps.NewConfig(openPin(t, w.pins, "config")).Get()
	if err != nil {
		t.Fatal(err)
	}
	return v.Flags&maps.ConfigEvents != 0
}

// TestMonitor: while a monitor runs the datapath writes events, and a
// connection to a published port shows as a new flow and its end, with
// client, dialled address, backend and binding; a connection the
// container opens to the outside shows as a new masqueraded flow, with the
// container's address and the uplink's it left with, and its end, with the
// same addresses; a drop shows with its
// reason, to a --drops --endpoint monitor too, which sees no flow. With
// every monitor gone, the datapath writes none again.
func TestMonitor(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	c1 := w.containers[0]
	w.ok("network", "create", "mon", "--subnet", "10.78.0.0/24")
	var ep control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "mon", "c1", "--netns", c1.Path())
	c1.ServeTCP(t, ":80")
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "publish", "c1", "8080:80")
	if w.eventsOn(t) {
		t.Fatal("events are on with no monitor running")
	}

	t.Run("bad input is refused in one line", func(t *testing.T) {
		for _, args := range [][]string{{"monitor", "--endpoint", "nope"}, {"monitor", "extra"}} {
			r := w.pt(args...)
			if r.code == 0 || r.stderr == "" || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("pontoon %s: exit %d, stderr %q: want a one-line refusal", strings.Join(args, " "), r.code, r.stderr)
			}
		}
		if w.eventsOn(t) {
			t.Error("a refused monitor left events on")
		}
	})

	all := w.startMonitor()
	drops := w.startMonitor("--drops", "--endpoint", "c1")
	if !w.eventsOn(t) {
		t.Fatal("events are off while two monitors run")
	}

	dialled := netip.AddrPortFrom(w.hostIP, 8080)
	backend := netip.AddrPortFrom(ep.IP, 80)
	conn := w.outside.Connect(t, dialled.String())
	conn.RoundTrip(t, w.outsideIP)
	client := netip.MustParseAddrPort(conn.LocalAddr().String())
	newFlow := all.waitFor(t, "new flow from "+client.String(), func(m control.MonitorMessage) bool {
		return m.Type == "flow_new" && m.Source == client
	})
	if newFlow.Destination != dialled || newFlow.Translated != backend || newFlow.BindingID != ms[0].ID || newFlow.Proto != "tcp" || newFlow.Kind != "published" {
		t.Errorf("new flow %+v: want %s -> %s to %s, binding %d", newFlow, client, dialled, backend, ms[0].ID)
	}
	conn.Close()
	end := all.waitFor(t, "end of the flow from "+client.String(), func(m control.MonitorMessage) bool {
		return m.Type == "flow_end" && m.Source == client
	})
	if end.Destination != dialled || end.Translated != backend || (end.State != "FIN_WAIT" && end.State != "CLOSE") {
		t.Errorf("flow end %+v: want %s -> %s to %s, FIN_WAIT or CLOSE", end, client, dialled, backend)
	}

	// The container dials out: masqueraded to the uplink's address.
	w.outside.ServeTCP(t, ":7070")
	server := netip.AddrPortFrom(w.outsideIP, 7070)
	out := c1.Connect(t, server.String())
	out.RoundTrip(t, w.hostIP)
	container := netip.MustParseAddrPort(out.LocalAddr().String())
	masq := all.waitFor(t, "masqueraded flow from "+container.String(), func(m control.MonitorMessage) bool {
		return m.Type == "flow_new" && m.Source == container
	})
	if masq.Kind != "masquerade" || masq.Destination != server || masq.Translated.Addr() != w.hostIP || masq.Proto != "tcp" {
		t.Errorf("masqueraded flow %+v: want masquerade tcp %s -> %s as %s", masq, container, server, w.hostIP)
	}
	out.Close()
	masqEnd := all.waitFor(t, "end of the masqueraded flow from "+container.String(), func(m control.MonitorMessage) bool {
		return m.Type == "flow_end" && m.Source == container
	})
	if masqEnd.Kind != "masquerade" || masqEnd.Destination != server || masqEnd.Translated != masq.Translated || masqEnd.Proto != "tcp" ||
		(masqEnd.Ended != "fin" && masqEnd.Ended != "rst") {
		t.Errorf("masqueraded flow end %+v: want masquerade tcp %s -> %s as %s, ended by fin or rst", masqEnd, container, server, masq.Translated)
	}

	// The outside dials the container's own address: not published.
	w.outside.IP(t, "route", "add", "10.78.0.0/24", "via", w.hostIP.String())
	direct := netip.AddrPortFrom(ep.IP, 9)
	if err := w.outside.SendIPv4(udpProbe(t, w.outsideIP, ep.IP, 4444)); err != nil {
		t.Fatal(err)
	}
	source := netip.AddrPortFrom(w.outsideIP, 4444)
	isProbe := func(m control.MonitorMessage) bool { return m.Type == "drop" && m.Source == source }
	for name, mon := range map[string]*monitorProc{"monitor": all, "monitor --drops --endpoint c1": drops} {
		d := mon.waitFor(t, "drop of "+source.String(), isProbe)
		if d.Reason != "drop_not_published" || d.Destination != direct || d.Proto != "udp" || d.Bytes == 0 {
			t.Errorf("%s: drop %+v: want drop_not_published of udp %s -> %s", name, d, source, direct)
		}
	}
	for _, m := range drops.received() {
		if m.Type != "drop" && m.Type != control.MonitorStart && m.Type != control.MonitorLost {
			t.Errorf("monitor --drops got %+v", m)
		}
	}

	for name, mon := range map[string]*monitorProc{"monitor": all, "monitor --drops": drops} {
		if code := mon.stop(); code != 0 {
			t.Errorf("%s exited %d on Ctrl-C: %s", name, code, mon.stderr.String())
		}
	}
	// The agent notices the streams closing on its own time: wait.
	for deadline := time.Now().Add(30 * time.Second); w.eventsOn(t); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) { // a hang guard
			t.Fatal("events are still on a while after every monitor stopped")
		}
	}

	// An agent that stops ends the streams: the monitor says so in one
	// line and fails.
	last := w.startMonitor()
	w.agent.stop(syscall.SIGTERM)
	select {
	case <-last.done:
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("the monitor still runs after the agent stopped")
	}
	msg := strings.TrimSpace(last.stderr.String())
	if code := last.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(msg, "ended the event stream") || strings.Contains(msg, "\n") {
		t.Errorf("monitor of a stopped agent: exit %d, stderr %q; want 1 and one line saying the stream ended", code, msg)
	}
}

// TestDropReasons: each drop reason a namespace world can produce, by the
// packets that cause it, counted by name in 'status' and /metrics and
// shown with its reason by 'pontoon monitor'. The others are produced by
// BPF_PROG_TEST_RUN tests in bpf/ (see the report of issue 15).
func TestDropReasons(t *testing.T) {
	w := newWorld(t, 4)
	w.startAgent("--metrics-addr", metricsAddr)
	c1, c2, c3, c4 := w.containers[0], w.containers[1], w.containers[2], w.containers[3]
	w.ok("network", "create", "quiet", "--subnet", "10.81.0.0/24", "--icc=false")
	w.ok("network", "create", "other", "--subnet", "10.82.0.0/24")
	w.ok("network", "create", "small", "--subnet", "10.83.0.0/24", "--mtu", "1280")
	var e1, e2, e3, e4 control.Endpoint
	w.okJSON(&e1, "endpoint", "attach", "quiet", "c1", "--netns", c1.Path())
	w.okJSON(&e2, "endpoint", "attach", "quiet", "c2", "--netns", c2.Path())
	w.okJSON(&e3, "endpoint", "attach", "other", "c3", "--netns", c3.Path())
	w.okJSON(&e4, "endpoint", "attach", "small", "c4", "--netns", c4.Path())
	w.ok("port", "publish", "c4", "5399:53/udp")
	smallGateway := netip.MustParseAddr("10.83.0.1")
	w.outside.IP(t, "route", "add", "10.81.0.0/24", "via", w.hostIP.String())
	mon := w.startMonitor("--drops")

	udp := func(t *testing.T, from *testenv.Netns, src, dst netip.Addr, port layers.UDPPort) {
		if err := from.SendIPv4(udpProbe(t, src, dst, port)); err != nil {
			t.Fatal(err)
		}
	}
	spoofed := netip.MustParseAddr("10.81.0.200")
	for _, c := range []struct {
		reason string
		source netip.Addr // what the monitor shows as the dropped packet's source
		send   func(t *testing.T)
	}{
		{"drop_not_published", w.outsideIP, func(t *testing.T) { udp(t, w.outside, w.outsideIP, e1.IP, 5001) }},
		{"drop_isolation", e1.IP, func(t *testing.T) { udp(t, c1, e1.IP, e3.IP, 5002) }},
		{"drop_icc", e1.IP, func(t *testing.T) { udp(t, c1, e1.IP, e2.IP, 5003) }},
		{"drop_spoofed", spoofed, func(t *testing.T) { udp(t, c1, spoofed, w.outsideIP, 5004) }},
		{"drop_unmasqueraded", e1.IP, func(t *testing.T) {
			p, err := testenv.Serialize(testenv.IPv4Header(e1.IP, w.outsideIP, layers.IPProtocolGRE),
				&layers.GRE{Protocol: layers.EthernetTypeIPv4}, gopacket.Payload("pontoon gre"))
			if err != nil {
				t.Fatal(err)
			}
			if err := c1.SendIPv4(p); err != nil {
				t.Fatal(err)
			}
		}},
		// c3 sends a DF datagram too big for the small network to a port
		// published by c4: hairpinned, it cannot be forwarded, and the
		// stack would drop it (its source is the host's by then). The
		// event shows the packet as translated: from small's gateway.
		{"drop_frag_needed", smallGateway, func(t *testing.T) {
			ip := testenv.IPv4Header(e3.IP, w.hostIP, layers.IPProtocolUDP)
			ip.Flags = layers.IPv4DontFragment
			udp := &layers.UDP{SrcPort: 5005, DstPort: 5399}
			udp.SetNetworkLayerForChecksum(ip)
			p, err := testenv.Serialize(ip, udp, gopacket.Payload(make([]byte, 1400)))
			if err != nil {
				t.Fatal(err)
			}
			if err := c3.SendIPv4(p); err != nil {
				t.Fatal(err)
			}
		}},
		// The same hairpin with a TTL that forwarding would expire: the
		// FIB will not forward it and, translated, the stack could not
		// take it either. bridge_ingress counts every hairpin the FIB
		// refuses for a reason other than size as drop_rewrite.
		{"drop_rewrite", smallGateway, func(t *testing.T) {
			ip := testenv.IPv4Header(e3.IP, w.hostIP, layers.IPProtocolUDP)
			ip.TTL = 1
			udp := &layers.UDP{SrcPort: 5006, DstPort: 5399}
			udp.SetNetworkLayerForChecksum(ip)
			p, err := testenv.Serialize(ip, udp, gopacket.Payload("pontoon ttl 1"))
			if err != nil {
				t.Fatal(err)
			}
			if err := c3.SendIPv4(p); err != nil {
				t.Fatal(err)
			}
		}},
		{"drop_protocol", netip.Addr{}, func(t *testing.T) {
			mac, err := net.ParseMAC(e1.MAC)
			if err != nil {
				t.Fatal(err)
			}
			// 0x88b5, IEEE's local experimental EtherType: neither IP nor ARP.
			frame, err := testenv.Serialize(
				&layers.Ethernet{SrcMAC: mac, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetType(0x88b5)},
				gopacket.Payload("pontoon experimental ethertype"))
			if err != nil {
				t.Fatal(err)
			}
			if err := c1.SendFrames("eth0", frame); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.reason, func(t *testing.T) {
			before := w.counter(c.reason)
			metric := func() float64 {
				v, _ := metricValue(parseScrape(t, w.scrapeMetrics()), "pontoon_datapath_packets_total", map[string]string{"reason": c.reason, "verdict": "drop"})
				return v
			}
			metricBefore := metric()
			c.send(t)
			mon.waitFor(t, c.reason, func(m control.MonitorMessage) bool {
				return m.Type == "drop" && m.Reason == c.reason && (!c.source.IsValid() || m.Source.Addr() == c.source)
			})
			if got := w.counter(c.reason); got <= before {
				t.Errorf("status: %s %d, was %d", c.reason, got, before)
			}
			if metric() <= metricBefore {
				t.Errorf("/metrics: %s did not move from %v", c.reason, metricBefore)
			}
			if text := w.ok("status"); !strings.Contains(text, "drop "+c.reason+":") {
				t.Errorf("status text does not name %s:\n%s", c.reason, text)
			}
		})
	}
	fams := parseScrape(t, w.scrapeMetrics())
	if n, ok := metricValue(fams, "pontoon_monitor_clients", nil); !ok || n != 1 {
		t.Errorf("pontoon_monitor_clients = %v (found %t) while one monitor runs", n, ok)
	}
	for _, cause := range []string{"budget", "ring_full"} {
		if _, ok := metricValue(fams, "pontoon_monitor_events_lost_total", map[string]string{"cause": cause}); !ok {
			t.Errorf("no pontoon_monitor_events_lost_total{cause=%q} in /metrics", cause)
		}
	}
	if code := mon.stop(); code != 0 {
		t.Errorf("monitor exited %d: %s", code, mon.stderr.String())
	}
}
