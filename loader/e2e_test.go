package loader_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

func TestMain(m *testing.M) {
	testenv.RegisterHelper("load", loadHelper)
	testenv.MaybeRunHelper()
	os.Exit(m.Run())
}

// loadHelper plays the agent: it loads and attaches the datapath, fills in
// the host's addresses and its netns cookie, and exits. What it attached
// must keep working after it is gone.
func loadHelper(args []string) (any, error) {
	if len(args) < 4 {
		return nil, errors.New("load wants pin dir, uplink, cgroup, tc mode, then bridge=IF, endpoint=IF and xdp=MODE")
	}
	pinDir, uplink, cgroup, tcMode, more := args[0], args[1], args[2], args[3], args[4:]
	d, err := loader.Load(loader.Options{PinDir: pinDir, ForceLegacyTC: tcMode == string(loader.LegacyTC)})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	mode, err := d.AttachUplink(uplink)
	if err != nil {
		return nil, err
	}
	if err := d.AttachCgroup(cgroup); err != nil {
		return nil, err
	}
	for _, arg := range more {
		kind, ifname, _ := strings.Cut(arg, "=")
		if kind == "xdp" {
			if err := attachXDP(d, uplink, loader.XDPMode(ifname)); err != nil {
				return nil, err
			}
			continue
		}
		attach := d.AttachBridge
		if kind == "endpoint" {
			attach = d.AttachEndpoint
		}
		if _, err := attach(ifname); err != nil {
			return nil, err
		}
	}
	if _, err := d.FinishUpgrade(); err != nil {
		return nil, err
	}
	cookie, err := loader.NetnsCookie()
	if err != nil {
		return nil, err
	}
	cfg := maps.NewConfig(d.Maps.Config)
	v, err := cfg.Get()
	if err != nil {
		return nil, err
	}
	v.HostNetnsCookie = cookie
	if err := cfg.Set(v); err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	want := map[netip.Addr]uint32{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			want[ip] = uint32(a.LinkIndex)
		}
	}
	if err := maps.NewHostAddrs(d.Maps.HostAddrs).Sync(want); err != nil {
		return nil, err
	}
	return string(mode), nil
}

// attachXDP puts the uplink XDP program on uplink in exactly mode.
func attachXDP(d *loader.Datapath, uplink string, mode loader.XDPMode) error {
	l, err := netlink.LinkByName(uplink)
	if err != nil {
		return err
	}
	got, err := d.AttachUplinkXDP(l, mode)
	if err != nil {
		return err
	}
	if got != mode {
		return fmt.Errorf("xdp on %s runs %s, want %s", uplink, got, mode)
	}
	return nil
}

func TestPublishedPortsEndToEnd(t *testing.T) {
	testenv.RequirePrivileges(t)
	for _, mode := range []loader.TCMode{loader.TCX, loader.LegacyTC} {
		t.Run(string(mode), func(t *testing.T) { testPublishedPorts(t, mode) })
	}
}

func testPublishedPorts(t *testing.T, requested loader.TCMode) {
	w := testenv.NewWorld(t)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)

	w.A.ServeTCP(t, ":80")
	w.A.ServeUDP(t, ":53")
	// B's own loopback service: B dialling 127.0.0.1:9090 must reach it,
	// not the host's binding of that port.
	w.B.ServeTCP(t, "127.0.0.1:9090")

	load := func() {
		t.Helper()
		var mode string
		if err := w.Host.Helper(t, "", &mode, "load", pins, w.Uplink, cgroup, string(requested), "bridge="+w.Bridge); err != nil {
			t.Fatal(err)
		}
		want := requested
		if !testenv.KernelAtLeast(t, 6, 6) {
			want = loader.LegacyTC
		}
		if loader.TCMode(mode) != want {
			t.Fatalf("attached with %s, want %s", mode, want)
		}
		t.Logf("uplink attached with %s", mode)
	}
	load()

	registerNetns(t, pins, 1, w.A, w.B)
	if err := maps.NewNetworks(openPinned(t, pins, "networks")).Put(maps.Network{
		Subnet: netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(), Gateway: w.Gateway, ID: 1,
	}); err != nil {
		t.Fatal(err)
	}

	bindingsMap := openPinned(t, pins, "bindings")
	ctMap := openPinned(t, pins, "ct")
	bindings := maps.NewBindings(bindingsMap)
	any4 := netip.IPv4Unspecified()
	loopback := netip.MustParseAddr("127.0.0.1")
	if err := bindings.PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any4, 8080), Backend: netip.AddrPortFrom(w.AIP, 80), ID: 1},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(any4, 5353), Backend: netip.AddrPortFrom(w.AIP, 53), ID: 2},
		{Proto: maps.TCP, Host: netip.AddrPortFrom(loopback, 9090), Backend: netip.AddrPortFrom(w.AIP, 80), ID: 3},
	}); err != nil {
		t.Fatal(err)
	}

	hostTCP := netip.AddrPortFrom(w.HostIP, 8080).String()
	hostUDP := netip.AddrPortFrom(w.HostIP, 5353).String()

	t.Run("outside reaches the container and keeps its address", func(t *testing.T) {
		res, err := w.Outside.Dial("tcp", hostTCP)
		expect(t, res, err, w.OutsideIP, hostTCP)
		res, err = w.Outside.Dial("udp", hostUDP)
		expect(t, res, err, w.OutsideIP, hostUDP)
		// A namespace Pontoon does not manage is not rewritten by the
		// socket hooks (it may have no route to the container): its
		// packets take the uplink path.
		res, err = w.Outside.DialFrom(t, cgroup, "tcp", hostTCP)
		expect(t, res, err, w.OutsideIP, hostTCP)
	})

	t.Run("host reaches the container through loopback and its own address", func(t *testing.T) {
		// The connection really leaves from the host's bridge address; the
		// application still sees the address it dialled.
		for _, c := range []struct{ network, addr string }{
			{"tcp", "127.0.0.1:8080"},
			{"udp", "127.0.0.1:5353"},
			{"udp-connected", "127.0.0.1:5353"},
			{"tcp", hostTCP},
			{"udp", hostUDP},
			{"tcp", "127.0.0.1:9090"},
		} {
			res, err := w.Host.DialFrom(t, cgroup, c.network, c.addr)
			expect(t, res, err, w.Gateway, c.addr)
		}
	})

	t.Run("a container reaches another through the host address with its own source", func(t *testing.T) {
		res, err := w.B.DialFrom(t, cgroup, "tcp", hostTCP)
		expect(t, res, err, w.BIP, hostTCP)
		res, err = w.B.DialFrom(t, cgroup, "udp", hostUDP)
		expect(t, res, err, w.BIP, hostUDP)
	})

	t.Run("a container's own loopback is never translated", func(t *testing.T) {
		res, err := w.B.DialFrom(t, cgroup, "tcp", "127.0.0.1:9090")
		expect(t, res, err, loopback, "127.0.0.1:9090")
	})

	t.Run("a loopback binding is unreachable from outside", func(t *testing.T) {
		if res, err := w.Outside.Dial("tcp", netip.AddrPortFrom(w.HostIP, 9090).String()); err == nil {
			t.Fatalf("outside reached the 127.0.0.1 binding: %+v", res)
		}
	})

	t.Run("established connections survive the loader exiting and a reload", func(t *testing.T) {
		conn := w.Outside.Connect(t, hostTCP)
		conn.RoundTrip(t, w.OutsideIP)
		before := ctEntriesFor(t, ctMap, conn.LocalAddr().String())
		if before == 0 {
			t.Fatal("no conntrack entry for the established connection")
		}
		load()
		conn.RoundTrip(t, w.OutsideIP)
		if after := ctEntriesFor(t, ctMap, conn.LocalAddr().String()); after != before {
			t.Fatalf("reload changed conntrack entries of the connection: %d before, %d after", before, after)
		}
	})

	t.Run("nothing but BPF: no proxy listens, no firewall rule exists", func(t *testing.T) {
		if out := w.Host.Exec(t, "ss", "-Htuln"); strings.TrimSpace(out) != "" {
			t.Fatalf("something listens in the host namespace:\n%s", out)
		}
		if _, err := exec.LookPath("nft"); err == nil {
			if out := w.Host.Exec(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
				t.Fatalf("nftables rules exist in the host namespace:\n%s", out)
			}
		}
		if _, err := exec.LookPath("iptables-save"); err == nil {
			if out := w.Host.Exec(t, "iptables-save"); strings.Contains(out, "-A ") {
				t.Fatalf("iptables rules exist in the host namespace:\n%s", out)
			}
		}
	})

	t.Run("unpublished ports stop working", func(t *testing.T) {
		if err := bindings.Delete(maps.TCP, netip.AddrPortFrom(any4, 8080)); err != nil {
			t.Fatal(err)
		}
		if res, err := w.Outside.Dial("tcp", hostTCP); err == nil {
			t.Fatalf("outside still reaches the unpublished port: %+v", res)
		}
		if res, err := w.Host.DialFrom(t, cgroup, "tcp", "127.0.0.1:8080"); err == nil {
			t.Fatalf("host still reaches the unpublished port: %+v", res)
		}
		// The UDP binding is untouched.
		res, err := w.Outside.Dial("udp", hostUDP)
		expect(t, res, err, w.OutsideIP, hostUDP)
	})
}

// expect checks that a dial succeeded, that the server saw wantSource, and
// that the client saw the address it dialled as its peer.
func expect(t *testing.T, res testenv.DialResult, err error, wantSource netip.Addr, dialled string) {
	t.Helper()
	if err != nil {
		t.Fatalf("dial %s: %v", dialled, err)
	}
	peer, _, err := testenv.ParseEcho(res.Reply)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := netip.ParseAddrPort(peer)
	if err != nil {
		t.Fatalf("server reported peer %q: %v", peer, err)
	}
	if seen.Addr() != wantSource {
		t.Errorf("dial %s: server saw the client as %s, want %s", dialled, seen.Addr(), wantSource)
	}
	if res.Peer != dialled {
		t.Errorf("dial %s: client sees its peer as %s, want the address it dialled", dialled, res.Peer)
	}
}

func openPinned(t *testing.T, dir, name string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func ctEntriesFor(t *testing.T, m *ebpf.Map, client string) int {
	t.Helper()
	entries, err := maps.NewCT(m).All()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Client.String() == client {
			n++
		}
	}
	return n
}

// registerNetns tells the socket hooks which network the containers of
// each namespace belong to, as the agent does at attach.
func registerNetns(t *testing.T, pins string, networkID uint32, members ...*testenv.Netns) {
	t.Helper()
	netnsMap := maps.NewNetns(openPinned(t, pins, "netns"))
	for _, ns := range members {
		var cookie uint64
		if err := ns.Do(func() (err error) {
			cookie, err = loader.NetnsCookie()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := netnsMap.Put(cookie, networkID); err != nil {
			t.Fatal(err)
		}
	}
}
