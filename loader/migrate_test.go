package loader_test

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// ctValueV1Size is struct ct_value before created_ns.
const ctValueV1Size = 48

// TestCTUpgradeKeepsFlows: pins of a build whose ct_value had no created
// time, holding an established connection, are upgraded by the next Load:
// the connection goes on through the new programs, and its entry shows an
// age counted from its last packet before the upgrade, marked as a lower
// bound. A connection opened after the upgrade has its real age.
func TestCTUpgradeKeepsFlows(t *testing.T) {
	testenv.RequirePrivileges(t)
	w := testenv.NewWorld(t)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	w.A.ServeTCP(t, ":80")
	load := func() {
		t.Helper()
		var mode string
		if err := w.Host.Helper(t, "", &mode, "load", pins, w.Uplink, cgroup, "tcx", "bridge="+w.Bridge); err != nil {
			t.Fatal(err)
		}
	}
	load()
	if err := maps.NewNetworks(openPinned(t, pins, "networks")).Put(maps.Network{
		Subnet: netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(), Gateway: w.Gateway, ID: 1,
	}); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewBindings(openPinned(t, pins, "bindings")).PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), 8080), Backend: netip.AddrPortFrom(w.AIP, 80), ID: 1},
	}); err != nil {
		t.Fatal(err)
	}
	hostTCP := netip.AddrPortFrom(w.HostIP, 8080).String()
	conn := w.Outside.Connect(t, hostTCP)
	conn.RoundTrip(t, w.OutsideIP)

	// What the old build left: the same flows in tables of the old
	// layout, pinned. Once the new programs are attached, the tables the
	// old ones used are emptied, so the connection can only go on if the
	// upgrade carried it to the programs that now run. Not before the
	// load: the old programs still carry the connection's keepalives
	// (Go's, every 15 s) until then, and the load takes longer than that
	// in a slow VM; with an empty table they would pass one to the host,
	// which has no socket for it and resets the connection.
	lastSeen := map[uint64]bool{}
	attached := openPinned(t, pins, "ct")
	var emptyAttached []func()
	for _, name := range []string{"ct", "ct_new"} {
		cur := openPinned(t, pins, name)
		var (
			k maps.CTKey
			v maps.CTValue
		)
		spec := &ebpf.MapSpec{Type: cur.Type(), KeySize: cur.KeySize(), ValueSize: ctValueV1Size, MaxEntries: cur.MaxEntries()}
		old, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		var keys []maps.CTKey
		it := cur.Iterate()
		for it.Next(&k, &v) {
			raw, err := binary.Append(nil, binary.NativeEndian, v)
			if err != nil {
				t.Fatal(err)
			}
			if err := old.Put(k, raw[:ctValueV1Size]); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
			lastSeen[v.LastSeenNs] = true
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		emptyAttached = append(emptyAttached, func() {
			for _, k := range keys {
				if err := cur.Delete(k); err != nil {
					t.Fatal(err)
				}
			}
		})
		path := filepath.Join(pins, name)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := old.Pin(path); err != nil {
			t.Fatal(err)
		}
	}
	load()
	for _, empty := range emptyAttached {
		empty()
	}
	if n := ctEntriesFor(t, attached, conn.LocalAddr().String()); n != 0 {
		t.Fatalf("the old programs' ct still has %d entries of the connection", n)
	}
	conn.RoundTrip(t, w.OutsideIP)

	ct := openPinned(t, pins, "ct")
	if ct.ValueSize() == ctValueV1Size {
		t.Fatalf("ct is still of the old layout")
	}
	now := maps.MonotonicNow()
	var found int
	entries, err := maps.NewCT(ct).All()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Client.String() != conn.LocalAddr().String() {
			continue
		}
		found++
		f := e.View("ct", now, maps.Lifetimes{})
		if !e.AgeFromUpgrade || !f.AgeAtLeast || !strings.HasPrefix(f.AgeString(), ">=") {
			t.Errorf("upgraded flow %s: age %q, want a lower bound (>=)", f, f.AgeString())
		}
		if !lastSeen[e.CreatedNs] {
			t.Errorf("upgraded flow %s: created %d, want its last packet before the upgrade (one of %v)", f, e.CreatedNs, lastSeen)
		}
		if f.State != "ESTABLISHED" {
			t.Errorf("upgraded flow %s: state %s, want ESTABLISHED", f, f.State)
		}
	}
	if found != 1 {
		t.Fatalf("%d ct entries for the connection after the upgrade, want 1: %v", found, entries)
	}

	// A connection opened now is tracked with its own start.
	before := maps.MonotonicNow()
	fresh := w.Outside.Connect(t, hostTCP)
	fresh.RoundTrip(t, w.OutsideIP)
	entries, err = maps.NewCT(ct).All()
	if err != nil {
		t.Fatal(err)
	}
	found = 0
	for _, e := range entries {
		if e.Client.String() != fresh.LocalAddr().String() {
			continue
		}
		found++
		// The coarse clock is a tick behind the precise one at most.
		if e.AgeFromUpgrade || time.Duration(e.CreatedNs) < before-100*time.Millisecond {
			t.Errorf("new flow: created %s, age from upgrade %v; want its own start after %s", time.Duration(e.CreatedNs), e.AgeFromUpgrade, before)
		}
	}
	if found != 1 {
		t.Fatalf("%d ct entries for the new connection, want 1", found)
	}
}
