package loader_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestSecuritySYNFloodSparesEstablishedIPv6 is
// TestSecuritySYNFloodSparesEstablished over IPv6: spoofed SYNs from the
// documentation range, twice ct_new's worth, at a published IPv6
// port leave an idle established IPv6 connection through it working, fill
// ct_new alone and let a new client in.
func TestSecuritySYNFloodSparesEstablishedIPv6(t *testing.T) {
	testenv.RequirePrivileges(t)
	w := testenv.NewWorld(t)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	v6 := addIPv6(t, w, "2001:db8:18::/64", "fd00:89::/64")
	hostIP, outsideIP, aIP := v6.HostIP, v6.OutsideIP, v6.AIP
	// Apart from the link above: 65,535 spoofed hosts.
	spoofed := netip.MustParsePrefix("2001:db8:f000::/112")
	// The SYN-ACKs to the spoofed sources leave through the uplink, as on
	// a real host, and die in the outside namespace.
	w.Host.IP(t, "-6", "route", "add", spoofed.String(), "via", outsideIP.String())
	w.Outside.IP(t, "-6", "route", "add", "blackhole", spoofed.String())
	w.A.ServeTCP(t, "[::]:80")

	var mode string
	if err := w.Host.Helper(t, "", &mode, "load", pins, w.Uplink, cgroup, string(loader.TCX), "bridge="+w.Bridge); err != nil {
		t.Fatal(err)
	}
	configure(t, w, pins, false, v6.networks(w))
	v6.putHostAddrs(t, w, pins)
	if err := maps.NewBindings(openPinned(t, pins, "bindings")).Put(maps.Binding{
		Proto: maps.TCP, Host: netip.AddrPortFrom(netip.IPv6Unspecified(), 8080), Backend: netip.AddrPortFrom(aIP, 80), ID: 1,
	}); err != nil {
		t.Fatal(err)
	}
	ct, ctNew := openPinned(t, pins, "ct"), openPinned(t, pins, "ct_new")
	published := netip.AddrPortFrom(hostIP, 8080)

	conn := connectIdle(t, w.Outside, netip.AddrPort{}, published)
	conn.roundTrip(t, "before the flood", outsideIP)
	client := conn.LocalAddr().String()
	if got := ctEntriesFor(t, ct, client); got != 1 {
		t.Fatalf("ct holds %d entries for the established connection from %s, want 1", got, client)
	}

	// A goal the datapath counts, as over IPv4, but two turns of ct_new
	// rather than four: the table is the one the IPv4 test turns over
	// four times, and two are past its LRU's slack at half the cost
	// (the 5.10 VM sends ~1,700 SYNs a second).
	ctNewSize := int(ctNew.MaxEntries())
	goal := uint64(2 * ctNewSize)
	before := readStats(t, pins)
	stats := maps.NewStats(openPinned(t, pins, "stats"))
	sent, err := w.Outside.FloodSYN(testenv.SYNFlood{
		Dst:     published,
		Sources: []netip.Prefix{spoofed},
		Count:   400000,
		Limit:   5 * time.Minute,
		Enough: func() bool {
			now, err := stats.Read()
			return err == nil && moved(before, now, "dnat") >= goal
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	after := readStats(t, pins)
	dnat := moved(before, after, "dnat")
	entries, err := maps.NewCT(ctNew).All()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: %d IPv6 SYNs in %s; dnat moved by %d; ct_new holds %d of %d", sent.Sent, sent.Elapsed.Round(time.Millisecond), dnat, len(entries), ctNewSize)
	if dnat < goal {
		t.Fatalf("only %d SYNs were translated, want at least %d (twice ct_new) for the flood to mean anything (counters: %s)",
			dnat, goal, counters(t, pins))
	}
	if len(entries) < ctNewSize*9/10 {
		t.Errorf("ct_new holds %d entries after the flood, want it (nearly) full: %d", len(entries), ctNewSize)
	}
	if answered, err := maps.NewCT(ct).All(); err != nil || len(answered) != 1 || answered[0].Client.String() != client {
		t.Errorf("ct holds %v after the flood (%v), want the established connection from %s alone", answered, err, client)
	}
	conn.roundTrip(t, "after the flood", outsideIP)
	res, err := w.Outside.Dial("tcp", published.String())
	expect(t, res, err, outsideIP, published.String())
}
