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
// a new DNAT flow, its end (an RST from the backend) and a drop each
// write one event whose fields decode to
// the packet's addresses, and the drop names its reason.
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
			want: fmt.Sprintf("flow_end published tcp %s -> %s to %s binding %d CLOSE", clientPort, tcpWeb.Host, tcpWeb.Backend, tcpWeb.ID),
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
