package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/control"
)

// TestBadInput: every bad request gets one line naming the problem, a
// non-zero exit, and leaves state, maps and interfaces as they were.
func TestBadInput(t *testing.T) {
	w := newWorld(t, 2)
	w.startAgent()
	c1, spare := w.containers[0], w.containers[1]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.ok("port", "publish", "c1", "8080:80", "5353:53/udp")

	// The agent's own namespace, by every name it has: the world's path,
	// /proc, --pid, and a bind mount elsewhere. Attaching it would give
	// the host an eth0 and a default route via the bridge.
	agentPid := strconv.Itoa(w.agent.cmd.Process.Pid)
	bound := bindMountNetns(t, "/proc/"+agentPid+"/ns/net")
	regular := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"invalid CIDR", []string{"network", "create", "x", "--subnet", "10.0.0.0/33"}, "invalid CIDR"},
		{"host bits set", []string{"network", "create", "x", "--subnet", "10.0.0.1/24"}, "host bits are set"},
		{"overlapping subnet", []string{"network", "create", "x", "--subnet", "10.77.0.128/25"}, "in use by network \"net\""},
		{"duplicate network", []string{"network", "create", "net", "--subnet", "10.99.0.0/24"}, "already exists"},
		{"gateway outside subnet", []string{"network", "create", "x", "--subnet", "10.99.0.0/24", "--gateway", "10.98.0.1"}, "outside subnet"},
		{"invalid gateway", []string{"network", "create", "x", "--subnet", "10.99.0.0/24", "--gateway", "nope"}, "parse gateway"},
		{"invalid network name", []string{"network", "create", "a/b", "--subnet", "10.99.0.0/24"}, "network name"},
		{"invalid MTU", []string{"network", "create", "x", "--mtu", "10"}, "MTU"},
		{"non-numeric MTU", []string{"network", "create", "x", "--mtu", "abc"}, "invalid argument"},
		{"bridge name too long", []string{"network", "create", "x", "--bridge", "averyverylongbridgename"}, "bridge name"},
		{"IPv6 subnet wider than a link", []string{"network", "create", "x", "--subnet", "fd00:1::/48"}, "subnet fd00:1::/48 is wider than a /64"},
		{"routed with masquerade", []string{"network", "create", "x", "--subnet", "10.99.0.0/24", "--routed", "--masquerade=true"}, "--routed and --masquerade=true exclude each other"},
		{"unknown network (inspect)", []string{"network", "inspect", "nope"}, "no network nope"},
		{"unknown network (rm)", []string{"network", "rm", "nope"}, "no network nope"},
		{"rm with endpoints", []string{"network", "rm", "net"}, "endpoints attached"},

		{"unknown network (attach)", []string{"endpoint", "attach", "nope", "e", "--netns", spare.Path()}, "no network nope"},
		{"duplicate endpoint", []string{"endpoint", "attach", "net", "c1", "--netns", spare.Path()}, "already exists"},
		{"missing netns", []string{"endpoint", "attach", "net", "e", "--netns", "/run/netns/pontoon-missing"}, "network namespace /run/netns/pontoon-missing"},
		{"not a netns", []string{"endpoint", "attach", "net", "e", "--netns", "/etc/hostname"}, "not a network namespace"},
		{"a regular file as netns", []string{"endpoint", "attach", "net", "e", "--netns", regular}, regular + " is not a network namespace"},
		{"a directory as netns", []string{"endpoint", "attach", "net", "e", "--netns", t.TempDir()}, "is not a network namespace"},
		{"another kind of namespace", []string{"endpoint", "attach", "net", "e", "--netns", "/proc/self/ns/uts"}, "is a uts namespace, not a network namespace"},
		{"the agent's netns by path", []string{"endpoint", "attach", "net", "e", "--netns", w.host.Path()}, "is the agent's own network namespace"},
		{"the agent's netns by /proc", []string{"endpoint", "attach", "net", "e", "--netns", "/proc/" + agentPid + "/ns/net"}, "is the agent's own network namespace"},
		{"the agent's netns by --pid", []string{"endpoint", "attach", "net", "e", "--pid", agentPid}, "the namespace of --pid " + agentPid + " is the agent's own"},
		{"the agent's netns bind-mounted", []string{"endpoint", "attach", "net", "e", "--netns", bound}, "is the agent's own network namespace"},
		{"negative pid", []string{"endpoint", "attach", "net", "e", "--pid", "-1"}, "--pid -1"},
		{"no netns given", []string{"endpoint", "attach", "net", "e"}, "--netns PATH or --pid PID"},
		{"netns and pid", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--pid", "1"}, "not both"},
		{"netns attached twice", []string{"endpoint", "attach", "net", "e", "--netns", c1.Path()}, "already attached"},
		{"invalid IP", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--ip", "10.77.0.x"}, "invalid IP"},
		{"IP outside subnet", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--ip", "10.99.0.5"}, "10.99.0.5"},
		{"address taken", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--ip", "10.77.0.2"}, "10.77.0.2"},
		{"gateway address", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--ip", "10.77.0.1"}, "10.77.0.1"},
		{"invalid MAC", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--mac", "02:42:zz"}, "invalid MAC"},
		{"multicast MAC", []string{"endpoint", "attach", "net", "e", "--netns", spare.Path(), "--mac", "01:00:5e:00:00:01"}, "multicast"},
		{"unknown endpoint (inspect)", []string{"endpoint", "inspect", "nope"}, "no endpoint nope"},
		{"unknown endpoint (detach)", []string{"endpoint", "detach", "nope"}, "no endpoint nope"},

		{"invalid spec", []string{"port", "publish", "c1", "80:80:80:80"}, "too many colons"},
		{"invalid port", []string{"port", "publish", "c1", "70000"}, "out of range"},
		{"invalid protocol", []string{"port", "publish", "c1", "80/icmp"}, "want tcp or udp"},
		{"sctp lacks datapath support", []string{"port", "publish", "c1", "80/sctp"}, "sctp is not translated"},
		{"range length mismatch", []string{"port", "publish", "c1", "8000-8002:80-81"}, "same length"},
		{"host port published", []string{"port", "publish", "c1", "8080:81"}, "in use"},
		{"wildcard conflict", []string{"port", "publish", "c1", "127.0.0.1:8080:81"}, "in use"},
		{"host IP not local", []string{"port", "publish", "c1", "192.0.2.1:80:80"}, "not an address of this host"},
		{"IPv6 host IP", []string{"port", "publish", "c1", "[::1]:80:80"}, "IPv6"},
		{"all or nothing", []string{"port", "publish", "c1", "9000:80", "8080:80"}, "8080"},
		{"unknown endpoint (publish)", []string{"port", "publish", "nope", "80"}, "no endpoint nope"},
		{"no spec", []string{"port", "publish", "c1"}, "at least one port spec"},
		{"unpublish nothing", []string{"port", "unpublish", "c1", "99"}, "no published port matching"},
		{"unknown endpoint (ls)", []string{"port", "ls", "nope"}, "no endpoint nope"},
		{"bad output format", []string{"status", "-o", "yaml"}, "unknown output format"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.snapshot()
			r := w.pt(c.args...)
			expectOneLineError(t, r, c.want)
			sameSnapshot(t, strings.Join(c.args, " "), before, w.snapshot())
		})
	}

	t.Run("the agent refuses without the CLI's checks", func(t *testing.T) {
		client := control.NewClient(w.socket)
		for _, req := range []control.EndpointAttach{
			{Network: "net", Name: "e", Netns: regular},
			{Network: "net", Name: "e", Netns: "/proc/self/ns/uts"}, // the agent's own /proc/self
			{Network: "net", Name: "e", Netns: "/proc/self/ns/net"},
			{Network: "net", Name: "e", Netns: bound},
			{Network: "net", Name: "e", PID: w.agent.cmd.Process.Pid},
		} {
			before := w.snapshot()
			_, err := client.Attach(req)
			if err == nil || strings.Contains(err.Error(), "\n") ||
				!(strings.Contains(err.Error(), "not a network namespace") || strings.Contains(err.Error(), "the agent's own network namespace")) {
				t.Errorf("attach %+v: %v", req, err)
			}
			sameSnapshot(t, fmt.Sprintf("attach %+v", req), before, w.snapshot())
		}
	})

	t.Run("routed with masquerade, through the API", func(t *testing.T) {
		yes := true
		_, err := control.NewClient(w.socket).CreateNetwork(control.NetworkCreate{Name: "x", Subnet: "10.99.0.0/24", Routed: true, Masquerade: &yes})
		if err == nil || !strings.Contains(err.Error(), "exclude each other") {
			t.Errorf("create: %v", err)
		}
	})

	t.Run("agent not running", func(t *testing.T) {
		r := run(t, nil, "--socket", filepath.Join(t.TempDir(), "none.sock"), "network", "ls")
		expectOneLineError(t, r, "agent is not running")
		if !strings.Contains(r.stderr, "pontoon agent") {
			t.Errorf("does not say how to start the agent: %q", r.stderr)
		}
		t.Setenv("PONTOON_SOCKET", filepath.Join(t.TempDir(), "env.sock"))
		r = run(t, nil, "status")
		expectOneLineError(t, r, "env.sock")
	})

	t.Run("socket permission denied", func(t *testing.T) {
		// The socket is 0660 root: nobody may not connect.
		if err := os.Chmod(filepath.Dir(w.socket), 0o755); err != nil {
			t.Fatal(err)
		}
		r := run(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "--socket", w.socket, "network", "ls")
		expectOneLineError(t, r, "permission denied")
	})

	t.Run("a second agent on the same state", func(t *testing.T) {
		r := w.inHost("agent", "--state-dir", w.stateDir, "--socket", filepath.Join(t.TempDir(), "s.sock"),
			"--bpffs", w.pins, "--cgroup", w.cgroup, "--uplink", w.uplink)
		expectOneLineError(t, r, "another agent (pid "+agentPid+") runs in this network namespace")
	})

	// Agents refused for their flags run apart from the world's agent,
	// which any shared namespace, pins or cgroup would refuse them for.
	t.Run("a pin directory that is not on bpffs", func(t *testing.T) {
		sp := newSpare(t)
		r := pontoonIn(t, sp.ns, "agent", "--state-dir", sp.stateDir, "--socket", sp.socket,
			"--bpffs", filepath.Join(t.TempDir(), "pins"), "--cgroup", sp.cgroup)
		expectOneLineError(t, r, "not on a bpffs")
	})

	t.Run("bad --snat-ports", func(t *testing.T) {
		// The host namespace has Linux's defaults: ephemeral ports
		// 32768-60999, published ones 61000-65535.
		for _, c := range []struct{ ports, want string }{
			{"abc", "invalid --snat-ports \"abc\""},
			{"2000", "give FIRST-LAST"},
			{"3000-2000", "invalid --snat-ports"},
			{"30000-40000", "overlaps the kernel's ephemeral ports (32768-40000"},
			{"62000-63000", "the range published ports are allocated from"},
		} {
			sp := newSpare(t)
			r := pontoonIn(t, sp.ns, "agent", "--state-dir", sp.stateDir, "--socket", sp.socket,
				"--bpffs", sp.pins, "--cgroup", sp.cgroup, "--snat-ports", c.ports)
			expectOneLineError(t, r, c.want)
		}
	})

	t.Run("cleanup while the agent runs", func(t *testing.T) {
		before := w.snapshot()
		r := w.inHost("cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins)
		expectOneLineError(t, r, "an agent is running (pid "+agentPid+") — stop it first")
		sameSnapshot(t, "cleanup", before, w.snapshot())
		if _, err := os.Stat(filepath.Join(w.pins, "bindings")); err != nil {
			t.Errorf("the refused cleanup touched the pins: %v", err)
		}
	})
}

// bindMountNetns bind-mounts a namespace file onto a new file, as
// `ip netns add` does, and unmounts it at cleanup.
func bindMountNetns(t *testing.T, ns string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns-bound")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(ns, path, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount %s on %s: %v", ns, path, err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	return path
}

func expectOneLineError(t *testing.T, r result, want string) {
	t.Helper()
	msg := strings.TrimSpace(r.stderr)
	t.Logf("exit %d: %s", r.code, msg)
	switch {
	case r.code == 0:
		t.Errorf("exit 0 (stdout %q), want a failure", r.stdout)
	case strings.Contains(msg, "\n"):
		t.Errorf("error is not one line:\n%s", msg)
	case !strings.Contains(msg, want):
		t.Errorf("error %q does not mention %q", msg, want)
	case msg == "":
		t.Error("no error message")
	}
}
