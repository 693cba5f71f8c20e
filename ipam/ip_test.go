package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestNextFitWrapsAndReusesLate(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: testPorts})
		if err != nil {
			t.Fatal(err)
		}
		addNet(t, a, "n", "10.0.0.0/28") // hosts .1-.14, gateway .1
		var got []string
		for i := 2; i <= 5; i++ {
			got = append(got, alloc(t, a, "n", fmt.Sprint("ep", i))[0].String())
		}
		if want := "10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5"; strings.Join(got, " ") != want {
			t.Fatalf("first allocations %v, want %s", got, want)
		}
		// A released address must not come straight back.
		if _, err := a.ReleaseIPs("n", "ep3"); err != nil {
			t.Fatal(err)
		}
		if got := alloc(t, a, "n", "ep6")[0]; got != mustAddr("10.0.0.6") {
			t.Errorf("after releasing .3 the next allocation is %s, want 10.0.0.6", got)
		}
		for i := 7; i <= 14; i++ {
			alloc(t, a, "n", fmt.Sprint("ep", i))
		}
		// The window is used up to .14; only now does .3 come back.
		if got := alloc(t, a, "n", "late")[0]; got != mustAddr("10.0.0.3") {
			t.Errorf("after wrapping around the allocation is %s, want 10.0.0.3", got)
		}
		before := takeSnapshot(t, a)
		_, err = a.AllocateIPs(IPRequest{Network: "n", Owner: "one-too-many"})
		wantErr(t, err, ErrExhausted)
		if !strings.Contains(err.Error(), "10.0.0.0/28") || !strings.Contains(err.Error(), "add a subnet") {
			t.Errorf("exhausted error %q should name the subnet and what to do", err)
		}
		sameSnapshot(t, before, takeSnapshot(t, a))
		ips, _ := a.IPs("n")
		for _, ip := range ips {
			if ip.Addr == mustAddr("10.0.0.0") || ip.Addr == mustAddr("10.0.0.1") || ip.Addr == mustAddr("10.0.0.15") {
				t.Errorf("handed out reserved address %s", ip.Addr)
			}
		}
		if len(ips) != 13 {
			t.Errorf("a full /28 holds %d allocations, want 13", len(ips))
		}
	})
}

func TestAllocationRange(t *testing.T) {
	a := newMem(t)
	_, err := a.AddNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/24"), Range: mustPrefix("10.0.0.128/30")}}})
	wantErr(t, err, nil)
	var got []netip.Addr
	for i := range 4 {
		got = append(got, alloc(t, a, "n", fmt.Sprint("ep", i))[0])
	}
	want := []netip.Addr{mustAddr("10.0.0.128"), mustAddr("10.0.0.129"), mustAddr("10.0.0.130"), mustAddr("10.0.0.131")}
	if !slices.Equal(got, want) {
		t.Errorf("range allocations %v, want %v", got, want)
	}
	_, err = a.AllocateIPs(IPRequest{Network: "n", Owner: "more"})
	wantErr(t, err, ErrExhausted)
	if !strings.Contains(err.Error(), "range 10.0.0.128/30 of 10.0.0.0/24") {
		t.Errorf("error %q should name the range", err)
	}
	// Static requests may use the rest of the subnet.
	if got := alloc(t, a, "n", "static", mustAddr("10.0.0.5"))[0]; got != mustAddr("10.0.0.5") {
		t.Errorf("static outside the range gave %s", got)
	}
}

func TestStaticAddresses(t *testing.T) {
	tests := []struct {
		name    string
		static  []netip.Addr
		want    []netip.Addr
		kind    error
		message string
	}{
		{"free", []netip.Addr{mustAddr("10.0.0.7")}, []netip.Addr{mustAddr("10.0.0.7")}, nil, ""},
		{"mapped", []netip.Addr{mustAddr("::ffff:10.0.0.8")}, []netip.Addr{mustAddr("10.0.0.8")}, nil, ""},
		{"network address", []netip.Addr{mustAddr("10.0.0.0")}, nil, ErrInvalid, "network address of 10.0.0.0/24"},
		{"broadcast", []netip.Addr{mustAddr("10.0.0.255")}, nil, ErrInvalid, "broadcast address"},
		{"gateway", []netip.Addr{mustAddr("10.0.0.1")}, nil, ErrInUse, "gateway of 10.0.0.0/24"},
		{"taken", []netip.Addr{mustAddr("10.0.0.2")}, nil, ErrInUse, `in use by "holder"`},
		{"outside", []netip.Addr{mustAddr("10.1.0.5")}, nil, ErrInvalid, "outside every subnet"},
		{"family missing", []netip.Addr{mustAddr("fd00::5")}, nil, ErrInvalid, "no IPv6 subnet"},
		{"two of a family", []netip.Addr{mustAddr("10.0.0.7"), mustAddr("10.0.0.9")}, nil, ErrInvalid, "at most one per family"},
		{"zero", []netip.Addr{{}}, nil, ErrInvalid, "missing or malformed"},
		{"zone", []netip.Addr{mustAddr("fe80::1%eth0")}, nil, ErrInvalid, "zone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newMem(t)
			addNet(t, a, "n", "10.0.0.0/24")
			alloc(t, a, "n", "holder") // takes 10.0.0.2
			before := takeSnapshot(t, a)
			got, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "ep", Static: tt.static})
			wantErr(t, err, tt.kind)
			if tt.kind != nil {
				if !strings.Contains(err.Error(), tt.message) {
					t.Errorf("error %q, want it to say %q", err, tt.message)
				}
				sameSnapshot(t, before, takeSnapshot(t, a))
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOwnerIsIdempotent(t *testing.T) {
	a := newMem(t)
	addNet(t, a, "n", "10.0.0.0/24", "fd00:1::/64")
	first := alloc(t, a, "n", "ep")
	if len(first) != 2 || !first[0].Is4() || !first[1].Is6() {
		t.Fatalf("dual-stack allocation %v, want an IPv4 then an IPv6 address", first)
	}
	before := takeSnapshot(t, a)
	if again := alloc(t, a, "n", "ep"); !slices.Equal(again, first) {
		t.Errorf("asking again gave %v, want %v", again, first)
	}
	if again := alloc(t, a, "n", "ep", first[1]); !slices.Equal(again, first) {
		t.Errorf("asking again for the held address gave %v, want %v", again, first)
	}
	sameSnapshot(t, before, takeSnapshot(t, a))
	_, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "ep", Static: []netip.Addr{mustAddr("10.0.0.77")}})
	wantErr(t, err, ErrInUse)
	if !strings.Contains(err.Error(), "the owner holds "+first[0].String()) {
		t.Errorf("error %q should say what the owner holds", err)
	}
	sameSnapshot(t, before, takeSnapshot(t, a))
	// The same owner in another network is another allocation.
	addNet(t, a, "m", "10.1.0.0/24")
	if got := alloc(t, a, "m", "ep"); len(got) != 1 || !mustPrefix("10.1.0.0/24").Contains(got[0]) {
		t.Errorf("owner in a second network got %v", got)
	}
}

func TestDualStackOrderAndStatic(t *testing.T) {
	a := newMem(t)
	addNet(t, a, "n", "fd00:2::/64", "10.2.0.0/24")
	got := alloc(t, a, "n", "ep", mustAddr("fd00:2::abcd"))
	want := []netip.Addr{mustAddr("10.2.0.2"), mustAddr("fd00:2::abcd")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// A failure in one family takes nothing in the other.
	alloc(t, a, "n", "v6holder", mustAddr("fd00:2::99"))
	before := takeSnapshot(t, a)
	_, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "ep2", Static: []netip.Addr{mustAddr("fd00:2::99")}})
	wantErr(t, err, ErrInUse)
	sameSnapshot(t, before, takeSnapshot(t, a))
}

// TestOneFamily: an engine asks for each family's address on its own; a
// request limited to a family takes nothing of the other.
func TestOneFamily(t *testing.T) {
	a := newMem(t)
	addNet(t, a, "n", "fd00:3::/64", "10.3.0.0/24")
	for _, c := range []struct {
		family int
		static []netip.Addr
		want   []netip.Addr
	}{
		{6, nil, []netip.Addr{mustAddr("fd00:3::2")}},
		{4, nil, []netip.Addr{mustAddr("10.3.0.2")}},
		{6, []netip.Addr{mustAddr("fd00:3::77")}, []netip.Addr{mustAddr("fd00:3::77")}},
	} {
		owner := fmt.Sprintf("ep-%d-%d", c.family, len(c.static))
		got, err := a.AllocateIPs(IPRequest{Network: "n", Owner: owner, Static: c.static, Family: c.family})
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("family %d, static %v: got %v, %v; want %v", c.family, c.static, got, err, c.want)
		}
	}
	before := takeSnapshot(t, a)
	_, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "mixed", Static: []netip.Addr{mustAddr("10.3.0.9")}, Family: 6})
	wantErr(t, err, ErrInvalid)
	_, err = a.AllocateIPs(IPRequest{Network: "n", Owner: "five", Family: 5})
	wantErr(t, err, ErrInvalid)
	sameSnapshot(t, before, takeSnapshot(t, a))
}

func TestSeveralSubnetsOfAFamily(t *testing.T) {
	a := newMem(t)
	addNet(t, a, "n", "10.3.0.0/30", "10.4.0.0/30") // one free address each
	if got := alloc(t, a, "n", "a")[0]; got != mustAddr("10.3.0.2") {
		t.Errorf("first allocation %s, want 10.3.0.2", got)
	}
	if got := alloc(t, a, "n", "b")[0]; got != mustAddr("10.4.0.2") {
		t.Errorf("second allocation %s, want 10.4.0.2 from the second subnet", got)
	}
	_, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "c"})
	wantErr(t, err, ErrExhausted)
	if !strings.Contains(err.Error(), "10.3.0.0/30, 10.4.0.0/30") {
		t.Errorf("error %q should list both subnets", err)
	}
}

func TestReleaseIPs(t *testing.T) {
	a := newMem(t)
	addNet(t, a, "n", "10.0.0.0/24", "fd00:3::/64")
	held := alloc(t, a, "n", "ep")
	before := takeSnapshot(t, a)
	for _, tt := range []struct{ network, owner string }{{"n", "nobody"}, {"nope", "ep"}} {
		_, err := a.ReleaseIPs(tt.network, tt.owner)
		wantErr(t, err, ErrNotFound)
		sameSnapshot(t, before, takeSnapshot(t, a))
	}
	got, err := a.ReleaseIPs("n", "ep")
	wantErr(t, err, nil)
	if !slices.Equal(got, held) {
		t.Errorf("release returned %v, want %v", got, held)
	}
	if ips, _ := a.IPs("n"); len(ips) != 0 {
		t.Errorf("after release the network holds %v", ips)
	}
	_, err = a.ReleaseIPs("n", "ep")
	wantErr(t, err, ErrNotFound)
	if _, err := a.IPs("nope"); err == nil {
		t.Error("listing an unknown network succeeded")
	}
	_, err = a.AllocateIPs(IPRequest{Network: "nope", Owner: "ep"})
	wantErr(t, err, ErrNotFound)
	_, err = a.AllocateIPs(IPRequest{Network: "n"})
	wantErr(t, err, ErrInvalid)
}

func TestIPv6HugeSubnets(t *testing.T) {
	a := newMem(t)
	addNet(t, a, "n", "fd00:4::/64", "fd00:5::/48")
	a.mu.Lock()
	if _, ok := a.networks["n"].pools[0].used.(*spanSet); !ok {
		t.Errorf("a /64 uses %T, want a spanSet", a.networks["n"].pools[0].used)
	}
	a.mu.Unlock()
	for i := range 1000 {
		got := alloc(t, a, "n", fmt.Sprint("ep", i))[0]
		if want := mustAddr(fmt.Sprintf("fd00:4::%x", i+2)); got != want {
			t.Fatalf("allocation %d is %s, want %s", i, got, want)
		}
	}
	// No broadcast in IPv6: the last address is a host like any other.
	last := mustAddr("fd00:4::ffff:ffff:ffff:ffff")
	if got := alloc(t, a, "n", "last", last); got[0] != last {
		t.Errorf("static last address gave %v", got)
	}
	a.mu.Lock()
	if n := len(a.networks["n"].pools[0].used.(*spanSet).spans); n != 2 {
		t.Errorf("1001 allocations in a /64 take %d spans, want 2", n)
	}
	a.mu.Unlock()
	_, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "x", Static: []netip.Addr{mustAddr("fd00:4::")}})
	wantErr(t, err, ErrInvalid)
}

func TestIPv6SparseWindowWraps(t *testing.T) {
	a := newMem(t)
	_, err := a.AddNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("fd00:6::/64"), Range: mustPrefix("fd00:6::ff00/120")}}})
	wantErr(t, err, nil)
	for i := range 256 {
		alloc(t, a, "n", fmt.Sprint("ep", i))
	}
	_, err = a.AllocateIPs(IPRequest{Network: "n", Owner: "more"})
	wantErr(t, err, ErrExhausted)
	if _, err := a.ReleaseIPs("n", "ep100"); err != nil {
		t.Fatal(err)
	}
	if got := alloc(t, a, "n", "more")[0]; got != mustAddr("fd00:6::ff64") {
		t.Errorf("after wrapping the allocation is %s, want fd00:6::ff64", got)
	}
}
