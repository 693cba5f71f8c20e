package control

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPickSubnet(t *testing.T) {
	p := netip.MustParsePrefix
	cands := candidateSubnets()
	if cands[0] != p("172.17.0.0/16") || cands[len(cands)-1] != p("192.168.240.0/20") {
		t.Fatalf("candidates run %s..%s", cands[0], cands[len(cands)-1])
	}
	for _, c := range []struct {
		name  string
		taken []netip.Prefix
		want  netip.Prefix
	}{
		{"nothing taken", nil, p("172.17.0.0/16")},
		{"route inside the first", []netip.Prefix{p("172.17.5.0/24")}, p("172.18.0.0/16")},
		{"nameserver address", []netip.Prefix{p("172.17.0.53/32"), p("172.18.0.0/15")}, p("172.20.0.0/16")},
		{"a wide route covers all of 172.16/12", []netip.Prefix{p("172.16.0.0/12")}, p("192.168.0.0/20")},
	} {
		got, ok := pickSubnet(cands, c.taken)
		if !ok || got != c.want {
			t.Errorf("%s: got %s (%v), want %s", c.name, got, ok, c.want)
		}
	}
	if got, ok := pickSubnet(cands, []netip.Prefix{p("172.16.0.0/12"), p("192.168.0.0/16")}); ok {
		t.Errorf("everything taken, yet picked %s", got)
	}
}

func TestNameservers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte("# comment\nnameserver 10.0.0.2\nsearch example\nnameserver ::1\nnameserver bogus\n"), 0o644)
	got := nameservers(path)
	if len(got) != 2 || got[0] != netip.MustParseAddr("10.0.0.2") || got[1] != netip.MustParseAddr("::1") {
		t.Fatalf("nameservers: %v", got)
	}
}

// TestSubnetRefusals: every subnet the host cannot use is refused with one
// line naming the subnet, the conflict and what to do instead.
func TestSubnetRefusals(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	host := hostNet{
		addrs: []hostAddr{
			{link: "eth0", uplink: true, prefix: p("198.51.100.1/24")},
			{link: "dummy0", prefix: p("10.20.30.40/32")},
		},
		routes: []hostRoute{
			{dst: p("198.51.100.0/24"), desc: "198.51.100.0/24 dev eth0", connected: true},
			{dst: p("192.0.2.0/24"), desc: "192.0.2.0/24 dev eth1", connected: true},
			{dst: p("203.0.113.0/24"), desc: "203.0.113.0/24 via 198.51.100.254 dev eth0"},
		},
	}
	for _, c := range []struct {
		subnet, gateway string
		force           bool
		want            string
	}{
		{"198.51.100.0/24", "198.51.100.1", false, "subnet 198.51.100.0/24 overlaps uplink eth0's 198.51.100.0/24 (address 198.51.100.1); pick another subnet"},
		{"198.51.100.128/25", "198.51.100.129", true, "overlaps uplink eth0's 198.51.100.0/24"},
		{"10.20.0.0/16", "10.20.30.40", false, "overlaps interface dummy0's 10.20.30.40/32 (address 10.20.30.40)"},
		{"192.0.2.0/25", "192.0.2.1", true, "overlaps the host's connected route to 192.0.2.0/24 dev eth1"},
		{"203.0.113.0/24", "203.0.113.1", false, "overlaps the host's route to 203.0.113.0/24 via 198.51.100.254 dev eth0; pick another subnet, such as one in 10.0.0.0/8, or leave out --subnet to get a free one, or give --force"},
		{"0.0.0.0/0", "0.0.0.1", false, "subnet 0.0.0.0/0 covers every address; pick another subnet"},
		{"127.0.0.0/8", "127.0.0.1", false, "subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8; pick another subnet"},
		{"127.0.0.0/8", "127.0.0.1", true, "loopback range"},
		{"0.0.0.0/8", "0.0.0.1", false, "overlaps the \"this network\" range 0.0.0.0/8"},
		{"169.254.0.0/16", "169.254.0.1", false, "overlaps the link-local range 169.254.0.0/16"},
		{"224.0.0.0/4", "224.0.0.1", false, "overlaps the multicast range 224.0.0.0/4"},
		{"239.1.0.0/16", "239.1.0.1", false, "overlaps the multicast range 224.0.0.0/4"},
		{"240.0.0.0/4", "240.0.0.1", false, "overlaps the reserved class E range 240.0.0.0/4"},
		{"255.255.255.252/30", "255.255.255.253", false, "overlaps the reserved class E range 240.0.0.0/4 and holds the limited broadcast address 255.255.255.255"},
		{"10.1.0.0/31", "10.1.0.1", false, "smaller than a /30"},
		{"10.1.0.0/24", "10.1.0.0", false, "gateway 10.1.0.0 is the network or broadcast address of 10.1.0.0/24; give a gateway between 10.1.0.1 and 10.1.0.254"},
		{"10.1.0.0/24", "10.1.0.255", false, "network or broadcast address"},
	} {
		err := checkSubnetShape(p(c.subnet), a(c.gateway))
		if err == nil {
			err = host.check(p(c.subnet), c.force)
		}
		switch {
		case err == nil:
			t.Errorf("%s gateway %s (force %v): accepted", c.subnet, c.gateway, c.force)
		case !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n"):
			t.Errorf("%s gateway %s (force %v):\n got %q\nwant %q", c.subnet, c.gateway, c.force, err, c.want)
		case !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrConflict):
			t.Errorf("%s: %v is neither invalid nor a conflict", c.subnet, err)
		}
	}

	for _, c := range []struct {
		subnet, gateway string
		force           bool
	}{
		{"10.88.0.0/16", "10.88.0.1", false},
		{"10.88.0.0/30", "10.88.0.2", false},
		{"203.0.113.0/25", "203.0.113.1", true}, // a gatewayed route, forced
		{"172.16.0.0/12", "172.16.0.1", false},
	} {
		if err := checkSubnetShape(p(c.subnet), a(c.gateway)); err != nil {
			t.Errorf("%s: %v", c.subnet, err)
		} else if err := host.check(p(c.subnet), c.force); err != nil {
			t.Errorf("%s (force %v): %v", c.subnet, c.force, err)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/24": "10.0.0.255", "10.0.0.0/8": "10.255.255.255", "10.0.0.4/30": "10.0.0.7", "0.0.0.0/0": "255.255.255.255"} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestULACandidates: the /64s a network without --subnet6 picks from are
// unique local, one /48 per host, and the same on every call.
func TestULACandidates(t *testing.T) {
	c := ulaCandidates()
	if len(c) == 0 || c[0].Bits() != 64 || c[0].Addr().As16()[0] != 0xfd {
		t.Fatalf("candidates %v, want unique local /64s", c[:min(len(c), 2)])
	}
	base := netip.PrefixFrom(c[0].Addr(), 48).Masked()
	for _, p := range c {
		if !base.Contains(p.Addr()) || checkSubnetShape6(p, p.Addr().Next()) != nil {
			t.Fatalf("candidate %s outside %s or refused", p, base)
		}
	}
	if again := ulaCandidates(); again[0] != c[0] {
		t.Errorf("candidates moved: %s then %s", c[0], again[0])
	}
}

// TestDockerPoolsReserved: a pool picked for dockerd is not picked again
// until its network exists or dockerd releases it; parallel picks all
// differ.
func TestDockerPoolsReserved(t *testing.T) {
	a := &Agent{st: &state{networks: map[string]*Network{}}}
	const n = 8
	picked := make([]netip.Prefix, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			picked[i], errs[i] = a.pickDockerPool(false)
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for i, p := range picked {
		if errs[i] != nil {
			t.Fatalf("pick %d: %v", i, errs[i])
		}
		if seen[p] {
			t.Errorf("pool %s picked twice: %v", p, picked)
		}
		seen[p] = true
	}
	// Released, the first pool is free again; expired, too.
	first := slices.MinFunc(picked, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	a.releasePool(first)
	if p, err := a.pickDockerPool(false); err != nil || p != first {
		t.Errorf("after releasing %s, picked %s, %v", first, p, err)
	}
	a.pendingPools[first] = time.Now().Add(-time.Second)
	if p, err := a.pickDockerPool(false); err != nil || p != first {
		t.Errorf("after %s expired, picked %s, %v", first, p, err)
	}
}

// TestDockerIPv6PoolsReserved: IPv6 pools picked for dockerd are unique
// local /64s, reserved as IPv4 ones are.
func TestDockerIPv6PoolsReserved(t *testing.T) {
	a := &Agent{st: &state{networks: map[string]*Network{}}}
	p1, err1 := a.pickDockerPool(true)
	p2, err2 := a.pickDockerPool(true)
	if err1 != nil || err2 != nil || p1 == p2 {
		t.Fatalf("picked %s, %v and %s, %v: want two distinct pools", p1, err1, p2, err2)
	}
	for _, p := range []netip.Prefix{p1, p2} {
		if !p.Addr().Is6() || p.Bits() != 64 || !netip.MustParsePrefix("fc00::/7").Contains(p.Addr()) {
			t.Errorf("picked %s, want a unique local /64", p)
		}
	}
	a.releasePool(p1)
	if p, err := a.pickDockerPool(true); err != nil || p != p1 {
		t.Errorf("after releasing %s, picked %s, %v", p1, p, err)
	}
}
