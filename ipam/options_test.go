package ipam

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseNetworkAsDocker: each gateway, range and auxiliary address goes
// to the subnet holding it; mistakes are one line saying what to do.
func TestParseNetworkAsDocker(t *testing.T) {
	n, err := ParseNetwork("n", NetworkOptions{
		Subnets:      []string{"10.60.0.0/24", "10.61.0.0/24"},
		Gateways:     []string{"10.61.0.254"},
		IPRanges:     []string{"10.60.0.128/25"},
		AuxAddresses: []string{"router=10.60.0.2", "printer=10.61.0.9"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Subnet{
		{Prefix: mustPrefix("10.60.0.0/24"), Gateway: mustAddr("10.60.0.1"), Range: mustPrefix("10.60.0.128/25"), Aux: map[string]netip.Addr{"router": mustAddr("10.60.0.2")}},
		{Prefix: mustPrefix("10.61.0.0/24"), Gateway: mustAddr("10.61.0.254"), Aux: map[string]netip.Addr{"printer": mustAddr("10.61.0.9")}},
	}
	if len(n.Subnets) != 2 || !equalSubnet(n.Subnets[0], want[0]) || !equalSubnet(n.Subnets[1], want[1]) {
		t.Errorf("parsed %+v, want %+v", n.Subnets, want)
	}

	bad := []struct {
		name string
		opts NetworkOptions
		says string
	}{
		{"no subnet", NetworkOptions{Gateways: []string{"10.60.0.1"}}, "give --subnet"},
		{"gateway outside two subnets", NetworkOptions{Subnets: []string{"10.60.0.0/24", "10.61.0.0/24"}, Gateways: []string{"10.9.0.1"}}, "outside every subnet (10.60.0.0/24, 10.61.0.0/24)"},
		{"gateway not an address", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, Gateways: []string{"nope"}}, "invalid address"},
		{"gateway outside", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, Gateways: []string{"10.9.0.1"}}, "outside subnet 10.60.0.0/24; give one inside it"},
		{"two gateways one subnet", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, Gateways: []string{"10.60.0.1", "10.60.0.2"}}, "one gateway per subnet"},
		{"range outside", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, IPRanges: []string{"10.9.0.0/25"}}, "outside subnet"},
		{"range wider than subnet", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, IPRanges: []string{"10.60.0.0/23"}}, "outside subnet 10.60.0.0/24"},
		{"two ranges one subnet", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, IPRanges: []string{"10.60.0.0/25", "10.60.0.128/25"}}, "one range per subnet"},
		{"range not a CIDR", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, IPRanges: []string{"10.60.0.5"}}, "invalid CIDR"},
		{"aux without name", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, AuxAddresses: []string{"10.60.0.5"}}, "name=IP"},
		{"aux outside", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, AuxAddresses: []string{"r=10.9.0.5"}}, "outside subnet"},
		{"aux is gateway", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, AuxAddresses: []string{"r=10.60.0.1"}}, "it is the gateway"},
		{"aux is broadcast", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, AuxAddresses: []string{"r=10.60.0.255"}}, "broadcast address"},
		{"aux twice", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, AuxAddresses: []string{"r=10.60.0.5", "s=10.60.0.5"}}, "give each its own address"},
		{"aux name twice", NetworkOptions{Subnets: []string{"10.60.0.0/24"}, AuxAddresses: []string{"r=10.60.0.5", "r=10.60.0.6"}}, "given twice"},
		{"overlapping subnets", NetworkOptions{Subnets: []string{"10.60.0.0/24", "10.60.0.0/25"}}, "they overlap"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseNetwork("n", tt.opts)
			wantErr(t, err, ErrInvalid)
			if !strings.Contains(err.Error(), tt.says) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line saying %q", err, tt.says)
			}
		})
	}
}

// TestAuxAddressesNeverHandedOut: a /29 with two auxiliary addresses has
// three addresses to give; the reserved ones are refused to static
// requests too, and stay reserved across a reopen.
func TestAuxAddressesNeverHandedOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	s := openBoltFast(t, path)
	a, err := Open(s, Options{DynamicPorts: testPorts})
	if err != nil {
		t.Fatal(err)
	}
	n, err := ParseNetwork("n", NetworkOptions{Subnets: []string{"10.62.0.0/29"}, AuxAddresses: []string{"router=10.62.0.3", "nas=10.62.0.5"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddNetwork(n); err != nil {
		t.Fatal(err)
	}
	for _, reopen := range []bool{false, true} {
		if reopen {
			s.Close()
			s = openBoltFast(t, path)
			if a, err = Open(s, Options{DynamicPorts: testPorts}); err != nil {
				t.Fatal(err)
			}
			if got, _ := a.Network("n"); !equalNetwork(got, n) {
				t.Fatalf("after reopen the network is %+v, want %+v", got, n)
			}
		}
		for _, aux := range []string{"10.62.0.3", "10.62.0.5"} {
			before := takeSnapshot(t, a)
			_, err := a.AllocateIPs(IPRequest{Network: "n", Owner: "static", Static: []netip.Addr{mustAddr(aux)}})
			wantErr(t, err, ErrInUse)
			if !strings.Contains(err.Error(), "reserved as auxiliary address") {
				t.Errorf("static %s: error %q should say it is reserved", aux, err)
			}
			sameSnapshot(t, before, takeSnapshot(t, a))
		}
		var got []string
		for i := range 3 {
			got = append(got, alloc(t, a, "n", fmt.Sprint("ep", i))[0].String())
		}
		if want := "10.62.0.2 10.62.0.4 10.62.0.6"; strings.Join(got, " ") != want {
			t.Errorf("allocations %v, want %s (skipping .3 and .5)", got, want)
		}
		_, err = a.AllocateIPs(IPRequest{Network: "n", Owner: "more"})
		wantErr(t, err, ErrExhausted)
		for i := range 3 {
			if _, err := a.ReleaseIPs("n", fmt.Sprint("ep", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestRangeAndStaticOutsideIt: dynamic addresses come only from the
// range, a static one may be anywhere in the subnet, and after a reopen
// the range and the cursor still hold.
func TestRangeAndStaticOutsideIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	s := openBoltFast(t, path)
	a, err := Open(s, Options{DynamicPorts: testPorts})
	if err != nil {
		t.Fatal(err)
	}
	n, err := ParseNetwork("n", NetworkOptions{Subnets: []string{"10.63.0.0/24"}, IPRanges: []string{"10.63.0.64/30"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddNetwork(n); err != nil {
		t.Fatal(err)
	}
	if got := alloc(t, a, "n", "static", mustAddr("10.63.0.200"))[0]; got != mustAddr("10.63.0.200") {
		t.Errorf("static outside the range gave %s", got)
	}
	if got := alloc(t, a, "n", "a")[0]; got != mustAddr("10.63.0.64") {
		t.Errorf("first dynamic address %s, want the range's first, 10.63.0.64", got)
	}
	s.Close()
	s = openBoltFast(t, path)
	if a, err = Open(s, Options{DynamicPorts: testPorts}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range []string{"b", "c", "d"} {
		got = append(got, alloc(t, a, "n", o)[0].String())
	}
	if want := "10.63.0.65 10.63.0.66 10.63.0.67"; strings.Join(got, " ") != want {
		t.Errorf("after reopen the range gave %v, want %s", got, want)
	}
	_, err = a.AllocateIPs(IPRequest{Network: "n", Owner: "e"})
	wantErr(t, err, ErrExhausted)
	if !strings.Contains(err.Error(), "range 10.63.0.64/30 of 10.63.0.0/24") {
		t.Errorf("error %q should name the range", err)
	}
}

// TestSeveralSubnetsFirstWithRoom: a network with several IPv4 subnets
// takes from the first that has a free address, so an address freed in
// the first subnet is used before the second subnet's next one.
func TestSeveralSubnetsFirstWithRoom(t *testing.T) {
	a := newMem(t)
	n, err := ParseNetwork("n", NetworkOptions{Subnets: []string{"10.64.0.0/29", "10.65.0.0/29"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddNetwork(n); err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // .2-.6 of the first subnet
		if got := alloc(t, a, "n", fmt.Sprint("a", i))[0]; !mustPrefix("10.64.0.0/29").Contains(got) {
			t.Fatalf("allocation %d is %s, want it in the first subnet", i, got)
		}
	}
	if got := alloc(t, a, "n", "b0")[0]; got != mustAddr("10.65.0.2") {
		t.Errorf("with the first subnet full the allocation is %s, want 10.65.0.2", got)
	}
	if _, err := a.ReleaseIPs("n", "a2"); err != nil {
		t.Fatal(err)
	}
	if got := alloc(t, a, "n", "again")[0]; got != mustAddr("10.64.0.4") {
		t.Errorf("after a release in the first subnet the allocation is %s, want 10.64.0.4 from it", got)
	}
}

// TestMinimalReuseAcrossRestart is seed 001's rule held across reopens of
// the bolt file: a released address comes back only after every other
// address of the range was handed out, however often the store is
// reopened in between.
func TestMinimalReuseAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	var s *BoltStore
	var a *Allocator
	reopen := func() {
		t.Helper()
		if s != nil {
			s.Close()
		}
		s = openBoltFast(t, path)
		var err error
		if a, err = Open(s, Options{DynamicPorts: testPorts}); err != nil {
			t.Fatal(err)
		}
	}
	reopen()
	addNet(t, a, "n", "10.66.0.0/28") // hosts .2-.14 after the gateway
	alloc(t, a, "n", "x")             // .2
	alloc(t, a, "n", "y")             // .3
	if _, err := a.ReleaseIPs("n", "x"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 11 { // .4-.14: never .2 while these are free
		reopen()
		got = append(got, alloc(t, a, "n", fmt.Sprint("ep", i))[0].String())
	}
	if want := "10.66.0.4 10.66.0.5 10.66.0.6 10.66.0.7 10.66.0.8 10.66.0.9 10.66.0.10 10.66.0.11 10.66.0.12 10.66.0.13 10.66.0.14"; strings.Join(got, " ") != want {
		t.Errorf("allocations across reopens %v, want %s", got, want)
	}
	reopen()
	if got := alloc(t, a, "n", "late")[0]; got != mustAddr("10.66.0.2") {
		t.Errorf("with the rest used the released address should come back: got %s, want 10.66.0.2", got)
	}
	// Free two, in reverse order: the next-fit cursor, not release order,
	// decides, and it sits at .2 now.
	a.ReleaseIPs("n", "ep5") // .9
	a.ReleaseIPs("n", "ep1") // .5
	reopen()
	if got := alloc(t, a, "n", "after-wrap")[0]; got != mustAddr("10.66.0.5") {
		t.Errorf("after the wrap the next free after the cursor is %s, want 10.66.0.5", got)
	}
	reopen()
	if got := alloc(t, a, "n", "after-wrap2")[0]; got != mustAddr("10.66.0.9") {
		t.Errorf("then %s, want 10.66.0.9", got)
	}
}
