package ipam

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
)

// TestDiagHostSockets: sock_diag sees the TCP listeners and UDP sockets of
// this namespace, IPv4 and IPv6, with their addresses, as /proc does; a
// connected TCP socket is no listener.
func TestDiagHostSockets(t *testing.T) {
	if _, err := diagHostSockets(TCP); errors.Is(err, errNoSockDiag) {
		t.Skipf("no sock_diag here (the allocator reads /proc instead): %v", err)
	}
	listen := func(network, addr string) netip.AddrPort {
		t.Helper()
		switch network {
		case "tcp4", "tcp6":
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("cannot listen on %s here: %v", addr, err)
			}
			t.Cleanup(func() { ln.Close() })
			return ln.Addr().(*net.TCPAddr).AddrPort()
		}
		pc, err := net.ListenPacket(network, addr)
		if err != nil {
			t.Skipf("cannot bind %s here: %v", addr, err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	tcp4 := listen("tcp4", "127.0.0.1:0")
	tcp6 := listen("tcp6", "[::1]:0")
	udp4 := listen("udp4", "127.0.0.1:0")
	udp6 := listen("udp6", "[::1]:0")
	client, err := net.Dial("tcp4", tcp4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	clientPort := client.LocalAddr().(*net.TCPAddr).AddrPort().Port()

	for _, c := range []struct {
		proto   Proto
		want    []netip.AddrPort
		notWant uint16
	}{
		{TCP, []netip.AddrPort{tcp4, tcp6}, clientPort},
		{UDP, []netip.AddrPort{udp4, udp6}, 0},
	} {
		diag, err := diagHostSockets(c.proto)
		if err != nil {
			t.Fatalf("%s: %v", c.proto, err)
		}
		proc, err := readHostSockets(defaultProcNet, c.proto)
		if err != nil {
			t.Fatal(err)
		}
		for _, ap := range c.want {
			if !slices.Contains(diag[ap.Port()], ap.Addr()) {
				t.Errorf("%s %s: sock_diag has %v on that port", c.proto, ap, diag[ap.Port()])
			}
			// Same sockets, in whatever order each source lists them.
			if !slices.Equal(sortedAddrs(diag[ap.Port()]), sortedAddrs(proc[ap.Port()])) {
				t.Errorf("%s port %d: sock_diag says %v, /proc says %v", c.proto, ap.Port(), diag[ap.Port()], proc[ap.Port()])
			}
		}
		if c.notWant != 0 && len(diag[c.notWant]) != 0 {
			t.Errorf("%s: the connected client's port %d counts as a listener: %v", c.proto, c.notWant, diag[c.notWant])
		}
	}

	// Through the allocator: one batch, one read, every listener refused.
	a, err := Open(NewMemStore(), Options{DynamicPorts: testPorts, CheckListening: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		proto Proto
		ap    netip.AddrPort
	}{{TCP, tcp4}, {TCP, tcp6}, {UDP, udp4}, {UDP, udp6}} {
		host := any4
		if c.ap.Addr().Is6() {
			host = any6
		}
		reqs := []PortRequest{
			{Owner: "ep", Proto: c.proto, HostIP: host, Ports: Port(1)},
			{Owner: "ep", Proto: c.proto, HostIP: host, Ports: Port(c.ap.Port())},
		}
		before := takeSnapshot(t, a)
		_, err := a.AllocatePortsBatch(reqs, nil)
		var be *BatchError
		if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, ErrInUse) {
			t.Errorf("%s %s: batch = %v, want request 1 refused as in use by a host process", c.proto, c.ap, err)
		}
		sameSnapshot(t, before, takeSnapshot(t, a))
	}
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out
}

// TestDiagHostSocketsReusesBuffers: dumps answer the same again and again
// from reused reply buffers, and a read of both families allocates far
// less than the two 64 KiB buffers it once made each time.
func TestDiagHostSocketsReusesBuffers(t *testing.T) {
	if _, err := diagHostSockets(UDP); errors.Is(err, errNoSockDiag) {
		t.Skipf("no sock_diag here (the allocator reads /proc instead): %v", err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot bind 127.0.0.1 here: %v", err)
	}
	defer pc.Close()
	ours := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	const runs = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := diagHostSockets(TCP); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 32<<10 && !raceEnabled {
		t.Errorf("one read of the TCP listeners allocated %d bytes; want the reply buffers reused", per)
	}
	for i := range 3 {
		h, err := diagHostSockets(UDP)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(h[ours.Port()], ours.Addr()) {
			t.Errorf("dump %d: UDP port %d holds %v; want our %s", i, ours.Port(), h[ours.Port()], ours)
		}
	}
}
