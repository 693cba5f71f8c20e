package loader_test

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestIPv6PublishedPorts: an outside IPv6 client reaches a container
// through the host's published ports, on a wildcard ([::]) and an exact
// binding, with its address kept; 64 MiB each way and UDP datagrams
// bigger than the MTU (fragments both ways) get through whole. The uplink
// has a smaller MTU than the bridge, so the container's big replies meet
// Packet Too Big on the way out. Both forwarding modes: the stack's, and
// BPF's FIB redirect after the DNAT.
func TestIPv6PublishedPorts(t *testing.T) {
	testenv.RequirePrivileges(t)
	forwardingModes6(t, testIPv6PublishedPorts)
}

// forwardingModes6 runs test in each way the host may forward IPv6: the
// stack's, BPF's FIB redirect, and that with an ip6tables FORWARD policy of
// DROP, under which BPF must forward both ways.
func forwardingModes6(t *testing.T, test func(t *testing.T, redirect, forwardDrop bool)) {
	for _, c := range []struct {
		name                  string
		redirect, forwardDrop bool
	}{
		{"stack forwarding", false, false},
		{"fib redirect", true, false},
		{"fib redirect, FORWARD DROP", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath("ip6tables"); c.forwardDrop && err != nil {
				t.Skip("needs ip6tables to set the FORWARD policy: run 'make deps'")
			}
			test(t, c.redirect, c.forwardDrop)
		})
	}
}

func testIPv6PublishedPorts(t *testing.T, redirect, forwardDrop bool) {
	w := testenv.NewWorld(t)
	if forwardDrop {
		w.Host.Exec(t, "ip6tables", "-P", "FORWARD", "DROP")
	}
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	v6 := addIPv6(t, w, "2001:db8:18::/64", "fd00:89::/64")
	hostIP, outsideIP, aIP := v6.HostIP, v6.OutsideIP, v6.AIP
	v6.narrowLink(t, w)

	w.A.ServeTCP(t, "[::]:80")
	w.A.ServeUDP(t, "[::]:53")
	w.A.ServeBulk(t, "[::]:9000")
	w.A.ServeDatagramEcho(t, "[::]:7000")

	var mode string
	if err := w.Host.Helper(t, "", &mode, "load", pins, w.Uplink, cgroup, string(loader.TCX), "bridge="+w.Bridge); err != nil {
		t.Fatal(err)
	}
	configure(t, w, pins, redirect, v6.networks(w))
	v6.putHostAddrs(t, w, pins)
	any6 := netip.IPv6Unspecified()
	if err := maps.NewBindings(openPinned(t, pins, "bindings")).PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any6, 8080), Backend: netip.AddrPortFrom(aIP, 80), ID: 1},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(hostIP, 5353), Backend: netip.AddrPortFrom(aIP, 53), ID: 2},
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any6, 9000), Backend: netip.AddrPortFrom(aIP, 9000), ID: 3},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(any6, 7000), Backend: netip.AddrPortFrom(aIP, 7000), ID: 4},
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("outside reaches the container and keeps its address", func(t *testing.T) {
		tcp := netip.AddrPortFrom(hostIP, 8080).String()
		res, err := w.Outside.Dial("tcp", tcp)
		expect(t, res, err, outsideIP, tcp)
		udp := netip.AddrPortFrom(hostIP, 5353).String()
		res, err = w.Outside.Dial("udp", udp)
		expect(t, res, err, outsideIP, udp)
	})

	t.Run("the container is not reachable by its own address", func(t *testing.T) {
		if res, err := w.Outside.Dial("tcp", netip.AddrPortFrom(aIP, 80).String()); err == nil {
			t.Fatalf("outside reached the container directly: %+v", res)
		}
	})

	t.Run("datagrams bigger than the MTU", func(t *testing.T) {
		for _, size := range datagramSizes {
			if err := w.Outside.EchoDatagrams(netip.AddrPortFrom(hostIP, 7000).String(), size, datagramsPerSize); err != nil {
				t.Errorf("%d-byte datagrams: %v\ndatapath counters: %s", size, err, counters(t, pins))
			}
		}
	})

	for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
		t.Run("64 MiB "+dir.String(), func(t *testing.T) {
			res, err := w.Outside.Transfer(testenv.Transfer{
				Dir: dir, Addr: netip.AddrPortFrom(hostIP, 9000).String(), Seed: uint64(i + 1),
				Size: testenv.BulkSize, Deadline: transferDeadline,
			})
			if err != nil {
				t.Fatalf("%v\ndatapath counters: %s", err, counters(t, pins))
			}
			t.Logf("%d bytes in %s", res.Bytes, res.Elapsed)
		})
	}
}
