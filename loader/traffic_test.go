package loader_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

const (
	// Only a stall misses it: a healthy transfer takes seconds, under 20
	// under emulation.
	transferDeadline = 120 * time.Second
	// Datagrams bigger than the 1500-byte MTU travel as fragments.
	datagramsPerSize = 3
	smallMTU         = 1400
)

var datagramSizes = []int{3000, 9000}

// TestTraffic moves 64 MiB each way over every path the datapath
// translates, in every mode, and checks every byte (issue 10). Bulk
// transfers are where GSO and GRO super-packets and path MTU discovery
// meet the translation, and where a datapath that mishandles them stalls
// rather than fails. Upload means the client sends: the outside for a
// published port, the container for masquerade.
//
// Every world is built first and then all their transfers run at once, so
// that a stall costs its deadline once for the whole test rather than once
// per path (under -short, two at a time: see below). Each subtest then
// reports one transfer or one size of datagrams; a -run pattern picks
// which are reported, not which run.
func TestTraffic(t *testing.T) {
	testenv.RequirePrivileges(t)
	start := time.Now()
	worlds := trafficWorlds(t)
	_, iptablesErr := exec.LookPath("iptables")
	_, ethtoolErr := exec.LookPath("ethtool")
	haveIPIP := testenv.HaveIPIP(t)
	var built []*trafficWorld
	for _, w := range worlds {
		switch {
		case w.forwardDrop && iptablesErr != nil:
			w.skip = "needs iptables to set the FORWARD policy: run 'make deps'"
		case w.checksums != offloadedChecksums && ethtoolErr != nil:
			w.skip = "needs ethtool to turn checksum offloads off: run 'make deps'"
		case w.uplink == ipipUplink && !haveIPIP:
			w.skip = "needs ipip tunnels, which this kernel was built without (CONFIG_NET_IPIP)"
		default:
			built = append(built, w)
		}
	}
	// Building a world is mostly running ip(8), seconds a time under
	// emulation: the worlds are built side by side, one per CPU at a time.
	// Loading the datapath into each, the heavy part, then runs one at a
	// time from the test's goroutine.
	var jobs []func()
	for _, w := range built {
		jobs = append(jobs, func() { w.make(offGoroutine{t}) })
	}
	runAtOnce(runtime.NumCPU(), jobs)
	if t.Failed() {
		t.FailNow()
	}
	var datagrams, transfers []*probe
	var seed uint64
	for _, w := range built {
		w.program(t)
		for _, p := range w.addProbes(t, &seed) {
			if p.transfer {
				transfers = append(transfers, p)
			} else {
				datagrams = append(datagrams, p)
			}
		}
	}
	t.Logf("built %d worlds in %s", len(built), time.Since(start).Round(time.Millisecond))

	// Datagrams first, while the links are quiet: a fragment lost to a
	// queue full of bulk traffic would only cost a retry, but a retry is
	// not what they are here to show.
	start = time.Now()
	runProbes(datagrams, len(datagrams))
	t.Logf("sent datagrams in %s", time.Since(start).Round(time.Millisecond))
	// Under emulation (-short, the VM tier) every transfer at once would
	// share one slow machine and take minutes each: there, two at a time.
	atOnce := len(transfers)
	if testing.Short() {
		atOnce = 2
	}
	start = time.Now()
	runProbes(transfers, atOnce)
	t.Logf("moved %d transfers, %d at a time, in %s", len(transfers), atOnce, time.Since(start).Round(time.Millisecond))

	for _, w := range worlds {
		t.Run(w.name(), func(t *testing.T) {
			if w.skip != "" {
				t.Skip(w.skip)
			}
			for _, p := range w.probes {
				t.Run(p.name, func(t *testing.T) {
					if p.err != nil {
						t.Fatalf("%v\ndatapath counters: %s", p.err, counters(t, w.pins))
					}
					t.Log(p.summary)
				})
			}
		})
	}
}

type uplinkKind string

const (
	vethUplink     uplinkKind = "veth uplink"
	smallMTUUplink uplinkKind = "small MTU uplink"
	ipipUplink     uplinkKind = "ipip uplink"
	tunUplink      uplinkKind = "tun uplink"
)

// trafficWorld is one world of TestTraffic: an uplink and a mode.
type trafficWorld struct {
	uplink      uplinkKind
	tc          loader.TCMode
	redirect    bool // forward in BPF after translating
	forwardDrop bool // iptables -P FORWARD DROP in the world's host namespace
	checksums   checksumMode
	// xdp, when set, puts the uplink XDP program on in this mode: it
	// translates what tc would, and leaves tc fragments and the rest.
	xdp  loader.XDPMode
	skip string

	*testenv.World
	pins, cgroup string
	C            *testenv.Netns // on a second network; veth uplink only
	attach       []string       // the load helper's bridge= and endpoint= arguments
	networks     []maps.Network
	endpoints    []endpoint
	probes       []*probe
}

type endpoint struct {
	addr      netip.Addr
	veth      string
	networkID uint32
}

func (w *trafficWorld) name() string {
	forwarding := "stack forwarding"
	if w.redirect {
		forwarding = "BPF forwarding"
	}
	if w.forwardDrop {
		forwarding += " with FORWARD DROP"
	}
	if w.xdp != "" {
		forwarding += "/XDP " + string(w.xdp)
	}
	if w.checksums != offloadedChecksums {
		forwarding += "/" + string(w.checksums)
	}
	return fmt.Sprintf("%s/%s/%s", w.uplink, w.tc, forwarding)
}

// checksumMode is what the veths of a world do with TCP and UDP checksums.
// The datapath folds its rewrites into them as the skb's ip_summed says.
type checksumMode string

const (
	// offloadedChecksums: veth defaults. Senders leave the sum to the
	// device (CHECKSUM_PARTIAL: the field holds the pseudo header's sum)
	// and receivers take it on trust, so a wrong fold goes unseen.
	offloadedChecksums checksumMode = ""
	// partialChecksums: senders still leave the sum to the device, but
	// every device a packet leaves the host by completes it in software
	// (tx off) and every receiver checks it (rx off): a pseudo header
	// sum the datapath folded wrongly is a transfer that fails.
	partialChecksums checksumMode = "partial checksums completed and checked"
	// softwareChecksums: no offload anywhere. Senders sum, the datapath
	// sees CHECKSUM_NONE (the host's veths do not vouch for what they
	// receive), receivers check.
	softwareChecksums checksumMode = "software checksums"
)

// setChecksums turns the offloads of checksums off as the mode says.
func (w *trafficWorld) setChecksums(t testing.TB) {
	t.Helper()
	if w.checksums == offloadedChecksums {
		return
	}
	senders := []*testenv.Netns{w.Outside, w.A, w.B}
	if w.C != nil {
		senders = append(senders, w.C)
	}
	hostSides := []string{w.Uplink}
	for _, e := range w.endpoints {
		hostSides = append(hostSides, e.veth)
	}
	sender, hostSide := []string{"rx", "off"}, []string{"tx", "off"}
	if w.checksums == softwareChecksums {
		sender = []string{"rx", "off", "tx", "off"}
		hostSide = sender
	}
	for _, ns := range senders {
		ns.Exec(t, "ethtool", append([]string{"-K", "eth0"}, sender...)...)
	}
	for _, dev := range hostSides {
		w.Host.Exec(t, "ethtool", append([]string{"-K", dev}, hostSide...)...)
	}
}

// trafficWorlds: every mode on the veth uplink, whose world has every
// path; published ports and masquerade in each forwarding mode over the
// small MTU uplink and the two without Ethernet headers (ipip, tun), and
// the latter with legacy tc too. A stack that forwards cannot do so past
// FORWARD DROP: that combination is left out. XDP in front of tc on the
// small MTU uplink, native and generic: there path MTU discovery meets
// XDP's translation, and datagrams bigger than the MTU reach XDP as
// fragments, which it leaves to tc. The veth uplink once more with
// checksums completed and checked on the way (both forwarding modes), and
// with none offloaded: only then does a wrongly folded checksum fail a
// transfer. Under -short (the VM tier) the kernel's own tc mode with BPF
// forwarding, the agent's default, and with FORWARD DROP and with
// checksums checked on the veth uplink; the other uplinks with BPF
// forwarding, tun left to ipip, and the small MTU one with native XDP too.
func trafficWorlds(t *testing.T) []*trafficWorld {
	natural := loader.LegacyTC
	if testenv.KernelAtLeast(t, 6, 6) {
		natural = loader.TCX
	}
	if testing.Short() {
		return []*trafficWorld{
			{uplink: vethUplink, tc: natural, redirect: true},
			{uplink: vethUplink, tc: natural, redirect: true, forwardDrop: true},
			{uplink: vethUplink, tc: natural, redirect: true, checksums: partialChecksums},
			{uplink: smallMTUUplink, tc: natural, redirect: true},
			{uplink: ipipUplink, tc: natural, redirect: true},
			{uplink: smallMTUUplink, tc: natural, redirect: true, xdp: loader.XDPNative},
		}
	}
	forwardings := []struct{ redirect, forwardDrop bool }{{false, false}, {true, false}, {true, true}}
	var worlds []*trafficWorld
	for _, tc := range []loader.TCMode{loader.TCX, loader.LegacyTC} {
		for _, f := range forwardings {
			worlds = append(worlds, &trafficWorld{uplink: vethUplink, tc: tc, redirect: f.redirect, forwardDrop: f.forwardDrop})
		}
	}
	for _, uplink := range []uplinkKind{smallMTUUplink, ipipUplink, tunUplink} {
		for _, f := range forwardings {
			worlds = append(worlds, &trafficWorld{uplink: uplink, tc: natural, redirect: f.redirect, forwardDrop: f.forwardDrop})
		}
		if uplink != smallMTUUplink && natural != loader.LegacyTC {
			worlds = append(worlds, &trafficWorld{uplink: uplink, tc: loader.LegacyTC, redirect: true})
		}
	}
	for _, f := range forwardings[:2] {
		worlds = append(worlds, &trafficWorld{uplink: vethUplink, tc: natural, redirect: f.redirect, checksums: partialChecksums})
	}
	worlds = append(worlds,
		&trafficWorld{uplink: vethUplink, tc: natural, redirect: true, checksums: softwareChecksums},
		&trafficWorld{uplink: smallMTUUplink, tc: natural, redirect: true, xdp: loader.XDPNative},
		&trafficWorld{uplink: smallMTUUplink, tc: natural, redirect: true, xdp: loader.XDPGeneric},
		&trafficWorld{uplink: smallMTUUplink, tc: natural, xdp: loader.XDPNative})
	return worlds
}

// make builds the world: network 1 (A, B) on every uplink, network 2 (C)
// on the veth one. Bulk servers listen on port 80 of A, B and the outside,
// datagram echo servers on port 53 of A and the outside. It may run off
// the test's goroutine (see offGoroutine).
func (w *trafficWorld) make(t testing.TB) {
	t.Helper()
	switch w.uplink {
	case vethUplink:
		w.World = testenv.NewWorld(t)
	case smallMTUUplink:
		w.World = testenv.NewSmallMTUWorld(t, smallMTU)
	case ipipUplink:
		w.World = testenv.NewIPIPWorld(t)
	case tunUplink:
		w.World = testenv.NewTunWorld(t)
	}
	w.pins, w.cgroup = testenv.PinDir(t), testenv.Cgroup(t)
	w.networks = []maps.Network{{Subnet: netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(), Gateway: w.Gateway, ID: 1, Masquerade: true}}
	w.endpoints = []endpoint{{w.AIP, w.AVeth, 1}, {w.BIP, w.BVeth, 1}}
	w.attach = []string{"bridge=" + w.Bridge, "endpoint=" + w.AVeth, "endpoint=" + w.BVeth}
	if w.uplink == vethUplink {
		gateway2, cIP := netip.MustParseAddr("10.90.0.1"), netip.MustParseAddr("10.90.0.2")
		bridge2, cVeth := "ptn"+w.ID, "pvc"+w.ID
		w.C = testenv.NewNetns(t, "ptd"+w.ID)
		w.Host.IP(t, "link", "add", bridge2, "type", "bridge")
		w.Host.IP(t, "addr", "add", gateway2.String()+"/24", "dev", bridge2)
		w.Host.IP(t, "link", "set", bridge2, "up")
		testenv.Veth(t, w.Host, cVeth, w.C, "eth0")
		w.Host.IP(t, "link", "set", cVeth, "master", bridge2)
		w.C.IP(t, "addr", "add", cIP.String()+"/24", "dev", "eth0")
		w.C.IP(t, "route", "add", "default", "via", gateway2.String())
		w.networks = append(w.networks, maps.Network{Subnet: netip.PrefixFrom(gateway2, 24).Masked(), Gateway: gateway2, ID: 2, Masquerade: true})
		w.endpoints = append(w.endpoints, endpoint{cIP, cVeth, 2})
		w.attach = append(w.attach, "bridge="+bridge2, "endpoint="+cVeth)
	}

	if w.forwardDrop {
		w.Host.Exec(t, "iptables", "-P", "FORWARD", "DROP")
	}
	w.setChecksums(t)
	w.A.ServeBulk(t, ":80")
	w.B.ServeBulk(t, ":80")
	w.Outside.ServeBulk(t, ":80")
	w.A.ServeDatagramEcho(t, ":53")
	w.Outside.ServeDatagramEcho(t, ":53")
}

// program loads the datapath and configures it as the agent would.
// Published: TCP 8080 to A:80, TCP 8081 to B:80, UDP 5353 to A:53.
func (w *trafficWorld) program(t *testing.T) {
	t.Helper()
	var mode string
	args := append([]string{w.pins, w.Uplink, w.cgroup, string(w.tc)}, w.attach...)
	if w.xdp != "" {
		args = append(args, "xdp="+string(w.xdp))
	}
	if err := w.Host.Helper(t, "", &mode, "load", args...); err != nil {
		t.Fatalf("%s: %v", w.name(), err)
	}
	want := w.tc
	if !testenv.KernelAtLeast(t, 6, 6) {
		want = loader.LegacyTC
	}
	if loader.TCMode(mode) != want {
		t.Fatalf("%s: attached with %s, want %s", w.name(), mode, want)
	}
	configure(t, w.World, w.pins, w.redirect, w.networks)
	endpoints := maps.NewEndpoints(openPinned(t, w.pins, "endpoints"))
	for _, e := range w.endpoints {
		if err := endpoints.Put(e.addr, uint32(ifindexIn(t, w.Host, e.veth)), e.networkID); err != nil {
			t.Fatal(err)
		}
	}
	registerNetns(t, w.pins, 1, w.A, w.B)
	if w.C != nil {
		registerNetns(t, w.pins, 2, w.C)
	}
	any4 := netip.IPv4Unspecified()
	if err := maps.NewBindings(openPinned(t, w.pins, "bindings")).PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any4, 8080), Backend: netip.AddrPortFrom(w.AIP, 80), ID: 1},
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any4, 8081), Backend: netip.AddrPortFrom(w.BIP, 80), ID: 2},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(any4, 5353), Backend: netip.AddrPortFrom(w.AIP, 53), ID: 3},
	}); err != nil {
		t.Fatal(err)
	}
}

// offGoroutine lets testenv build on a goroutine of its own: a fatal error
// is reported on the test and ends only that goroutine, and cleanups are
// the test's. (FailNow and its kin must not be called off the test's
// goroutine; Error, Cleanup and Helper may.)
type offGoroutine struct{ testing.TB }

func (o offGoroutine) FailNow() {
	o.Fail()
	runtime.Goexit()
}

func (o offGoroutine) Fatal(args ...any) {
	o.Helper()
	o.Error(args...)
	runtime.Goexit()
}

func (o offGoroutine) Fatalf(format string, args ...any) {
	o.Helper()
	o.Errorf(format, args...)
	runtime.Goexit()
}

// probe is one subtest's traffic. Probes run in the background, all at
// once; the subtest reports the outcome.
type probe struct {
	name     string // below the world's
	transfer bool   // a bulk transfer, not datagrams
	run      func() (summary string, err error)

	summary string
	err     error
}

// runProbes runs the probes, up to atOnce at a time, and returns when all
// are done.
func runProbes(probes []*probe, atOnce int) {
	var jobs []func()
	for _, p := range probes {
		jobs = append(jobs, func() {
			p.err = errors.New("ended early: see the test's own errors") // unless run returns
			p.summary, p.err = p.run()
		})
	}
	runAtOnce(atOnce, jobs)
}

func runAtOnce(n int, jobs []func()) {
	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, job := range jobs {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			job()
		})
	}
	wg.Wait()
}

// addProbes lists the world's paths, each way.
func (w *trafficWorld) addProbes(t *testing.T, seed *uint64) []*probe {
	published := netip.AddrPortFrom(w.HostIP, 8080).String()
	outside := func(port uint16) string { return netip.AddrPortFrom(w.OutsideIP, port).String() }

	transfers := func(path string, client *testenv.Netns, cgroup, addr string) {
		for _, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
			*seed++
			tr := testenv.Transfer{Dir: dir, Addr: addr, Seed: *seed, Size: testenv.BulkSize, Deadline: transferDeadline}
			w.probes = append(w.probes, &probe{name: path + "/" + dir.String(), transfer: true, run: func() (string, error) {
				var res testenv.TransferResult
				var err error
				if cgroup == "" {
					res, err = client.Transfer(tr)
				} else {
					res, err = client.TransferFrom(offGoroutine{t}, cgroup, tr)
				}
				return fmt.Sprintf("%d bytes in %s", res.Bytes, res.Elapsed), err
			}})
		}
	}
	datagrams := func(path string, client *testenv.Netns, addr string) {
		for _, size := range datagramSizes {
			w.probes = append(w.probes, &probe{name: fmt.Sprintf("%s/UDP %d bytes", path, size), run: func() (string, error) {
				return fmt.Sprintf("%d datagrams of %d bytes echoed", datagramsPerSize, size), client.EchoDatagrams(addr, size, datagramsPerSize)
			}})
		}
	}

	everyPath := w.uplink == vethUplink
	transfers("published port", w.Outside, "", published)
	if everyPath || w.xdp != "" {
		datagrams("published port", w.Outside, netip.AddrPortFrom(w.HostIP, 5353).String())
	}
	transfers("masquerade", w.A, "", outside(80))
	if everyPath {
		datagrams("masquerade", w.A, outside(53))
		// Neither client is in the cgroup: tc's hairpin does it.
		transfers("hairpin in a network", w.A, "", netip.AddrPortFrom(w.HostIP, 8081).String())
		transfers("hairpin across networks", w.C, "", published)
		// The host's own clients go through the socket hooks.
		transfers("host to 127.0.0.1", w.Host, w.cgroup, "127.0.0.1:8080")
		transfers("host to its own address", w.Host, w.cgroup, published)
	}
	return w.probes
}
