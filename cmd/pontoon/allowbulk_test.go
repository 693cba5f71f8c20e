package main

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestAllowFromBulk: a published port with --allow-from set to the
// client's prefix carries 32 MiB each way for that client, with XDP off
// (tc decides) and native (XDP decides), while a client outside the
// prefix gets no connection (drop_not_allowed counts it) although it
// reaches the same server through a port published without a list.
func TestAllowFromBulk(t *testing.T) {
	for _, mode := range []string{"off", "native"} {
		t.Run("xdp "+mode, func(t *testing.T) { testAllowFromBulk(t, mode) })
	}
}

func testAllowFromBulk(t *testing.T, xdp string) {
	w := newWorld(t, 1)
	stranger := netip.MustParseAddr("203.0.113.7")
	w.outside.IP(t, "addr", "add", stranger.String()+"/32", "dev", "eth0")
	w.host.IP(t, "route", "add", stranger.String()+"/32", "via", w.outsideIP.String())
	w.startAgent("--xdp", xdp)
	c1 := w.containers[0]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	c1.ServeBulk(t, ":5001")
	clientPrefix := netip.PrefixFrom(w.outsideIP, 24).Masked()
	w.ok("port", "publish", "c1", "5001:5001", "--allow-from", clientPrefix.String())
	w.ok("port", "publish", "c1", "5002:5001")
	listed := netip.AddrPortFrom(w.hostIP, 5001)

	for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
		t.Run("32 MiB "+dir.String()+" from inside the prefix", func(t *testing.T) {
			res, err := w.outside.Transfer(testenv.Transfer{Dir: dir, Addr: listed.String(), Seed: uint64(i + 1), Size: 32 << 20, Deadline: 2 * time.Minute})
			if err != nil {
				t.Fatalf("%s through %s (allow-from %s): %v", dir, listed, clientPrefix, err)
			}
			t.Logf("%d bytes in %s", res.Bytes, res.Elapsed)
		})
	}

	t.Run("a client outside the prefix gets nothing", func(t *testing.T) {
		if err := connectFrom(w.outside, stranger, netip.AddrPortFrom(w.hostIP, 5002)); err != nil {
			t.Fatalf("the stranger cannot reach the port published without a list either, so the test proves nothing: %v", err)
		}
		before := w.counter("drop_not_allowed")
		if err := connectFrom(w.outside, stranger, listed); err == nil {
			t.Fatalf("%s connected to %s despite --allow-from %s", stranger, listed, clientPrefix)
		}
		if after := w.counter("drop_not_allowed"); after <= before {
			t.Errorf("drop_not_allowed stayed at %d after %s tried %s", after, stranger, listed)
		}
	})
}

// connectFrom opens a TCP connection from src in ns to dst (the
// handshake is all it needs) and closes it.
func connectFrom(ns *testenv.Netns, src netip.Addr, dst netip.AddrPort) error {
	return ns.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 3 * time.Second}
		c, err := d.Dial("tcp", dst.String())
		if err != nil {
			return err
		}
		return c.Close()
	})
}
