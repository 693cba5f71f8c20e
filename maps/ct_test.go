package maps

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// newCTTables makes two small tables of ct's layout, for ct and ct_new.
func newCTTables(t *testing.T) []*ebpf.Map {
	t.Helper()
	var tables []*ebpf.Map
	for range 2 {
		m, err := ebpf.NewMap(&ebpf.MapSpec{
			Type: ebpf.Hash, KeySize: uint32(binary.Size(CTKey{})), ValueSize: uint32(binary.Size(CTValue{})), MaxEntries: 64,
		})
		if err != nil {
			t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
		}
		t.Cleanup(func() { m.Close() })
		tables = append(tables, m)
	}
	return tables
}

// TestCTDeleteBindings: one walk of each table removes the connections of
// every given binding and keeps the others.
func TestCTDeleteBindings(t *testing.T) {
	tables := newCTTables(t)
	for i := range 12 {
		k := CTKey{Family: familyInet, Proto: 6, Sport: uint16(1000 + i)}
		if err := tables[i%2].Put(k, CTValue{BindingID: uint32(i % 4)}); err != nil {
			t.Fatal(err)
		}
	}
	ct := NewCT(tables...)
	n, err := ct.DeleteBindings(map[uint32]bool{1: true, 3: true})
	if err != nil || n != 6 {
		t.Fatalf("deleted %d, %v; want the 6 of bindings 1 and 3", n, err)
	}
	left, err := ct.All()
	if err != nil || len(left) != 6 {
		t.Fatalf("%d left, %v; want 6", len(left), err)
	}
	for _, e := range left {
		if e.BindingID != 0 && e.BindingID != 2 {
			t.Errorf("connection of binding %d survived", e.BindingID)
		}
	}
	if n, err := ct.DeleteBindings(nil); n != 0 || err != nil {
		t.Errorf("deleting no bindings: %d, %v", n, err)
	}
}

// TestWalkReadsEveryEntry: the batched walk sees each entry exactly once,
// across several batches, in a hash and an LRU hash (ct and ct_new).
func TestWalkReadsEveryEntry(t *testing.T) {
	const entries = 3*walkBatch + 17
	for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.LRUHash} {
		t.Run(typ.String(), func(t *testing.T) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{
				Type: typ, KeySize: uint32(binary.Size(CTKey{})), ValueSize: uint32(binary.Size(CTValue{})), MaxEntries: 2 * entries,
			})
			if err != nil {
				t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
			}
			defer m.Close()
			keys := make([]CTKey, entries)
			values := make([]CTValue, entries)
			for i := range keys {
				keys[i] = CTKey{Family: familyInet, Proto: 6, Sport: uint16(i), Dport: uint16(i >> 16)}
				values[i] = CTValue{BindingID: uint32(i)}
			}
			if err := batchPut(m, keys, values); err != nil {
				t.Fatal(err)
			}
			seen := map[uint32]int{}
			if err := walk(m, func(k CTKey, v CTValue) {
				if uint32(k.Sport)|uint32(k.Dport)<<16 != v.BindingID {
					t.Errorf("key %+v came with the value of %d", k, v.BindingID)
				}
				seen[v.BindingID]++
			}); err != nil {
				t.Fatal(err)
			}
			if len(seen) != entries {
				t.Fatalf("walk saw %d distinct entries, want %d", len(seen), entries)
			}
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("entry %d seen %d times", id, n)
				}
			}
			n, err := NewCT(m).DeleteBindings(map[uint32]bool{0: true, walkBatch: true, entries - 1: true})
			if err != nil || n != 3 {
				t.Fatalf("deleted %d, %v; want 3", n, err)
			}
		})
	}
}

// TestCTGCEach: the GC hands each entry it deletes to its callback, and
// only those.
func TestCTGCEach(t *testing.T) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.Hash, KeySize: uint32(binary.Size(CTKey{})), ValueSize: uint32(binary.Size(CTValue{})), MaxEntries: 16,
	})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	defer m.Close()
	now := time.Hour
	l := DefaultLifetimes()
	for i, lastSeen := range []time.Duration{now - l.UDP - time.Second, now - time.Second} {
		k := CTKey{Family: familyInet, Proto: UDP, Sport: uint16(1000 + i)}
		if err := m.Put(k, CTValue{BindingID: uint32(i + 1), LastSeenNs: uint64(lastSeen)}); err != nil {
			t.Fatal(err)
		}
	}
	var gone []CTEntry
	n, err := NewCT(m).GCEach(now, l, func(e CTEntry) { gone = append(gone, e) })
	if err != nil || n != 1 || len(gone) != 1 || gone[0].BindingID != 1 {
		t.Fatalf("GC deleted %d (%v) and reported %+v; want binding 1's idle flow alone", n, err, gone)
	}
}

// TestSNATGCEach: the snat GC hands each expired flow that has both halves
// to its callback once, with the later stamp and the flags of both, and it
// reads as the idle end of the masqueraded flow; a live flow is kept.
func TestSNATGCEach(t *testing.T) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.Hash, KeySize: uint32(binary.Size(CTKey{})), ValueSize: uint32(binary.Size(SNATValue{})), MaxEntries: 16,
	})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	defer m.Close()
	now := time.Hour
	l := DefaultLifetimes()
	container, server, nat := netip.MustParseAddrPort("10.1.0.2:5000"), netip.MustParseAddrPort("192.0.2.9:53"), netip.MustParseAddrPort("198.51.100.1:5000")
	put := func(sport uint16, lastSeen time.Duration) {
		c := netip.AddrPortFrom(container.Addr(), sport)
		x := netip.AddrPortFrom(nat.Addr(), sport)
		_, ca := rawAddr(c.Addr())
		_, sa := rawAddr(server.Addr())
		_, xa := rawAddr(x.Addr())
		fwd := CTKey{Family: familyInet, Proto: UDP, Saddr: ca, Sport: netPort(c.Port()), Daddr: sa, Dport: netPort(server.Port())}
		rev := CTKey{Family: familyInet, Proto: UDP, Saddr: sa, Sport: netPort(server.Port()), Daddr: xa, Dport: netPort(x.Port())}
		if err := m.Put(fwd, SNATValue{Addr: xa, Port: netPort(x.Port()), Flags: SNATForward, LastSeenNs: uint64(lastSeen - time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := m.Put(rev, SNATValue{Addr: ca, Port: netPort(c.Port()), Flags: SNATReverse, LastSeenNs: uint64(lastSeen)}); err != nil {
			t.Fatal(err)
		}
	}
	put(container.Port(), now-l.UDP-time.Second)
	put(container.Port()+1, now-time.Second)
	var gone []SNATFlow
	n, err := NewSNAT(m).GCEach(now, l, func(f SNATFlow) { gone = append(gone, f) })
	if err != nil || n != 2 || len(gone) != 1 {
		t.Fatalf("GC deleted %d entries (%v) and reported %+v; want the idle flow's two, reported once", n, err, gone)
	}
	if got := gone[0].Value.LastSeenNs; got != uint64(now-l.UDP-time.Second) {
		t.Errorf("reported last seen %d, want the later of the two halves", got)
	}
	e := gone[0].IdleEnd(now)
	if e.Type != "flow_end" || e.Kind != "masquerade" || e.Ended != "idle" || e.Proto != "udp" || e.Source != container || e.Destination != server || e.Translated != nat {
		t.Errorf("idle end %+v, want masquerade udp %s -> %s as %s (idle)", e, container, server, nat)
	}
}
