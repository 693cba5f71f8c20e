package main

import (
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/maps"
)

// TestPrefilterFollowsState checks that the agent turns the datapath's
// prefilter on with a bit for every published port and network, widens it
// before a publish writes its bindings (the port carries traffic at once),
// and drops masqueraded flows of an earlier masquerade range on restart,
// whose replies the filter would hide.
func TestPrefilterFollowsState(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	c1 := w.containers[0]
	w.ok("network", "create", "pf", "--subnet", "10.78.0.0/24")
	w.ok("endpoint", "attach", "pf", "c1", "--netns", c1.Path())
	c1.ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80")

	bits := readPrefilter(t, w.pins)
	want := new(maps.PrefilterBits)
	want.AddBinding(maps.Binding{Proto: maps.TCP, Host: netip.MustParseAddrPort("0.0.0.0:8080")})
	want.AddNetwork(netip.MustParsePrefix("10.78.0.0/24"))
	if !covers(bits[:], want[:]) {
		t.Fatal("prefilter lacks the published port or the network's /16")
	}
	wantBindings := new(maps.BindingFilterBits)
	wantBindings.AddBinding(maps.Binding{Proto: maps.TCP, Host: netip.MustParseAddrPort("0.0.0.0:8080")})
	if !covers(readBindingFilter(t, w.pins)[:], wantBindings[:]) {
		t.Fatal("binding filter lacks the wildcard binding's port")
	}
	requireFiltersOn(t, w.pins)

	// Ports published while the filters are on are reachable straight
	// away: on every address, and on the host's address alone, which the
	// binding filter keeps apart.
	w.ok("port", "publish", "c1", "8181:80")
	dial := netip.AddrPortFrom(w.hostIP, 8181).String()
	res, err := w.outside.Dial("tcp", dial)
	expectEcho(t, res, err, w.outsideIP, dial)
	w.ok("port", "publish", "c1", w.hostIP.String()+":8282:80")
	dial = netip.AddrPortFrom(w.hostIP, 8282).String()
	res, err = w.outside.Dial("tcp", dial)
	expectEcho(t, res, err, w.outsideIP, dial)
	wantBindings.AddBinding(maps.Binding{Proto: maps.TCP, Host: netip.AddrPortFrom(w.hostIP, 8282)})
	if !covers(readBindingFilter(t, w.pins)[:], wantBindings[:]) {
		t.Fatal("binding filter lacks the bit of the binding on the host's address")
	}

	// A flow of an earlier range: port 40000 is outside the default one.
	snatMap := openPin(t, w.pins, "snat")
	fwd := maps.CTKey{Family: 2, Proto: maps.TCP, Sport: netPort(33000), Dport: netPort(443),
		Saddr: raw4("10.78.0.2"), Daddr: raw4("192.0.2.9")}
	rev := maps.CTKey{Family: 2, Proto: maps.TCP, Sport: netPort(443), Dport: netPort(40000),
		Saddr: raw4("192.0.2.9"), Daddr: raw4(w.hostIP.String())}
	if err := snatMap.Put(fwd, maps.SNATValue{Addr: raw4(w.hostIP.String()), Port: netPort(40000), Flags: maps.SNATForward}); err != nil {
		t.Fatal(err)
	}
	if err := snatMap.Put(rev, maps.SNATValue{Addr: raw4("10.78.0.2"), Port: netPort(33000), Flags: maps.SNATReverse}); err != nil {
		t.Fatal(err)
	}
	w.agent.stop(syscall.SIGTERM)
	w.startAgent()
	var v maps.SNATValue
	for _, k := range []maps.CTKey{fwd, rev} {
		if err := snatMap.Lookup(k, &v); err == nil {
			t.Errorf("masqueraded flow half %+v outside the range survived the restart", k)
		}
	}
	if !covers(readPrefilter(t, w.pins)[:], want[:]) {
		t.Fatal("prefilter after restart lacks the published port or the network")
	}
	requireFiltersOn(t, w.pins)
}

// requireFiltersOn fails unless a port nothing uses has its lookups
// skipped (a map turned off reads as all "maybe", which covers anything)
// and the agent says the masquerade range holds.
func requireFiltersOn(t *testing.T, pins string) {
	t.Helper()
	unused := maps.Binding{Proto: maps.TCP, Host: netip.MustParseAddrPort("0.0.0.0:9")}
	var port maps.PrefilterBits
	port.AddBinding(unused)
	if covers(readPrefilter(t, pins)[:], port[:]) {
		t.Fatal("prefilter is off: TCP port 9, which nothing uses, is still looked up")
	}
	wild := new(maps.BindingFilterBits)
	wild.AddBinding(unused)
	if covers(readBindingFilter(t, pins)[:], wild[:]) {
		t.Fatal("binding filter is off: wildcard TCP port 9, which nothing uses, is still looked up")
	}
	if cfg := readConfig(t, pins); cfg.Flags&maps.ConfigSNATInRange == 0 {
		t.Fatalf("config flags %#x: the agent does not say the masquerade range holds", cfg.Flags)
	}
}

func openPin(t *testing.T, pins, name string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pins, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func readPrefilter(t *testing.T, pins string) *maps.PrefilterBits {
	t.Helper()
	bits, err := maps.NewPrefilter(openPin(t, pins, "prefilter_skip")).Read()
	if err != nil {
		t.Fatal(err)
	}
	return bits
}

func readConfig(t *testing.T, pins string) maps.ConfigValue {
	t.Helper()
	v, err := maps.NewConfig(openPin(t, pins, "config")).Get()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readBindingFilter(t *testing.T, pins string) *maps.BindingFilterBits {
	t.Helper()
	bits, err := maps.NewBindingFilter(openPin(t, pins, "bfilter_skip")).Read()
	if err != nil {
		t.Fatal(err)
	}
	return bits
}

// covers says whether every bit of want is set in have.
func covers(have, want []uint64) bool {
	for i := range want {
		if have[i]&want[i] != want[i] {
			return false
		}
	}
	return true
}

func netPort(p uint16) uint16 { return p>>8 | p<<8 }

func raw4(s string) [16]byte {
	var out [16]byte
	a := netip.MustParseAddr(s).As4()
	copy(out[:], a[:])
	return out
}
