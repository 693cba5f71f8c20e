package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzSubnet feeds user-typed subnet, gateway, range and static address
// strings through ParseSubnet and AddNetwork, then allocates: whatever is
// accepted must only ever hand out host addresses of its window, never the
// gateway, never twice; whatever is refused must be ErrInvalid or ErrInUse
// and change nothing.
func FuzzSubnet(f *testing.F) {
	f.Add("10.88.0.0/16", "", "", "", uint8(10))
	f.Add("10.0.0.0/30", "10.0.0.2", "", "10.0.0.1", uint8(5))
	f.Add("10.0.0.0/24", "10.0.0.254", "10.0.0.252/30", "10.0.0.7", uint8(8))
	f.Add("fd00::/64", "fd00::1", "fd00::ff00/126", "fd00::ffff", uint8(6))
	f.Add("fd00::/126", "", "", "fd00::3", uint8(4))
	f.Add("10.255.1.0/24", "", "", "", uint8(1))
	f.Add("0.0.0.0/0", "", "", "", uint8(3))
	f.Add("::/0", "::2", "", "::ffff:1.2.3.4", uint8(3))
	f.Add("10.0.0.5/24", "10.0.1.1", "10.1.0.0/24", "x", uint8(0))
	f.Fuzz(func(t *testing.T, prefix, gateway, ipRange, static string, n uint8) {
		a := newMem(t)
		addNet(t, a, "other", "10.255.0.0/16")
		before := takeSnapshot(t, a)

		s, err := ParseSubnet(prefix, gateway, ipRange)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSubnet error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if again, err := validateSubnet(s); err != nil || !equalSubnet(again, s) {
			t.Fatalf("a parsed subnet %+v does not validate to itself: %+v %v", s, again, err)
		}
		if _, err := a.AddNetwork(Network{ID: "n", Subnets: []Subnet{s}}); err != nil {
			if !errors.Is(err, ErrInUse) || !s.Prefix.Overlaps(mustPrefix("10.255.0.0/16")) {
				t.Fatalf("AddNetwork refused %+v: %v", s, err)
			}
			sameSnapshot(t, before, takeSnapshot(t, a))
			return
		}

		first, last := window(s)
		hostFirst, hostLast := hosts(s)
		seen := map[netip.Addr]bool{}
		if sa, err := netip.ParseAddr(static); err == nil {
			snap := takeSnapshot(t, a)
			got, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "static", Static: []netip.Addr{sa}})
			switch {
			case err == nil:
				if len(got) != 1 || got[0] != sa.Unmap() || sa.Unmap() == s.Gateway || got[0].Compare(hostFirst) < 0 || got[0].Compare(hostLast) > 0 {
					t.Fatalf("static %s in %+v gave %v", sa, s, got)
				}
				seen[got[0]] = true
			case errors.Is(err, ErrInvalid) || errors.Is(err, ErrInUse):
				sameSnapshot(t, snap, takeSnapshot(t, a))
			default:
				t.Fatalf("static %s: %v", sa, err)
			}
		}
		dynamic := 0
		for i := range int(n % 40) {
			got, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "o" + string(rune('a'+i))})
			if errors.Is(err, ErrExhausted) {
				// Only a window with no room left may run out.
				if free, ok := a.networks["n"].pools[0].used.nextFree(first, last); ok {
					t.Fatalf("exhausted with %s still free in %s-%s", free, first, last)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			addr := got[0]
			if addr.Compare(first) < 0 || addr.Compare(last) > 0 || addr == s.Gateway || seen[addr] {
				t.Fatalf("allocation %s in %+v: outside %s-%s, the gateway, or a repeat", addr, s, first, last)
			}
			seen[addr] = true
			dynamic++
		}
		ips, _ := a.IPs("n")
		if len(ips) != len(seen) {
			t.Fatalf("network lists %d addresses, %d were handed out", len(ips), len(seen))
		}
		for _, ip := range ips {
			if _, err := a.ReleaseIPs("n", ip.Owner); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.RemoveNetwork("n"); err != nil {
			t.Fatal(err)
		}
		sameSnapshot(t, before, takeSnapshot(t, a))
	})
}

// FuzzPortOps runs decoded port operations against one allocator and a
// plain model of who holds what; they must never disagree, and failed
// operations must change nothing. Each op is 4 bytes.
func FuzzPortOps(f *testing.F) {
	f.Add([]byte{0, 0, 10, 1, 0, 2, 10, 1, 1, 0, 0, 0, 2, 3, 0, 2})
	f.Add([]byte{2, 0, 0, 16, 2, 2, 0, 3, 3, 1, 0, 0, 0, 1, 15, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		dyn := PortRange{60000, 60015}
		a, err := Open(NewMemStore(), Options{DynamicPorts: dyn})
		if err != nil {
			t.Fatal(err)
		}
		hosts := []netip.Addr{any4, mustAddr("192.0.2.1"), mustAddr("192.0.2.2"), any6, mustAddr("2001:db8::1")}
		h := &holdings{ports: map[string]string{}, specific: map[string]int{}}
		for len(ops) >= 4 {
			kind, host, port, extra := ops[0]%4, hosts[int(ops[1])%len(hosts)], uint16(59990)+uint16(ops[2]%40), ops[3]
			ops = ops[4:]
			owner := []string{"a", "b", "c"}[int(extra)%3]
			proto := []Proto{TCP, UDP}[int(ops2(extra))%2]
			before := takeSnapshot(t, a)
			var err error
			switch kind {
			case 0: // a port or a range, sometimes reversed or at 0
				r := PortRange{port, port + uint16(extra%5)}
				if extra%11 == 0 {
					r = PortRange{r.Last, r.First}
				}
				if extra%13 == 0 {
					r.First = 0
				}
				var pa PortAllocation
				if pa, err = a.AllocatePorts(PortRequest{Owner: owner, Proto: proto, HostIP: host, Ports: r}); err == nil {
					if pa.Ports != r {
						t.Fatalf("asked for %s, got %s", r, pa)
					}
					h.addPorts(t, pa)
				}
			case 1: // any
				count := int(extra%6) - 1
				var pa PortAllocation
				if pa, err = a.AllocatePorts(PortRequest{Owner: owner, Proto: proto, HostIP: host, Count: count}); err == nil {
					if want := max(count, 1); pa.Ports.Len() != want || !dyn.Contains(pa.Ports.First) || !dyn.Contains(pa.Ports.Last) {
						t.Fatalf("asked for %d dynamic ports, got %s", want, pa)
					}
					h.addPorts(t, pa)
				}
			case 2: // release exactly, by what the owner holds or a guess
				r := PortRange{port, port + uint16(extra%3)}
				if held := a.Ports(owner); len(held) > 0 && extra%2 == 0 {
					pa := held[int(extra)%len(held)]
					host, r, proto = pa.HostIP, pa.Ports, pa.Proto
				}
				var pa PortAllocation
				if pa, err = a.ReleasePorts(proto, host, r); err == nil {
					h.dropPorts(pa)
				}
			case 3:
				var out []PortAllocation
				if out, err = a.ReleaseOwnerPorts(owner); err == nil {
					for _, pa := range out {
						h.dropPorts(pa)
					}
				}
			}
			if err != nil {
				if errKind(err) == err {
					t.Fatalf("untyped error %v", err)
				}
				sameSnapshot(t, before, takeSnapshot(t, a))
			}
			if t.Failed() {
				t.FailNow()
			}
		}
		n := 0
		for _, pa := range a.Ports("") {
			n += pa.Ports.Len()
		}
		if n != len(h.ports) {
			t.Fatalf("allocator holds %d ports, model %d", n, len(h.ports))
		}
	})
}

func ops2(b byte) byte { return b >> 3 }
