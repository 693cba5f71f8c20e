package main

import (
	"bytes"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/control"
)

// stateWorld is a world whose agent made two networks, three endpoints
// and published ports, then stopped: the datapath runs on without it.
type stateWorld struct {
	*world
	hostTCP string
	// before is what the agent showed before it stopped.
	before snapshot
}

func newStateWorld(t *testing.T) *stateWorld {
	w := newWorld(t, 3)
	w.startAgent()
	w.ok("network", "create", "neta", "--subnet", "10.71.0.0/24")
	w.ok("network", "create", "netb", "--subnet", "10.72.0.0/24", "--icc=false")
	w.ok("endpoint", "attach", "neta", "c1", "--netns", w.containers[0].Path())
	w.ok("endpoint", "attach", "neta", "c2", "--netns", w.containers[1].Path())
	w.ok("endpoint", "attach", "netb", "c3", "--netns", w.containers[2].Path())
	w.containers[0].ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80", "127.0.0.1:9090:80")
	w.ok("port", "publish", "c3", "9000-9002:7000-7002/udp")
	sw := &stateWorld{world: w, hostTCP: netip.AddrPortFrom(w.hostIP, 8080).String()}
	sw.expectTraffic(t)
	sw.before = w.snapshot()
	w.agent.stop(syscall.SIGTERM)
	return sw
}

// expectTraffic dials the published port from outside.
func (w *stateWorld) expectTraffic(t *testing.T) {
	t.Helper()
	res, err := w.outside.Dial("tcp", w.hostTCP)
	expectEcho(t, res, err, w.outsideIP, w.hostTCP)
}

// kernel is what a refused agent must leave as it was: the host's
// interfaces and addresses and the bindings map.
func (w *stateWorld) kernel(t *testing.T) (links string, bindings []string) {
	t.Helper()
	return interfaces(w.host.IP(t, "-br", "addr")), w.bindings()
}

// agentRefuses starts the agent and wants it to exit at once with one
// line naming the state file, saying want, and what to do.
func (w *stateWorld) agentRefuses(t *testing.T, want string) string {
	t.Helper()
	links, bindings := w.kernel(t)
	if n := strings.Count(links, "pontoon") + strings.Count(links, "ptv") + strings.Count(links, "pt-"); n < 5 {
		t.Fatalf("the world has too few of Pontoon's interfaces to notice a prune:\n%s", links)
	}
	cmd := w.agentCmd()
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A hang guard: an agent that starts never exits.
	guard := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	out := buf.String()
	if !guard.Stop() {
		t.Fatalf("the agent started on a damaged state file (killed after 60 s):\n%s", out)
	}
	if err == nil {
		t.Fatalf("the agent exited 0 on a damaged state file:\n%s", out)
	}
	msg := strings.TrimSpace(out)
	path := control.StatePath(w.stateDir)
	switch {
	case strings.Contains(msg, "\n"):
		t.Errorf("refusal is not one line:\n%s", msg)
	case !strings.Contains(msg, path), !strings.Contains(msg, want), !strings.Contains(msg, "pontoon state rebuild"):
		t.Errorf("refusal %q: want the file %s, %q and 'pontoon state rebuild'", msg, path, want)
	}
	afterLinks, afterBindings := w.kernel(t)
	if afterLinks != links {
		t.Errorf("the refused agent changed interfaces:\nbefore %s\nafter  %s", links, afterLinks)
	}
	if !slices.Equal(afterBindings, bindings) {
		t.Errorf("the refused agent changed the bindings map:\nbefore %v\nafter  %v", bindings, afterBindings)
	}
	w.expectTraffic(t)
	return msg
}

func TestStateFileEmptyRefused(t *testing.T) {
	w := newStateWorld(t)
	path := control.StatePath(w.stateDir)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	w.agentRefuses(t, "is empty (0 bytes)")
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("the refused agent changed the state file: %v, %v", fi, err)
	}
}

// TestStateFileTruncatedRefused: the refusal offers the last good copy,
// and starting on it brings back what the agent had.
func TestStateFileTruncatedRefused(t *testing.T) {
	w := newStateWorld(t)
	path := control.StatePath(w.stateDir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt grows the file ahead of its pages, sparse: half of what is
	// allocated on disk cuts into the pages, half of the length may not.
	used := fi.Sys().(*syscall.Stat_t).Blocks * 512
	if err := os.Truncate(path, max(used/2/4096*4096, 8192)); err != nil {
		t.Fatal(err)
	}
	msg := w.agentRefuses(t, "is truncated")
	restore := "cp " + control.LastGoodPath(path) + " " + path
	if !strings.Contains(msg, restore) {
		t.Fatalf("refusal %q does not offer %q", msg, restore)
	}
	w.host.Exec(t, "sh", "-c", restore)
	w.startAgent()
	sameSnapshot(t, "a restart on the last good copy", w.before, w.snapshot())
	w.expectTraffic(t)
}

func TestStateFileMissingWithWorldRefused(t *testing.T) {
	w := newStateWorld(t)
	path := control.StatePath(w.stateDir)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.agentRefuses(t, "is missing, but a Pontoon datapath is here")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the refused agent created a state file: %v", err)
	}
}

// TestStateRebuild: random bytes over the state file's data pages; the
// agent refuses; `pontoon state rebuild` writes one from the interfaces
// and pinned maps; the agent starts on it with the same networks,
// endpoints and mappings, prunes nothing, and the published port carries
// traffic.
func TestStateRebuild(t *testing.T) {
	w := newStateWorld(t)
	path := control.StatePath(w.stateDir)
	// Without a last good copy, rebuilding is the only way out.
	os.Remove(control.LastGoodPath(path))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := uint32(2463534242)
	for i := 2 * 4096; i < len(data); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		data[i] = byte(x)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	w.agentRefuses(t, "corrupt")

	r := w.inHost("state", "rebuild", "--state-dir", w.stateDir, "--bpffs", w.pins)
	if r.code != 0 {
		t.Fatalf("state rebuild: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("state rebuild:\n%s", r.stdout)
	for _, want := range []string{"2 networks, 3 endpoints, 3 port mappings", "moved the old state file aside to " + path + ".corrupt-"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("state rebuild output lacks %q:\n%s", want, r.stdout)
		}
	}
	w.startAgent()
	sameSnapshot(t, "a rebuild", w.before, w.snapshot())
	w.expectTraffic(t)

	// With the agent running, rebuild refuses and changes nothing.
	r = w.inHost("state", "rebuild", "--state-dir", w.stateDir, "--bpffs", w.pins)
	if r.code == 0 || !strings.Contains(r.stderr, "stop it first") {
		t.Errorf("state rebuild under a running agent: exit %d: %s", r.code, r.stderr)
	}
}

// TestRequestPanicContained: a bbolt panic inside a publish (injected
// through the seam) answers that request with one line, leaves the agent
// answering (no lock held), unhealthy in status, refusing changes, its
// watchdog silent, and SIGTERM still stops it.
func TestRequestPanicContained(t *testing.T) {
	w := newWorld(t, 1)
	w.agentEnv = []string{"PONTOON_TEST_PANIC_BUCKET=agent.ports", "WATCHDOG_USEC=2000000"}
	w.startAgent()
	w.waitNotify("WATCHDOG=1")
	w.ok("network", "create", "net", "--subnet", "10.73.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())

	r := w.pt("port", "publish", "c1", "8080:80")
	if r.code == 0 {
		t.Fatal("publish succeeded through an injected panic")
	}
	if msg := strings.TrimSpace(r.stderr); strings.Contains(msg, "\n") || strings.Contains(msg, "goroutine") || !strings.Contains(msg, "restart") {
		t.Errorf("publish through a panic: want one line saying to restart, got:\n%s", r.stderr)
	}
	if got := w.bindings(); len(got) != 0 {
		t.Errorf("the failed publish left bindings: %v", got)
	}
	status := w.ok("status")
	if !strings.Contains(status, "unhealthy") {
		t.Errorf("status does not say the agent is unhealthy:\n%s", status)
	}
	r = w.pt("network", "create", "other", "--subnet", "10.74.0.0/24")
	if r.code == 0 || !strings.Contains(r.stderr, "unhealthy") {
		t.Errorf("network create on an unhealthy agent: exit %d: %s", r.code, r.stderr)
	}
	// After the STATUS notice, at most one ping that was on its way.
	buf := make([]byte, 4096)
	w.notify.SetReadDeadline(time.Now().Add(60 * time.Second))
	for seen := false; !seen; {
		n, err := w.notify.Read(buf)
		if err != nil {
			t.Fatalf("no STATUS=unhealthy notification: %v", err)
		}
		seen = strings.Contains(string(buf[:n]), "STATUS=unhealthy: ")
	}
	pings := 0
	w.notify.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		n, err := w.notify.Read(buf)
		if err != nil {
			break
		}
		if strings.Contains(string(buf[:n]), "WATCHDOG=1") {
			pings++
		}
	}
	if pings > 1 {
		t.Errorf("the unhealthy agent pinged the watchdog %d times in 3 s (it pings every second while healthy)", pings)
	}

	w.agent.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.agent.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("SIGTERM did not stop the unhealthy agent\n%s", w.agentLog())
	}
	if log := w.agentLog(); strings.Contains(log, "goroutine ") {
		t.Errorf("a Go stack reached the agent's log:\n%s", log)
	}
}
