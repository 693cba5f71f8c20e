package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// serveNamed answers each line with the peer the server saw and, as the
// message, the name of its namespace, so a test knows which way a
// connection went as well as which source it arrived with.
func serveNamed(t *testing.T, ns *testenv.Netns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					fmt.Fprintf(c, "from=%s msg=%s\n", c.RemoteAddr(), ns.Name)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// far is an outside namespace behind its own interface of the host.
type far struct {
	ns       *testenv.Netns
	hostIf   string
	hostAddr netip.Addr
	peerAddr netip.Addr
}

// newFar joins a new namespace to the host by a veth, 198.18.N.1 on the
// host and 198.18.N.2 beyond, serving TCP on :80 on every address it has.
// Its only routes are connected ones: a reply to any source but the
// host's address on this link goes nowhere.
func (w *world) newFar(t *testing.T, n int, prefix string) *far {
	t.Helper()
	f := &far{
		ns:       testenv.NewNetns(t, fmt.Sprintf("%s%s", prefix, w.id)),
		hostIf:   fmt.Sprintf("%s%s", prefix, w.id),
		hostAddr: netip.MustParseAddr(fmt.Sprintf("198.18.%d.1", n)),
		peerAddr: netip.MustParseAddr(fmt.Sprintf("198.18.%d.2", n)),
	}
	testenv.Veth(t, w.host, f.hostIf, f.ns, "eth0")
	w.host.IP(t, "addr", "add", f.hostAddr.String()+"/24", "dev", f.hostIf)
	f.ns.IP(t, "addr", "add", f.peerAddr.String()+"/24", "dev", "eth0")
	serveNamed(t, f.ns, ":80")
	return f
}

// dialNamed connects from a container and reports the server's namespace
// and the source it saw.
func dialNamed(t *testing.T, from *testenv.Netns, addr string) (server string, source netip.Addr) {
	t.Helper()
	res, err := from.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	peer, server, err := testenv.ParseEcho(res.Reply)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := netip.ParseAddrPort(peer)
	if err != nil {
		t.Fatalf("server reported peer %q: %v", peer, err)
	}
	return server, seen.Addr()
}

// uplinkByName finds an uplink in the agent's status.
func (w *world) uplinkByName(name string) (control.Uplink, bool) {
	w.t.Helper()
	var s control.Status
	w.okJSON(&s, "status")
	for _, u := range s.Uplinks {
		if u.Name == name {
			return u, true
		}
	}
	return control.Uplink{}, false
}

// TestMasqueradeAnyUplink: without --uplink, containers are masqueraded
// out of every interface that is not Pontoon's own, whichever route
// picked it (Docker's `! -o docker0`): one with only a connected route,
// one with only a specific route, each nexthop of a multipath default
// route with its own address, and one that appears after the agent
// started. Loopback, Pontoon's interfaces and bridge ports are no uplinks.
func TestMasqueradeAnyUplink(t *testing.T) {
	w := newWorld(t, 1)
	w.defaultUplinks = true
	c1 := w.containers[0]
	serveNamed(t, w.outside, ":80")

	// Only a route to 203.0.113.0/24 leads through this one.
	specific := w.newFar(t, 1, "ppa")
	specific.ns.IP(t, "addr", "add", "203.0.113.10/32", "dev", "lo")
	w.host.IP(t, "route", "add", "203.0.113.0/24", "via", specific.peerAddr.String())

	// The default route is multipath; the same servers answer behind
	// either nexthop.
	paths := []*far{w.newFar(t, 2, "ppm"), w.newFar(t, 3, "ppn")}
	const destinations = 32
	for _, p := range paths {
		for i := 1; i <= destinations; i++ {
			p.ns.IP(t, "addr", "add", fmt.Sprintf("203.0.114.%d/32", i), "dev", "lo")
		}
	}
	w.host.IP(t, "route", "add", "default",
		"nexthop", "via", paths[0].peerAddr.String(), "dev", paths[0].hostIf,
		"nexthop", "via", paths[1].peerAddr.String(), "dev", paths[1].hostIf)

	// A bridge with a port: the bridge is a way out, its port is not.
	// Stray interfaces are veths with their peer in a scratch namespace.
	scratch := testenv.NewNetns(t, "pps"+w.id)
	stray := func(name string) { testenv.Veth(t, w.host, name, scratch, name) }
	bridge, port := "ppb"+w.id, "ppp"+w.id
	w.host.IP(t, "link", "add", bridge, "type", "bridge")
	stray(port)
	w.host.IP(t, "link", "set", port, "master", bridge)
	wantUplinks := map[string]netip.Addr{
		w.uplink: w.hostIP, specific.hostIf: specific.hostAddr,
		paths[0].hostIf: paths[0].hostAddr, paths[1].hostIf: paths[1].hostAddr,
		bridge: {},
	}
	// A tun device (no Ethernet header, no address) is one too, where
	// the kernel offers them.
	tun := "ppt" + w.id
	if out, err := exec.Command("ip", "-n", w.host.Name, "tuntap", "add", "dev", tun, "mode", "tun").CombinedOutput(); err == nil {
		wantUplinks[tun] = netip.Addr{}
	} else {
		t.Logf("no tun device to check: %v: %s", err, out)
	}

	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	var ep control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "net", "c1", "--netns", c1.Path())

	t.Run("every way out is an uplink, Pontoon's own and bridge ports are not", func(t *testing.T) {
		var s control.Status
		w.okJSON(&s, "status")
		got := map[string]control.Uplink{}
		for _, u := range s.Uplinks {
			got[u.Name] = u
		}
		for name, addr := range wantUplinks {
			if u, ok := got[name]; !ok || u.Addr != addr {
				t.Errorf("uplink %s: %+v (attached %v), want address %v", name, u, ok, addr)
			}
		}
		// Others may be there (a kernel with ipip loaded gives every
		// namespace a tunl0), but never these.
		for _, name := range []string{"lo", port, "pt-net", ep.HostIf} {
			if _, ok := got[name]; ok {
				t.Errorf("%s is an uplink: %+v", name, s.Uplinks)
			}
		}
		text := w.ok("status")
		if !strings.Contains(text, specific.hostIf+" (") || !strings.Contains(text, "masquerades as "+specific.hostAddr.String()) ||
			!strings.Contains(text, bridge+" (") || !strings.Contains(text, "no IPv4 address") {
			t.Errorf("status text:\n%s", text)
		}
	})

	t.Run("through an interface with only a connected route", func(t *testing.T) {
		addr := netip.AddrPortFrom(w.outsideIP, 80).String()
		server, src := dialNamed(t, c1, addr)
		if server != w.outside.Name || src != w.hostIP {
			t.Errorf("dial %s: answered by %s from %s, want %s from %s", addr, server, src, w.outside.Name, w.hostIP)
		}
	})

	t.Run("through an interface with only a specific route", func(t *testing.T) {
		server, src := dialNamed(t, c1, "203.0.113.10:80")
		if server != specific.ns.Name || src != specific.hostAddr {
			t.Errorf("answered by %s from %s, want %s from %s", server, src, specific.ns.Name, specific.hostAddr)
		}
	})

	t.Run("through each nexthop of a multipath default route", func(t *testing.T) {
		// The kernel hashes addresses to choose a nexthop: destinations
		// enough that both are taken unless something pins one.
		used := map[string]int{}
		for i := 1; i <= destinations; i++ {
			addr := fmt.Sprintf("203.0.114.%d:80", i)
			server, src := dialNamed(t, c1, addr)
			var path *far
			for _, p := range paths {
				if p.ns.Name == server {
					path = p
				}
			}
			if path == nil {
				t.Fatalf("dial %s: answered by %s, not by a nexthop's namespace", addr, server)
			}
			if src != path.hostAddr {
				t.Errorf("dial %s: %s saw %s, want its own link's %s", addr, server, src, path.hostAddr)
			}
			used[server]++
		}
		if len(used) != len(paths) {
			t.Errorf("connections per nexthop %v: want both nexthops used", used)
		}
	})

	t.Run("an interface added later is attached and masquerades", func(t *testing.T) {
		late := w.newFar(t, 4, "ppl")
		late.ns.IP(t, "addr", "add", "203.0.115.10/32", "dev", "lo")
		w.host.IP(t, "route", "add", "203.0.115.0/24", "via", late.peerAddr.String())
		eventually(t, late.hostIf+" is an uplink with its address", func() bool {
			u, ok := w.uplinkByName(late.hostIf)
			return ok && u.Addr == late.hostAddr
		})
		server, src := dialNamed(t, c1, "203.0.115.10:80")
		if server != late.ns.Name || src != late.hostAddr {
			t.Errorf("answered by %s from %s, want %s from %s", server, src, late.ns.Name, late.hostAddr)
		}

		t.Run("its address follows", func(t *testing.T) {
			w.host.IP(t, "addr", "flush", "dev", late.hostIf)
			eventually(t, late.hostIf+" loses its masquerade address", func() bool {
				u, ok := w.uplinkByName(late.hostIf)
				return ok && !u.Addr.IsValid()
			})
			w.host.IP(t, "addr", "add", "198.18.4.7/24", "dev", late.hostIf)
			w.host.IP(t, "route", "replace", "203.0.115.0/24", "via", late.peerAddr.String())
			eventually(t, late.hostIf+" masquerades as its new address", func() bool {
				u, ok := w.uplinkByName(late.hostIf)
				return ok && u.Addr == netip.MustParseAddr("198.18.4.7")
			})
			server, src := dialNamed(t, c1, "203.0.115.10:80")
			if server != late.ns.Name || src != netip.MustParseAddr("198.18.4.7") {
				t.Errorf("answered by %s from %s, want %s from 198.18.4.7", server, src, late.ns.Name)
			}
		})

		t.Run("and forgotten with its pins when deleted", func(t *testing.T) {
			w.host.IP(t, "link", "del", late.hostIf)
			eventually(t, late.hostIf+" is no uplink", func() bool {
				_, ok := w.uplinkByName(late.hostIf)
				return !ok
			})
			eventually(t, "no attachment names a deleted interface", func() bool {
				var s control.Status
				w.okJSON(&s, "status")
				for _, a := range s.Attachments {
					if strings.HasPrefix(a.Target, "ifindex ") {
						return false
					}
				}
				return true
			})
		})
	})

	t.Run("an interface joining a bridge stops being an uplink", func(t *testing.T) {
		joiner := "ppj" + w.id
		stray(joiner)
		eventually(t, joiner+" is an uplink", func() bool { _, ok := w.uplinkByName(joiner); return ok })
		w.host.IP(t, "link", "set", joiner, "master", bridge)
		eventually(t, joiner+" is no uplink", func() bool { _, ok := w.uplinkByName(joiner); return !ok })
		if hooks := w.hooksOn(joiner); len(hooks) != 0 {
			t.Errorf("programs left on %s: %v", joiner, hooks)
		}
	})

	t.Run("a bridge adopted by a network sheds the uplink programs, and gets them back", func(t *testing.T) {
		w.ok("network", "create", "adopted", "--subnet", "10.78.0.0/24", "--bridge", bridge)
		if _, ok := w.uplinkByName(bridge); ok {
			t.Errorf("adopted bridge %s is still an uplink", bridge)
		}
		if hooks := w.hooksOn(bridge); len(hooks) != 1 || hooks[0] != "bridge-ingress" {
			t.Errorf("programs on adopted bridge %s: %v, want bridge-ingress alone", bridge, hooks)
		}
		w.ok("network", "rm", "adopted")
		if _, ok := w.uplinkByName(bridge); !ok {
			t.Errorf("bridge %s left by a removed network is no uplink", bridge)
		}
	})

	t.Run("a restart with --uplink takes the programs off the others", func(t *testing.T) {
		w.agent.stop(syscall.SIGTERM)
		w.waitNotify("STOPPING=1")
		w.defaultUplinks = false
		w.startAgent()
		var s control.Status
		w.okJSON(&s, "status")
		if len(s.Uplinks) != 1 || s.Uplinks[0].Name != w.uplink || s.Uplinks[0].Addr != w.hostIP {
			t.Errorf("uplinks %+v, want %s alone", s.Uplinks, w.uplink)
		}
		for name := range wantUplinks {
			if name == w.uplink {
				continue
			}
			if hooks := w.hooksOn(name); len(hooks) != 0 {
				t.Errorf("programs left on %s: %v", name, hooks)
			}
		}
		addr := netip.AddrPortFrom(w.outsideIP, 80).String()
		if server, src := dialNamed(t, c1, addr); src != w.hostIP {
			t.Errorf("dial %s: answered by %s from %s, want %s", addr, server, src, w.hostIP)
		}
	})
}

// hooksOn lists the hooks the agent's pins attach to an interface.
func (w *world) hooksOn(name string) []string {
	w.t.Helper()
	var s control.Status
	w.okJSON(&s, "status")
	var hooks []string
	for _, a := range s.Attachments {
		if a.Target == name {
			hooks = append(hooks, a.Hook)
		}
	}
	return hooks
}
