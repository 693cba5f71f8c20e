package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// The CNI plugin driven by cnitool (no engine) in both modes, against the
// world's agent. cnitool and the plugins it chains (bridge, host-local)
// run in the world's host namespace, as a runtime runs them on a node.

var (
	cniPluginOnce sync.Once
	cniPluginDir  string
	cniPluginErr  error
)

// cniPlugin builds cmd/pontoon-cni once into a directory of its own.
func cniPlugin(t testing.TB) string {
	t.Helper()
	cniPluginOnce.Do(func() {
		cniPluginDir = filepath.Join(filepath.Dir(bin), "cni")
		if cniPluginErr = os.MkdirAll(cniPluginDir, 0o755); cniPluginErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(cniPluginDir, "pontoon-cni"), "../pontoon-cni").CombinedOutput()
		if err != nil {
			cniPluginErr = fmt.Errorf("build pontoon-cni: %v\n%s", err, out)
		}
	})
	if cniPluginErr != nil {
		t.Fatal(cniPluginErr)
	}
	return filepath.Join(cniPluginDir, "pontoon-cni")
}

// systemCNIDir is where Debian's containernetworking-plugins puts bridge,
// host-local and portmap.
const systemCNIDir = "/usr/lib/cni"

// cnitoolPath finds cnitool on PATH, in the repository's bin/ (where
// 'make deps' installs it) or in GOPATH/bin, or skips.
func cnitoolPath(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("cnitool"); err == nil {
		return p
	}
	cands := []string{"../../bin/cnitool"}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		cands = append(cands, filepath.Join(strings.TrimSpace(string(gopath)), "bin", "cnitool"))
	}
	for _, c := range cands {
		if abs, err := filepath.Abs(c); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
	}
	t.Skip("needs cnitool: run 'make deps' (go install github.com/containernetworking/cni/cnitool@v1.3.1)")
	return ""
}

// cniEnv is a CNI world: the agent's world, a config directory with the
// test's conflists, and a private libcni cache.
type cniEnv struct {
	*world
	cnitool, confDir, cacheDir string
	// cniVersion is the conflists': 1.1.0 has STATUS and GC, Debian's
	// bridge and host-local (1.1.1) stop at 1.0.0.
	cniVersion string
	// root is the world whose cleanup stops the agent, which on's copies
	// must tell of a restarted one.
	root *world
}

func newCNIEnv(t *testing.T, containers int) *cniEnv {
	t.Helper()
	testenv.RequirePrivileges(t)
	tool := cnitoolPath(t)
	cniPlugin(t)
	w := newWorld(t, containers)
	w.startAgent()
	return &cniEnv{world: w, root: w, cnitool: tool, confDir: t.TempDir(), cacheDir: t.TempDir(), cniVersion: "1.1.0"}
}

// on is the environment for the (sub)test t, whose failures end t alone.
func (e *cniEnv) on(t *testing.T) *cniEnv {
	w := *e.world
	w.t = t
	c := *e
	c.world = &w
	return &c
}

// TestCNI drives pontoon-cni in one world (one agent), as a node would:
// main-plugin mode, chained mode, 50 parallel ADDs and DELs of both
// modes at once, and Podman.
func TestCNI(t *testing.T) {
	e := newCNIEnv(t, 2)
	t.Run("main plugin", func(t *testing.T) { testCNIMainPlugin(t, e.on(t)) })
	t.Run("chained after bridge and host-local", func(t *testing.T) { testCNIChained(t, e.on(t)) })
	t.Run("50 parallel ADDs and DELs", func(t *testing.T) { testCNIParallel(t, e.on(t)) })
	t.Run("podman", func(t *testing.T) { testCNIPodman(t, e.on(t)) })
}

// restartAgent stops the agent and starts another on the same state.
func (e *cniEnv) restartAgent() {
	e.t.Helper()
	e.agent.stop(syscall.SIGTERM)
	e.startAgent()
	e.root.agent = e.agent
}

// rebuildState stops the agent, rebuilds its state file from the kernel
// (`pontoon state rebuild --force`) and starts another on it; the
// agent's records, the maps and the interfaces must be as before.
func (e *cniEnv) rebuildState(t *testing.T) {
	t.Helper()
	before := e.snapshot()
	// The root's: an earlier subtest's restart may have replaced it.
	e.root.agent.stop(syscall.SIGTERM)
	r := e.inHost("state", "rebuild", "--force", "--state-dir", e.stateDir, "--bpffs", e.pins)
	if r.code != 0 {
		e.t.Fatalf("state rebuild: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	e.t.Logf("state rebuild:\n%s", r.stdout)
	e.startAgent()
	e.root.agent = e.agent
	sameSnapshot(t, "a rebuild", before, e.snapshot())
}

func (e *cniEnv) writeConflist(name string, plugins ...map[string]any) {
	e.t.Helper()
	b, err := json.MarshalIndent(map[string]any{"cniVersion": e.cniVersion, "name": name, "plugins": plugins}, "", "  ")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.confDir, name+".conflist"), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// pontoonPlugin is the conflist entry for pontoon-cni.
func (e *cniEnv) pontoonPlugin(extra map[string]any) map[string]any {
	p := map[string]any{"type": "pontoon-cni", "socket": e.socket, "capabilities": map[string]bool{"portMappings": true}}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

type cniPortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// cnitoolRun runs `cnitool CMD NET NETNS` in the host namespace with the
// port mappings as CAP_ARGS. libcni keeps its cache in /var/lib/cni,
// which cnitool cannot move: a private mount namespace binds the test's
// own directory there.
func (e *cniEnv) cnitoolRun(cmd, network string, ns *testenv.Netns, ports []cniPortMapping) result {
	e.t.Helper()
	caps, err := json.Marshal(map[string]any{"portMappings": ports})
	if err != nil {
		e.t.Fatal(err)
	}
	script := `mkdir -p /var/lib/cni && mount --bind "$0" /var/lib/cni && exec "$@"`
	c := exec.Command("nsenter", "--net="+e.host.Path(), "--", "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, e.cacheDir, e.cnitool, cmd, network, ns.Path())
	c.Env = append(os.Environ(), "NETCONFPATH="+e.confDir, "CNI_PATH="+cniPluginDir+":"+systemCNIDir, "CAP_ARGS="+string(caps))
	return runCmd(e.t, nil, c)
}

func (e *cniEnv) cnitoolOK(cmd, network string, ns *testenv.Netns, ports []cniPortMapping) string {
	e.t.Helper()
	r := e.cnitoolRun(cmd, network, ns, ports)
	if r.code != 0 {
		e.t.Fatalf("cnitool %s %s %s: exit %d: %s%s\nagent log:\n%s", cmd, network, ns.Name, r.code, r.stdout, r.stderr, e.agentLog())
	}
	return r.stdout
}

// pluginRun runs pontoon-cni directly, as a runtime would, for what
// cnitool cannot send (GC with valid attachments).
func pluginRun(t testing.TB, host *testenv.Netns, command, containerID, netns, ifName string, conf any) result {
	t.Helper()
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("nsenter", "--net="+host.Path(), "--", cniPlugin(t))
	c.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
		"CNI_IFNAME="+ifName, "CNI_PATH="+cniPluginDir)
	c.Stdin = strings.NewReader(string(b))
	return runCmd(t, nil, c)
}

// cniError is the error object a plugin prints.
type cniError struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
}

// cniResult is the part of a 1.0.0 result the tests look at.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name, Mac, Sandbox string
	} `json:"interfaces"`
	IPs []struct {
		Interface *int   `json:"interface"`
		Address   string `json:"address"`
		Gateway   string `json:"gateway"`
	} `json:"ips"`
	Routes []struct{ Dst, GW string } `json:"routes"`
}

func parseCNIResult(t testing.TB, out string) cniResult {
	t.Helper()
	var r cniResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("CNI result %q: %v", out, err)
	}
	return r
}

// cniEndpoints are the agent's endpoints of a network.
func (e *cniEnv) cniEndpoints(network string) []control.Endpoint {
	e.t.Helper()
	var eps []control.Endpoint
	e.okJSON(&eps, "endpoint", "ls", "--network", network)
	return eps
}

func testCNIMainPlugin(t *testing.T, e *cniEnv) {
	c1 := e.containers[0]
	net := "cni" + e.id
	e.writeConflist(net, e.pontoonPlugin(map[string]any{"network": net, "subnet": "10.91.0.0/24"}))
	c1.ServeTCP(t, ":80")
	ports := []cniPortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 9090, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"},
		{HostPort: 8081, ContainerPort: 80, Protocol: "tcp", HostIP: e.hostIP.String()},
	}
	res := parseCNIResult(t, e.cnitoolOK("add", net, c1, ports))

	eps := e.cniEndpoints(net)
	if len(eps) != 1 {
		t.Fatalf("endpoints %+v, want one", eps)
	}
	ep := eps[0]
	t.Run("the result is spec-correct and matches the namespace", func(t *testing.T) {
		if ep.Owner != "cni" || !strings.HasPrefix(ep.ContainerID, "cnitool-") || ep.IfName != "eth0" {
			t.Errorf("endpoint record: owner %q, container id %q, ifname %q", ep.Owner, ep.ContainerID, ep.IfName)
		}
		mac := c1.HardwareAddr(t, "eth0").String()
		if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Mac != mac || res.Interfaces[1].Sandbox != c1.Path() {
			t.Errorf("interfaces %+v, want eth0 with MAC %s in %s", res.Interfaces, mac, c1.Path())
		}
		if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 ||
			res.IPs[0].Address != ep.IP.String()+"/24" || res.IPs[0].Gateway != "10.91.0.1" {
			t.Errorf("ips %+v, want %s/24 via 10.91.0.1 on interface 1", res.IPs, ep.IP)
		}
		if len(res.Routes) != 1 || res.Routes[0].Dst != "0.0.0.0/0" || res.Routes[0].GW != "10.91.0.1" {
			t.Errorf("routes %+v", res.Routes)
		}
		if addr := c1.IP(t, "-o", "addr", "show", "eth0"); !strings.Contains(addr, ep.IP.String()+"/24") {
			t.Errorf("eth0 in the container: %s", addr)
		}
	})
	t.Run("published ports carry traffic from outside, 127.0.0.1 and the host IP", func(t *testing.T) {
		e := e.on(t)
		for _, addr := range []string{netip.AddrPortFrom(e.hostIP, 8080).String(), netip.AddrPortFrom(e.hostIP, 8081).String()} {
			r, err := e.outside.Dial("tcp", addr)
			expectEcho(t, r, err, e.outsideIP, addr)
		}
		r, err := e.host.DialFrom(t, e.cgroup, "tcp", "127.0.0.1:9090")
		expectEcho(t, r, err, netip.MustParseAddr("10.91.0.1"), "127.0.0.1:9090")
	})
	t.Run("CHECK passes, then fails after a manual change", func(t *testing.T) {
		e := e.on(t)
		e.cnitoolOK("check", net, c1, ports)
		e.ok("port", "unpublish", ep.Name, "8080:80")
		r := e.cnitoolRun("check", net, c1, ports)
		if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "8080") {
			t.Errorf("CHECK after unpublishing 8080 by hand: exit %d, %s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("STATUS says the agent answers", func(t *testing.T) {
		e := e.on(t)
		e.cnitoolOK("status", net, c1, nil)
	})
	t.Run("a rebuilt state file keeps the endpoint's owner and container", func(t *testing.T) {
		e := e.on(t)
		e.rebuildState(t)
		if eps := e.cniEndpoints(net); len(eps) != 1 || eps[0].Owner != "cni" || eps[0].ContainerID != ep.ContainerID {
			t.Errorf("endpoints after the rebuild: %+v", eps)
		}
		addr := netip.AddrPortFrom(e.hostIP, 8081).String()
		r, err := e.outside.Dial("tcp", addr)
		expectEcho(t, r, err, e.outsideIP, addr)
	})
	t.Run("DEL removes everything, and DEL again succeeds", func(t *testing.T) {
		e := e.on(t)
		e.cnitoolOK("del", net, c1, ports)
		if eps := e.cniEndpoints(net); len(eps) != 0 {
			t.Errorf("endpoints left: %+v", eps)
		}
		if b := e.bindings(); len(b) != 0 {
			t.Errorf("bindings left: %v", b)
		}
		if out := c1.IP(t, "-br", "link"); strings.Contains(out, "eth0") {
			t.Errorf("eth0 left in the container: %s", out)
		}
		e.cnitoolOK("del", net, c1, ports)
	})
	t.Run("DEL succeeds after the namespace is gone, and removes the endpoint", func(t *testing.T) {
		e := e.on(t)
		name := "ppg" + e.id
		testenv.Run(t, "ip", "netns", "add", name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		gone := &testenv.Netns{Name: name}
		e.cnitoolOK("add", net, gone, ports[:1])
		testenv.Run(t, "ip", "netns", "del", name)
		e.cnitoolOK("del", net, gone, ports[:1])
		if eps := e.cniEndpoints(net); len(eps) != 0 {
			t.Errorf("endpoints left: %+v", eps)
		}
		if b := e.bindings(); len(b) != 0 {
			t.Errorf("bindings left: %v", b)
		}
	})
	t.Run("GC detaches attachments the runtime no longer lists", func(t *testing.T) {
		e := e.on(t)
		c2 := e.containers[1]
		conf := map[string]any{"cniVersion": "1.1.0", "name": net, "type": "pontoon-cni", "socket": e.socket}
		for _, c := range []struct{ id, ns string }{{"keep", c1.Path()}, {"stale", c2.Path()}} {
			if r := pluginRun(t, e.host, "ADD", c.id, c.ns, "eth0", conf); r.code != 0 {
				t.Fatalf("ADD %s: %s%s", c.id, r.stdout, r.stderr)
			}
		}
		gc := map[string]any{"cniVersion": "1.1.0", "name": net, "type": "pontoon-cni", "socket": e.socket,
			"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}}}
		if r := pluginRun(t, e.host, "GC", "", "", "", gc); r.code != 0 {
			t.Fatalf("GC: %s%s", r.stdout, r.stderr)
		}
		eps := e.cniEndpoints(net)
		if len(eps) != 1 || eps[0].ContainerID != "keep" {
			t.Errorf("after GC: %+v, want only the attachment of container keep", eps)
		}
		if r := pluginRun(t, e.host, "DEL", "keep", c1.Path(), "eth0", conf); r.code != 0 {
			t.Errorf("DEL keep: %s%s", r.stdout, r.stderr)
		}
	})
}

func TestCNIAgentDown(t *testing.T) {
	testenv.RequirePrivileges(t)
	host := testenv.NewNetns(t, "ppd"+testenv.UniqueID(t))
	ns := testenv.NewNetns(t, "ppc"+testenv.UniqueID(t))
	conf := map[string]any{"cniVersion": "1.1.0", "name": "down", "type": "pontoon-cni", "socket": filepath.Join(t.TempDir(), "none.sock")}
	for _, c := range []struct {
		command  string
		wantCode uint
	}{{"ADD", 11}, {"STATUS", 50}, {"DEL", 0}} {
		r := pluginRun(t, host, c.command, "c1", ns.Path(), "eth0", conf)
		if c.wantCode == 0 {
			if r.code != 0 {
				t.Errorf("%s with the agent down: exit %d: %s%s", c.command, r.code, r.stdout, r.stderr)
			}
			continue
		}
		var ce cniError
		if err := json.Unmarshal([]byte(r.stdout), &ce); err != nil || r.code == 0 {
			t.Fatalf("%s with the agent down: exit %d, output %q: want a CNI error object", c.command, r.code, r.stdout)
		}
		if ce.Code != c.wantCode || !strings.Contains(ce.Msg, "agent is not running") {
			t.Errorf("%s with the agent down: %+v, want code %d and the agent's advice", c.command, ce, c.wantCode)
		}
	}
}

// bridgeChain is bridge + host-local, as a conflist using portmap has
// them, with a bridge and a lease directory of the test's own and no
// iptables masquerade (Pontoon's BPF masquerades).
func (e *cniEnv) bridgeChain(bridge, subnet string) []map[string]any {
	return []map[string]any{{
		"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "host-local", "subnet": subnet, "dataDir": e.t.TempDir(),
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}}},
	}}
}

func testCNIChained(t *testing.T, e *cniEnv) {
	if !haveBridgePlugin() {
		t.Skip("needs the bridge and host-local plugins: run 'make deps' (containernetworking-plugins)")
	}
	e.cniVersion = "1.0.0"
	c1 := e.containers[0]
	net, bridge := "cnc"+e.id, "ptcb"+e.id
	e.writeConflist(net, append(e.bridgeChain(bridge, "10.92.0.0/24"), e.pontoonPlugin(nil))...)
	c1.ServeTCP(t, ":80")
	ports := []cniPortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 9090, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"},
		{HostPort: 8081, ContainerPort: 80, Protocol: "tcp", HostIP: e.hostIP.String()},
	}
	res := parseCNIResult(t, e.cnitoolOK("add", net, c1, ports))

	t.Run("prevResult is passed through and the bridge plugin's veth adopted", func(t *testing.T) {
		e := e.on(t)
		if len(res.Interfaces) != 3 || res.Interfaces[0].Name != bridge || len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address, "10.92.0.") {
			t.Fatalf("result %+v, want the bridge plugin's (bridge, veth, eth0; a 10.92.0.x address)", res)
		}
		var n control.NetworkInfo
		e.okJSON(&n, "network", "inspect", net)
		if !n.Adopted || n.Bridge != bridge || n.Subnet != netip.MustParsePrefix("10.92.0.0/24") || n.Gateway != netip.MustParseAddr("10.92.0.1") {
			t.Errorf("network %+v, want the bridge %s adopted with 10.92.0.0/24 via 10.92.0.1", n.Network, bridge)
		}
		eps := e.cniEndpoints(net)
		if len(eps) != 1 || !eps[0].Adopted || eps[0].Owner != "cni" || eps[0].IP.String()+"/24" != res.IPs[0].Address || eps[0].HostIf != res.Interfaces[1].Name {
			t.Errorf("endpoints %+v, want the bridge plugin's veth %s adopted with %s", eps, res.Interfaces[1].Name, res.IPs[0].Address)
		}
	})
	t.Run("published ports carry traffic from outside, 127.0.0.1 and the host IP", func(t *testing.T) {
		e := e.on(t)
		for _, addr := range []string{netip.AddrPortFrom(e.hostIP, 8080).String(), netip.AddrPortFrom(e.hostIP, 8081).String()} {
			r, err := e.outside.Dial("tcp", addr)
			expectEcho(t, r, err, e.outsideIP, addr)
		}
		r, err := e.host.DialFrom(t, e.cgroup, "tcp", "127.0.0.1:9090")
		expectEcho(t, r, err, netip.MustParseAddr("10.92.0.1"), "127.0.0.1:9090")
	})
	t.Run("CHECK passes, then fails after a manual change", func(t *testing.T) {
		e := e.on(t)
		e.cnitoolOK("check", net, c1, ports)
		ep := e.cniEndpoints(net)[0]
		e.ok("port", "unpublish", ep.Name, "127.0.0.1:9090:80")
		r := e.cnitoolRun("check", net, c1, ports)
		if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "9090") {
			t.Errorf("CHECK after unpublishing 9090 by hand: exit %d, %s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("adopting what does not fit is refused with nothing changed", func(t *testing.T) {
		e := e.on(t)
		c2 := e.containers[1]
		veth := "ptx" + e.id
		e.host.IP(t, "link", "add", veth, "master", bridge, "type", "veth", "peer", "name", "eth0", "netns", c2.Path())
		t.Cleanup(func() { exec.Command("ip", "-n", e.host.Name, "link", "del", veth).Run() })
		c2.IP(t, "addr", "add", "10.92.0.200/24", "dev", "eth0")
		before := e.snapshot()
		c := control.NewClient(e.socket)
		for _, c2e := range []struct {
			req  control.EndpointAttach
			want string
		}{
			{control.EndpointAttach{Network: net, Name: "x1", Netns: c2.Path(), IfName: "eth0", Adopt: true}, "needs its name"},
			{control.EndpointAttach{Network: net, Name: "x2", Netns: c2.Path(), IfName: "eth9", IP: "10.92.0.200", Adopt: true}, "no interface eth9"},
			{control.EndpointAttach{Network: net, Name: "x3", Netns: c2.Path(), IfName: "eth0", IP: "10.92.0.201", Adopt: true}, "does not carry 10.92.0.201"},
			{control.EndpointAttach{Network: net, Name: "x4", Netns: c2.Path(), IfName: "eth0", IP: "10.92.0.200", Adopt: true, Owner: "bogus"}, "owner \"bogus\""},
		} {
			_, err := c.Attach(c2e.req)
			var re *control.ReplyError
			if !errors.As(err, &re) || re.Status >= 500 || !strings.Contains(re.Message, c2e.want) || strings.Contains(re.Message, "\n") {
				t.Errorf("attach %s: %v, want a one-line refusal saying %q", c2e.req.Name, err, c2e.want)
			}
		}
		sameSnapshot(t, "refused adoptions", before, e.snapshot())
	})
	t.Run("an agent restart keeps the adopted endpoint, its veth and its ports", func(t *testing.T) {
		e := e.on(t)
		veth := res.Interfaces[1].Name
		before := e.host.IP(t, "-o", "link", "show", veth)
		e.restartAgent()
		if after := e.host.IP(t, "-o", "link", "show", veth); strings.Fields(after)[0] != strings.Fields(before)[0] {
			t.Errorf("the agent recreated the bridge plugin's veth: before %s, after %s", before, after)
		}
		if eps := e.cniEndpoints(net); len(eps) != 1 || !eps[0].Adopted {
			t.Errorf("endpoints after the restart: %+v", eps)
		}
		addr := netip.AddrPortFrom(e.hostIP, 8080).String()
		r, err := e.outside.Dial("tcp", addr)
		expectEcho(t, r, err, e.outsideIP, addr)
	})
	t.Run("a rebuilt state file keeps the adopted network and endpoint", func(t *testing.T) {
		e := e.on(t)
		e.rebuildState(t)
		var n control.NetworkInfo
		e.okJSON(&n, "network", "inspect", net)
		eps := e.cniEndpoints(net)
		if !n.Adopted || n.Bridge != bridge || len(eps) != 1 || !eps[0].Adopted || eps[0].Owner != "cni" || !strings.HasPrefix(eps[0].ContainerID, "cnitool-") {
			t.Errorf("after the rebuild: network %+v, endpoints %+v", n.Network, eps)
		}
		addr := netip.AddrPortFrom(e.hostIP, 8080).String()
		r, err := e.outside.Dial("tcp", addr)
		expectEcho(t, r, err, e.outsideIP, addr)
	})
	t.Run("DEL removes the mappings and leaves the pair to the bridge plugin; DEL again succeeds", func(t *testing.T) {
		e := e.on(t)
		e.cnitoolOK("del", net, c1, ports)
		if eps := e.cniEndpoints(net); len(eps) != 0 {
			t.Errorf("endpoints left: %+v", eps)
		}
		if b := e.bindings(); len(b) != 0 {
			t.Errorf("bindings left: %v", b)
		}
		if out := c1.IP(t, "-br", "link"); strings.Contains(out, "eth0") {
			t.Errorf("eth0 left in the container after the chain's DEL: %s", out)
		}
		if r, err := e.outside.Dial("tcp", netip.AddrPortFrom(e.hostIP, 8080).String()); err == nil {
			t.Errorf("outside still reaches the port after DEL: %+v", r)
		}
		e.cnitoolOK("del", net, c1, ports)
	})
}

func haveBridgePlugin() bool {
	_, err := os.Stat(filepath.Join(systemCNIDir, "bridge"))
	return err == nil
}

// testCNIParallel: 50 ADDs at once, half main-plugin and half chained
// (main-plugin alone without the bridge plugin), then 50 DELs at once;
// the agent's records and the bindings map must be exactly the 50
// attachments, then nothing.
func testCNIParallel(t *testing.T, e *cniEnv) {
	const n = 50
	mainNet, chainNet := "cnp"+e.id, "cnq"+e.id
	e.writeConflist(mainNet, e.pontoonPlugin(map[string]any{"subnet": "10.93.0.0/24"}))
	nets := []string{mainNet}
	if haveBridgePlugin() {
		e.cniVersion = "1.0.0"
		e.writeConflist(chainNet, append(e.bridgeChain("ptqb"+e.id, "10.96.0.0/24"), e.pontoonPlugin(nil))...)
		nets = append(nets, chainNet)
	}
	var containers []*testenv.Netns
	for i := range n {
		containers = append(containers, testenv.NewNetns(t, fmt.Sprintf("pq%d%s", i, e.id)))
	}
	each := func(cmd string) {
		var wg sync.WaitGroup
		errs := make([]string, n)
		for i, c := range containers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := e.cnitoolRun(cmd, nets[i%len(nets)], c, []cniPortMapping{{HostPort: 20000 + i, ContainerPort: 80, Protocol: "tcp"}})
				if r.code != 0 {
					errs[i] = fmt.Sprintf("%s %s: exit %d: %s%s", cmd, c.Name, r.code, r.stdout, r.stderr)
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != "" {
				t.Error(err)
			}
		}
	}
	mappings := func() []control.PortMapping {
		var ms []control.PortMapping
		e.okJSON(&ms, "port", "ls")
		return ms
	}
	each("add")
	var eps []control.Endpoint
	for _, net := range nets {
		eps = append(eps, e.cniEndpoints(net)...)
	}
	ips := map[netip.Addr]bool{}
	for _, ep := range eps {
		ips[ep.IP] = true
	}
	ms := mappings()
	if len(eps) != n || len(ips) != n || len(ms) != n || len(e.bindings()) != n {
		t.Errorf("after %d parallel ADDs: %d endpoints, %d addresses, %d mappings, %d bindings", n, len(eps), len(ips), len(ms), len(e.bindings()))
	}
	for _, m := range ms {
		if !ips[m.Backend] {
			t.Errorf("mapping %+v points at no endpoint's address", m)
		}
	}
	for i := n - len(nets); i < n; i++ { // the last of each mode
		containers[i].ServeTCP(t, ":80")
		addr := netip.AddrPortFrom(e.hostIP, uint16(20000+i)).String()
		r, err := e.outside.Dial("tcp", addr)
		expectEcho(t, r, err, e.outsideIP, addr)
	}

	each("del")
	eps = nil
	for _, net := range nets {
		eps = append(eps, e.cniEndpoints(net)...)
	}
	if ms := mappings(); len(eps) != 0 || len(ms) != 0 || len(e.bindings()) != 0 {
		t.Errorf("after %d parallel DELs: %d endpoints, %d mappings, %d bindings left", n, len(eps), len(ms), len(e.bindings()))
	}
}

// BenchmarkCNIAddDel times one ADD (veth, address, one published port)
// and its DEL through the plugin binary in main-plugin mode, as a runtime
// calls it (no cnitool).
func BenchmarkCNIAddDel(b *testing.B) {
	testenv.RequirePrivileges(b)
	cniPlugin(b)
	w := newWorld(b, 1)
	w.startAgent()
	conf := map[string]any{"cniVersion": "1.0.0", "name": "bench" + w.id, "type": "pontoon-cni", "socket": w.socket,
		"subnet": "10.97.0.0/24", "runtimeConfig": map[string]any{"portMappings": []cniPortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}}}
	ns := w.containers[0].Path()
	for b.Loop() {
		if r := pluginRun(b, w.host, "ADD", "bench", ns, "eth0", conf); r.code != 0 {
			b.Fatalf("ADD: %s%s", r.stdout, r.stderr)
		}
		if r := pluginRun(b, w.host, "DEL", "bench", ns, "eth0", conf); r.code != 0 {
			b.Fatalf("DEL: %s%s", r.stdout, r.stderr)
		}
	}
}
