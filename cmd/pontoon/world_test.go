package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// bin is the pontoon binary under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	testenv.MaybeRunHelper()
	dir, err := os.MkdirTemp("", "pontoon-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by everyone: one test runs the CLI as nobody.
	os.Chmod(dir, 0o755)
	bin = filepath.Join(dir, "pontoon")
	build := []string{"build", "-o", bin}
	if os.Getenv("PONTOON_TEST_RACE") != "" {
		// The agent under the race detector: PONTOON_TEST_RACE=1 go test ./cmd/pontoon
		build = append(build, "-race")
	}
	if out, err := exec.Command("go", append(build, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pontoon: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is a host namespace (where the agent runs) with an uplink to an
// outside namespace, and bare container namespaces the agent attaches.
type world struct {
	t                 testing.TB
	id                string
	host, outside     *testenv.Netns
	containers        []*testenv.Netns
	uplink            string
	hostIP, outsideIP netip.Addr
	pins, cgroup      string
	stateDir, socket  string
	notify            *net.UnixConn
	agent             *agent
	// agentEnv is added to the agent's environment.
	agentEnv []string
	// defaultUplinks leaves out --uplink: every way out is an uplink.
	defaultUplinks bool
}

func newWorld(t testing.TB, containers int) *world {
	t.Helper()
	testenv.RequirePrivileges(t)
	id := testenv.UniqueID(t)
	w := &world{
		t: t, id: id,
		uplink:    "ppu" + id,
		hostIP:    netip.MustParseAddr("198.19.0.1"),
		outsideIP: netip.MustParseAddr("198.19.0.2"),
		pins:      testenv.PinDir(t),
		cgroup:    testenv.Cgroup(t),
		stateDir:  t.TempDir(),
	}
	sockDir := t.TempDir()
	w.socket = filepath.Join(sockDir, "pontoon.sock")
	w.host = testenv.NewNetns(t, "pph"+id)
	w.outside = testenv.NewNetns(t, "ppo"+id)
	testenv.Veth(t, w.host, w.uplink, w.outside, "eth0")
	w.host.IP(t, "addr", "add", w.hostIP.String()+"/24", "dev", w.uplink)
	w.outside.IP(t, "addr", "add", w.outsideIP.String()+"/24", "dev", "eth0")
	for i := range containers {
		w.containers = append(w.containers, testenv.NewNetns(t, fmt.Sprintf("pp%d%s", i, id)))
	}

	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	w.notify = c
	// Registered after the namespaces, so it runs before they go.
	t.Cleanup(func() {
		if w.agent != nil {
			w.agent.stop(syscall.SIGTERM)
			if log := w.agentLog(); strings.Contains(log, "DATA RACE") || strings.Contains(log, "panic:") {
				t.Errorf("agent log:\n%s", log)
			}
		}
		c.Close()
	})
	return w
}

// agent is a running `pontoon agent` in the host namespace.
type agent struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (w *world) startAgent(extra ...string) {
	w.t.Helper()
	logFile := filepath.Join(w.t.TempDir(), "agent.log")
	f, err := os.Create(logFile)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	cmd := w.agentCmd(extra...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	a := &agent{cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	w.agent = a
	w.waitNotify("READY=1")
}

// agentCmd is `pontoon agent` in the host namespace with the world's
// state dir, socket, pins, cgroup and uplink.
func (w *world) agentCmd(extra ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", "--net="+w.host.Path(), "--", bin, "agent",
		"--state-dir", w.stateDir, "--socket", w.socket, "--bpffs", w.pins, "--cgroup", w.cgroup)
	if !w.defaultUplinks {
		cmd.Args = append(cmd.Args, "--uplink", w.uplink)
	}
	// PONTOON_TEST_XDP=auto|native|generic runs every world's agent with
	// XDP on its uplinks (tests that set --xdp themselves keep theirs).
	if mode := os.Getenv("PONTOON_TEST_XDP"); mode != "" && !slices.Contains(extra, "--xdp") {
		cmd.Args = append(cmd.Args, "--xdp", mode)
	}
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+w.notify.LocalAddr().String())
	cmd.Env = append(cmd.Env, w.agentEnv...)
	return cmd
}

// waitNotify reads notifications until one carries want.
func (w *world) waitNotify(want string) {
	w.t.Helper()
	buf := make([]byte, 4096)
	// The deadline is a hang guard, not a timing assertion.
	w.notify.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		n, err := w.notify.Read(buf)
		if err != nil {
			w.t.Fatalf("waiting for %s from the agent: %v\nagent log:\n%s", want, err, w.agentLog())
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == want {
				return
			}
		}
	}
}

func (w *world) agentLog() string {
	if w.agent == nil {
		return ""
	}
	b, _ := os.ReadFile(w.agent.log)
	return string(b)
}

// stop signals the agent and waits for it to exit.
func (a *agent) stop(sig syscall.Signal) {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// result is one CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// pt runs the CLI against the world's agent.
func (w *world) pt(args ...string) result {
	w.t.Helper()
	return run(w.t, nil, append([]string{"--socket", w.socket}, args...)...)
}

func run(t testing.TB, cred *syscall.Credential, args ...string) result {
	t.Helper()
	return runCmd(t, cred, exec.Command(bin, args...))
}

// inHost runs pontoon in the host namespace: agents and cleanup act on
// the namespace they run in, and must never act on the real host's.
func (w *world) inHost(args ...string) result {
	w.t.Helper()
	return runCmd(w.t, nil, exec.Command("nsenter", append([]string{"--net=" + w.host.Path(), "--", bin}, args...)...))
}

func runCmd(t testing.TB, cred *syscall.Credential, cmd *exec.Cmd) result {
	t.Helper()
	args := cmd.Args
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run pontoon %v: %v", args, err)
	}
	return r
}

// ok runs the CLI and fails the test unless it succeeds.
func (w *world) ok(args ...string) string {
	w.t.Helper()
	r := w.pt(args...)
	if r.code != 0 {
		w.t.Fatalf("pontoon %s: exit %d: %s\nagent log:\n%s", strings.Join(args, " "), r.code, r.stderr, w.agentLog())
	}
	return r.stdout
}

// okJSON runs the CLI with -o json and decodes the output.
func (w *world) okJSON(into any, args ...string) {
	w.t.Helper()
	out := w.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), into); err != nil {
		w.t.Fatalf("pontoon %s: output %q: %v", strings.Join(args, " "), out, err)
	}
}

// snapshot is everything a failed command must leave as it was: the
// agent's view, the bindings map, and the interfaces and IPv4 routes of
// every namespace.
type snapshot struct {
	networks, endpoints, ports string
	bindings                   []string
	links, routes              map[string]string
}

func (w *world) snapshot() snapshot {
	w.t.Helper()
	s := snapshot{
		networks:  w.ok("network", "ls", "-o", "json"),
		endpoints: w.ok("endpoint", "ls", "-o", "json"),
		ports:     w.mappingsWithoutTraffic(),
		bindings:  w.bindings(),
		links:     map[string]string{},
		routes:    map[string]string{},
	}
	for _, ns := range append([]*testenv.Netns{w.host}, w.containers...) {
		s.links[ns.Name] = interfaces(ns.IP(w.t, "-br", "addr"))
		// A bridge's routes say linkdown until a port is up.
		s.routes[ns.Name] = strings.ReplaceAll(ns.IP(w.t, "-4", "route", "show", "table", "all"), " linkdown", "")
	}
	return s
}

// mappingsWithoutTraffic is `port ls -o json` without the counters, which
// move with every packet: a snapshot is of state.
func (w *world) mappingsWithoutTraffic() string {
	w.t.Helper()
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "ls")
	for i := range ms {
		ms[i].Traffic = nil
	}
	b, err := json.MarshalIndent(ms, "", "  ")
	if err != nil {
		w.t.Fatal(err)
	}
	return string(b)
}

func (w *world) bindings() []string {
	w.t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(w.pins, "bindings"), nil)
	if err != nil {
		w.t.Fatal(err)
	}
	defer m.Close()
	all, err := maps.NewBindings(m).All()
	if err != nil {
		w.t.Fatal(err)
	}
	out := make([]string, len(all))
	for i, b := range all {
		out[i] = b.String()
	}
	slices.Sort(out)
	return out
}

func sameSnapshot(t *testing.T, what string, before, after snapshot) {
	t.Helper()
	if before.networks != after.networks || before.endpoints != after.endpoints || before.ports != after.ports {
		t.Errorf("%s changed the agent's state:\nbefore %s%s%s\nafter %s%s%s", what,
			before.networks, before.endpoints, before.ports, after.networks, after.endpoints, after.ports)
	}
	if !slices.Equal(before.bindings, after.bindings) {
		t.Errorf("%s changed the bindings map:\nbefore %v\nafter  %v", what, before.bindings, after.bindings)
	}
	for ns, l := range before.links {
		if after.links[ns] != l {
			t.Errorf("%s changed interfaces in %s:\nbefore %s\nafter  %s", what, ns, l, after.links[ns])
		}
	}
	for ns, r := range before.routes {
		if after.routes[ns] != r {
			t.Errorf("%s changed routes in %s:\nbefore %s\nafter  %s", what, ns, r, after.routes[ns])
		}
	}
}

// expectEcho checks a dial reached an echo server that saw wantSource.
func expectEcho(t *testing.T, res testenv.DialResult, err error, wantSource netip.Addr, dialled string) {
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
		t.Errorf("dial %s: server saw %s, want %s", dialled, seen.Addr(), wantSource)
	}
}

// interfaces drops the operational state from `ip -br addr`: a bridge
// goes from UNKNOWN to UP on its own once a port is up.
func interfaces(brief string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(brief), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			f = append(f[:1], f[2:]...)
		}
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	return b.String()
}
