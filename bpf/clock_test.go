package bpf_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/maps"
)

// TestFlowTimesFollowTheClock: the programs read the clock once a jiffy
// and reuse it (ct_now): a new flow's start is still CLOCK_MONOTONIC
// within a tick or two, and one opened later starts later, under tc and
// under XDP (each object keeps its own reading).
func TestFlowTimesFollowTheClock(t *testing.T) {
	o := loadObjects(t)
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
		t.Fatal(err)
	}
	// Coarse time lags by up to a tick, the reuse by up to another: 10 ms
	// at HZ=100, the slowest tick Linux has.
	const slack = 50 * time.Millisecond
	ct := maps.NewCT(o.Ct, o.CtNew)
	var prev time.Duration
	for i, prog := range []*ebpf.Program{o.UplinkIngress, o.UplinkIngress, o.xdp(t)} {
		if i > 0 {
			time.Sleep(4 * slack)
		}
		client := netip.AddrPortFrom(clientPort.Addr(), clientPort.Port()+uint16(i))
		before := maps.MonotonicNow()
		run(t, prog, tcpFrame(t, client, tcpWeb.Host, syn))
		after := maps.MonotonicNow()
		entries, err := ct.All()
		if err != nil {
			t.Fatal(err)
		}
		var created time.Duration
		for _, e := range entries {
			if e.Client == client {
				created = time.Duration(e.CreatedNs)
			}
		}
		if created < before-slack || created > after {
			t.Fatalf("flow %d (%s): created at %s, want between %s and %s", i, client, created, before-slack, after)
		}
		if i > 0 && created-prev < 2*slack {
			t.Fatalf("flow %d (%s) opened %s after the one before, created %s after it: the programs' clock stood still", i, client, 4*slack, created-prev)
		}
		prev = created
	}
}
