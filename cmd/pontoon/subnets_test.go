package main

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/pontoon-net/pontoon/control"
)

// TestHostSubnetsRefused: in a host namespace whose interface carries
// 198.51.100.1/24, every subnet the host cannot give a network is refused
// with one line naming the subnet, the conflict and what to do, and
// nothing changes: no bridge, no route, no state.
func TestHostSubnetsRefused(t *testing.T) {
	w := newWorld(t, 0)
	veth := "ppe" + w.id
	w.host.IP(t, "link", "add", veth, "type", "veth", "peer", "name", "ppf"+w.id)
	w.host.IP(t, "link", "set", veth, "up")
	w.host.IP(t, "addr", "add", "198.51.100.1/24", "dev", veth)
	w.host.IP(t, "route", "add", "203.0.113.0/24", "via", "198.51.100.254", "dev", veth)
	w.startAgent()

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"an interface's own subnet", []string{"--subnet", "198.51.100.0/24"}, "subnet 198.51.100.0/24 overlaps interface " + veth + "'s 198.51.100.0/24 (address 198.51.100.1); pick another subnet"},
		{"the host's address as gateway", []string{"--subnet", "198.51.100.0/24", "--gateway", "198.51.100.1"}, "overlaps interface " + veth + "'s 198.51.100.0/24"},
		{"inside an interface's subnet", []string{"--subnet", "198.51.100.128/25"}, "overlaps interface " + veth + "'s 198.51.100.0/24"},
		{"around an interface's subnet", []string{"--subnet", "198.51.0.0/16"}, "overlaps interface " + veth + "'s 198.51.100.0/24"},
		{"the uplink's subnet", []string{"--subnet", "198.19.0.0/24"}, "overlaps uplink " + w.uplink + "'s 198.19.0.0/24 (address 198.19.0.1)"},
		{"a connected subnet, forced", []string{"--subnet", "198.51.100.0/24", "--force"}, "overlaps interface " + veth + "'s 198.51.100.0/24"},
		{"a gatewayed route", []string{"--subnet", "203.0.113.0/24"}, "subnet 203.0.113.0/24 overlaps the host's route to 203.0.113.0/24 via 198.51.100.254 dev " + veth + "; pick another subnet"},
		{"a gatewayed route's part", []string{"--subnet", "203.0.113.64/26"}, "or give --force to create it anyway"},
		{"/0", []string{"--subnet", "0.0.0.0/0"}, "subnet 0.0.0.0/0 covers every address; pick another subnet"},
		{"loopback", []string{"--subnet", "127.0.0.0/8"}, "subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8"},
		{"part of loopback", []string{"--subnet", "127.1.0.0/16"}, "overlaps the loopback range 127.0.0.0/8"},
		{"this network", []string{"--subnet", "0.0.0.0/8"}, "overlaps the \"this network\" range 0.0.0.0/8"},
		{"link-local", []string{"--subnet", "169.254.0.0/16"}, "overlaps the link-local range 169.254.0.0/16"},
		{"multicast", []string{"--subnet", "224.0.0.0/4"}, "overlaps the multicast range 224.0.0.0/4"},
		{"class E", []string{"--subnet", "240.0.0.0/8"}, "overlaps the reserved class E range 240.0.0.0/4"},
		{"broadcast", []string{"--subnet", "255.255.255.252/30"}, "holds the limited broadcast address 255.255.255.255"},
		{"smaller than /30", []string{"--subnet", "10.66.0.0/31"}, "use a /30 or larger"},
		{"gateway on the broadcast address", []string{"--subnet", "10.66.0.0/24", "--gateway", "10.66.0.255"}, "broadcast address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.snapshot()
			r := w.pt(append([]string{"network", "create", "x"}, c.args...)...)
			expectOneLineError(t, r, c.want)
			sameSnapshot(t, strings.Join(c.args, " "), before, w.snapshot())
		})
	}

	t.Run("--force takes a route that is not an interface's own subnet", func(t *testing.T) {
		w.ok("network", "create", "forced", "--subnet", "203.0.113.0/25", "--force")
		w.ok("network", "rm", "forced")
	})
	t.Run("a free subnet is taken", func(t *testing.T) {
		w.ok("network", "create", "fine", "--subnet", "10.66.0.0/30")
		w.ok("network", "rm", "fine")
	})
}

// TestParallelNetworkCreate: networks created at once without --subnet
// all succeed, each with a subnet of its own.
func TestParallelNetworkCreate(t *testing.T) {
	w := newWorld(t, 0)
	w.startAgent()
	const n = 6
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = w.pt("network", "create", fmt.Sprintf("par%d", i))
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("network create par%d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	w.distinctSubnets(t, n)
}

// distinctSubnets fails unless the agent has n networks, no two with the
// same subnet.
func (w *world) distinctSubnets(t *testing.T, n int) {
	t.Helper()
	var nets []control.NetworkInfo
	w.okJSON(&nets, "network", "ls")
	subnets := map[netip.Prefix]string{}
	for _, nw := range nets {
		if other, ok := subnets[nw.Subnet]; ok {
			t.Errorf("networks %s and %s share %s", other, nw.Name, nw.Subnet)
		}
		subnets[nw.Subnet] = nw.Name
	}
	if len(nets) != n {
		t.Errorf("%d networks, want %d: %+v", len(nets), n, nets)
	}
}
