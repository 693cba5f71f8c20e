package testenv

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// NewSmallMTUWorld is a World whose host reaches the outside through a
// router, over a link with a smaller MTU than the containers' own:
//
//	outside --1500-- router --mtu-- host --bridge (1500)-- a, b
//
// A container's full-sized packets (the outside advertises an MSS for
// 1500) fit the uplink only after path MTU discovery, with the host
// answering them with ICMP fragmentation needed.
func NewSmallMTUWorld(t testing.TB, mtu int) *World {
	t.Helper()
	w := newWorld(t)
	w.OutsideIP = netip.MustParseAddr("198.19.0.2")
	hostSide := netip.MustParseAddr("198.18.0.254") // the router, on the host's link
	outsideSide := netip.MustParseAddr("198.19.0.1")

	router := NewNetns(t, "ptr"+w.ID)
	router.Sysctl(t, "net.ipv4.ip_forward", "1")
	Veth(t, w.Host, w.Uplink, router, "eth0")
	Veth(t, router, "eth1", w.Outside, "eth0")
	w.Host.IP(t, "link", "set", w.Uplink, "mtu", strconv.Itoa(mtu))
	router.IP(t, "link", "set", "eth0", "mtu", strconv.Itoa(mtu))

	w.Host.IP(t, "addr", "add", w.HostIP.String()+"/24", "dev", w.Uplink)
	router.IP(t, "addr", "add", hostSide.String()+"/24", "dev", "eth0")
	router.IP(t, "addr", "add", outsideSide.String()+"/24", "dev", "eth1")
	w.Outside.IP(t, "addr", "add", w.OutsideIP.String()+"/24", "dev", "eth0")
	w.Host.IP(t, "route", "add", "default", "via", hostSide.String())
	w.Outside.IP(t, "route", "add", netip.PrefixFrom(w.HostIP, 24).Masked().String(), "via", outsideSide.String())

	w.addContainers(t)
	return w
}

// NewIPIPWorld is a World whose uplink is an ipip tunnel, a device that
// carries IP packets without an Ethernet header:
//
//	outside [tun0] ==ipip over a veth== [Uplink] host --bridge-- a, b
//
// HostIP and OutsideIP sit on the tunnel's ends; the veth underneath has
// addresses of its own.
func NewIPIPWorld(t testing.TB) *World {
	t.Helper()
	w := newWorld(t)
	hostUnder := netip.MustParseAddr("198.19.0.1")
	outsideUnder := netip.MustParseAddr("198.19.0.2")
	underlay := "pti" + w.ID
	Veth(t, w.Host, underlay, w.Outside, "eth0")
	w.Host.IP(t, "addr", "add", hostUnder.String()+"/24", "dev", underlay)
	w.Outside.IP(t, "addr", "add", outsideUnder.String()+"/24", "dev", "eth0")

	for _, end := range []struct {
		ns            *Netns
		dev           string
		local, remote netip.Addr
		addr          netip.Addr
	}{
		{w.Host, w.Uplink, hostUnder, outsideUnder, w.HostIP},
		{w.Outside, "tun0", outsideUnder, hostUnder, w.OutsideIP},
	} {
		end.ns.IP(t, "link", "add", end.dev, "type", "ipip", "local", end.local.String(), "remote", end.remote.String())
		end.ns.IP(t, "addr", "add", end.addr.String()+"/24", "dev", end.dev)
		end.ns.IP(t, "link", "set", end.dev, "up")
	}

	w.addContainers(t)
	return w
}

// HaveIPIP reports whether the kernel can make ipip tunnels (some kernels
// are built without them). It tries in a throwaway namespace.
func HaveIPIP(t testing.TB) bool {
	t.Helper()
	ns := NewNetns(t, "ptp"+UniqueID(t))
	return exec.Command("ip", "-n", ns.Name, "link", "add", "probe", "type", "ipip", "local", "198.19.0.1", "remote", "198.19.0.2").Run() == nil
}

// NewTunWorld is a World whose uplink is a tun device, which carries IP
// packets without an Ethernet header as ipip does, for kernels built
// without ipip. The test process is the wire: it relays packets between
// the host's tun device and the outside's.
//
//	outside [tun0] <-relay in this process-> [Uplink] host --bridge-- a, b
func NewTunWorld(t testing.TB) *World {
	t.Helper()
	w := newWorld(t)
	hostEnd := openTun(t, w.Host, w.Uplink)
	outsideEnd := openTun(t, w.Outside, "tun0")
	for _, end := range []struct {
		ns   *Netns
		dev  string
		addr netip.Addr
	}{{w.Host, w.Uplink, w.HostIP}, {w.Outside, "tun0", w.OutsideIP}} {
		end.ns.IP(t, "addr", "add", end.addr.String()+"/24", "dev", end.dev)
		end.ns.IP(t, "link", "set", end.dev, "up")
	}
	relay(t, hostEnd, outsideEnd)
	w.addContainers(t)
	return w
}

// openTun creates a tun device in the namespace; it goes away when the
// returned file is closed.
func openTun(t testing.TB, ns *Netns, name string) *os.File {
	t.Helper()
	var f *os.File
	if err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("create tun device %s: %w", name, err)
		}
		// Non-blocking, so that the runtime polls it and Close ends a
		// pending Read.
		f = os.NewFile(uintptr(fd), name)
		return nil
	}); err != nil {
		t.Fatalf("in %s: %v", ns.Name, err)
	}
	return f
}

// relay copies packets both ways between two tun devices until cleanup. A
// packet it cannot write is lost, as on a real wire.
func relay(t testing.TB, a, b *os.File) {
	var wg sync.WaitGroup
	pump := func(dst, src *os.File) {
		buf := make([]byte, 1<<16)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			dst.Write(buf[:n])
		}
	}
	wg.Go(func() { pump(a, b) })
	wg.Go(func() { pump(b, a) })
	t.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
	})
}
