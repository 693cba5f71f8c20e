package main

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/loader/testenv"
)

// spare is an empty namespace with its own cgroup and not yet existing
// state, socket and pin paths: a second agent or a cleanup run there
// shares with the world's agent only what a test hands it.
type spare struct {
	ns                     *testenv.Netns
	stateDir, socket, pins string
	cgroup                 string
}

func newSpare(t *testing.T) *spare {
	t.Helper()
	return &spare{
		ns:       testenv.NewNetns(t, "ppq"+testenv.UniqueID(t)),
		stateDir: filepath.Join(t.TempDir(), "state"),
		socket:   filepath.Join(t.TempDir(), "run", "pontoon.sock"),
		pins:     testenv.PinDir(t),
		cgroup:   testenv.Cgroup(t),
	}
}

// pontoon runs the CLI in ns. An agent that starts instead of refusing
// is killed after a minute (a hang guard, not a timing assertion).
func pontoonIn(t *testing.T, ns *testenv.Netns, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := runCmd(t, nil, exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path(), "--", bin}, args...)...))
	if ctx.Err() != nil {
		t.Errorf("pontoon %s did not exit: it ran instead of refusing\n%s", strings.Join(args, " "), r.stderr)
	}
	return r
}

// untouched fails when the refused command made any of paths.
func untouched(t *testing.T, what string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left %s behind (%v)", what, p, err)
		}
	}
}

// servingWorld is a running agent with one network, one endpoint and a
// published port that carries traffic.
func servingWorld(t *testing.T) (w *world, hostTCP string) {
	w = newWorld(t, 1)
	w.startAgent()
	c1 := w.containers[0]
	w.ok("network", "create", "net", "--subnet", "10.93.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	c1.ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80")
	hostTCP = netip.AddrPortFrom(w.hostIP, 8080).String()
	res, err := w.outside.Dial("tcp", hostTCP)
	expectEcho(t, res, err, w.outsideIP, hostTCP)
	return w, hostTCP
}

// pinList is every entry under the pin directory, relative to it.
func (w *world) pinList() []string {
	w.t.Helper()
	var out []string
	err := filepath.WalkDir(w.pins, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(w.pins, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// intact checks the world's agent kept its state, bindings, interfaces,
// routes and pins, still answers, and its published port carries traffic.
func (w *world) intact(t *testing.T, what string, before snapshot, pins []string, hostTCP string) {
	t.Helper()
	sameSnapshot(t, what, before, w.snapshot())
	if after := w.pinList(); !slices.Equal(pins, after) {
		t.Errorf("%s changed the pins:\nbefore %v\nafter  %v", what, pins, after)
	}
	if _, err := os.Stat(w.socket); err != nil {
		t.Errorf("%s removed the agent's socket: %v", what, err)
	}
	res, err := w.outside.Dial("tcp", hostTCP)
	expectEcho(t, res, err, w.outsideIP, hostTCP)
	select {
	case <-w.agent.done:
		t.Fatalf("%s: the agent exited: %v\n%s", what, w.agent.err, w.agentLog())
	default:
	}
}

// TestSecondAgentRefused: an agent sharing the running agent's socket,
// pin directory, state directory, cgroup or network namespace refuses
// before touching anything: one line naming the running agent's pid, a
// non-zero exit, nothing of its own made, and the running agent's
// interfaces, pins, bindings and published port as they were.
func TestSecondAgentRefused(t *testing.T) {
	w, hostTCP := servingWorld(t)
	pid := strconv.Itoa(w.agent.cmd.Process.Pid)
	before, pins := w.snapshot(), w.pinList()

	for _, c := range []struct {
		name string
		// share gives the second agent one thing of the first's.
		share     func(sp *spare)
		inHostNS  bool
		wantHolds string
	}{
		{"SameSocket", func(sp *spare) { sp.socket = w.socket }, false, "serves " + w.socket},
		// The case the issue found: another --state-dir, the same
		// socket, in the agent's namespace, where no flag makes room.
		{"SameSocketSameNetns", func(sp *spare) { sp.socket = w.socket }, true, "runs in this network namespace"},
		{"SamePins", func(sp *spare) { sp.pins = w.pins }, false, "holds the pin directory " + w.pins},
		{"SameStateDir", func(sp *spare) { sp.stateDir = w.stateDir }, false, "holds the state directory " + w.stateDir},
		{"SameCgroup", func(sp *spare) { sp.cgroup = w.cgroup }, false, "holds the cgroup " + w.cgroup},
		{"SameNetns", func(sp *spare) {}, true, "runs in this network namespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp := newSpare(t)
			c.share(sp)
			ns := sp.ns
			if c.inHostNS {
				ns = w.host
			}
			r := pontoonIn(t, ns, "agent", "--state-dir", sp.stateDir, "--socket", sp.socket,
				"--bpffs", sp.pins, "--cgroup", sp.cgroup)
			expectOneLineError(t, r, "another agent (pid "+pid+") "+c.wantHolds)
			if !strings.Contains(r.stderr, "stop it first") {
				t.Errorf("the refusal does not say what to do: %s", r.stderr)
			}
			// Its own paths were not made: no state, socket or pins.
			var own []string
			for _, p := range []string{sp.stateDir, filepath.Dir(sp.socket), sp.pins} {
				if p != w.stateDir && p != filepath.Dir(w.socket) && p != w.pins {
					own = append(own, p)
				}
			}
			untouched(t, "the refused agent", own...)
			w.intact(t, "a refused second agent", before, pins, hostTCP)
		})
	}
}

// TestCleanupRefusesRunningAgentAnyStateDir: cleanup refuses, changing
// nothing, while an agent runs, whatever --state-dir says: found by its
// pins, its socket, its state directory or its namespace.
func TestCleanupRefusesRunningAgentAnyStateDir(t *testing.T) {
	w, hostTCP := servingWorld(t)
	pid := strconv.Itoa(w.agent.cmd.Process.Pid)
	before, pins := w.snapshot(), w.pinList()
	nowhere := filepath.Join(t.TempDir(), "nonexistent")
	sp := newSpare(t)

	for _, c := range []struct {
		name                     string
		ns                       *testenv.Netns
		stateDir, pinDir, socket string
		wantHolds                string
	}{
		{"its pins, in its namespace", w.host, nowhere, w.pins, sp.socket, "holds the pin directory " + w.pins},
		{"its pins, another namespace", sp.ns, nowhere, w.pins, sp.socket, "holds the pin directory " + w.pins},
		{"its socket, another namespace", sp.ns, nowhere, sp.pins, w.socket, "serves " + w.socket},
		{"its state directory, another namespace", sp.ns, w.stateDir, sp.pins, sp.socket, "holds the state directory " + w.stateDir},
		{"nothing of it, in its namespace", w.host, nowhere, sp.pins, sp.socket, "runs in this network namespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := pontoonIn(t, c.ns, "cleanup", "--state-dir", c.stateDir, "--bpffs", c.pinDir, "--socket", c.socket)
			expectOneLineError(t, r, "an agent is running (pid "+pid+") — stop it first")
			if !strings.Contains(r.stderr, c.wantHolds) {
				t.Errorf("the refusal does not say why (%q): %s", c.wantHolds, r.stderr)
			}
			untouched(t, "the refused cleanup", nowhere, sp.pins, filepath.Dir(sp.socket))
			w.intact(t, "a refused cleanup", before, pins, hostTCP)
		})
	}
}

// TestCleanupLeavesForeignPins: cleanup removes the pins a datapath makes
// and leaves, and lists, anything else in the pin directory.
func TestCleanupLeavesForeignPins(t *testing.T) {
	w, _ := servingWorld(t)
	w.agent.stop(syscall.SIGTERM)
	own := w.pinList()

	var (
		foreign []string
		ids     []ebpf.MapID
	)
	pinForeign := func(name string) {
		t.Helper()
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "other_tool", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		path := filepath.Join(w.pins, name)
		if err := m.Pin(path); err != nil {
			t.Fatal(err)
		}
		// Runs before the pin directory's own cleanup.
		t.Cleanup(func() { os.Remove(path) })
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		foreign, ids = append(foreign, name), append(ids, id)
	}
	cleanup := func() string {
		t.Helper()
		r := pontoonIn(t, w.host, "cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins, "--socket", w.socket)
		if r.code != 0 {
			t.Fatalf("cleanup: exit %d: %s", r.code, r.stderr)
		}
		t.Logf("cleanup:\n%s", r.stdout)
		return r.stdout
	}
	// Another program's pins next to Pontoon's: a map at the top, and one
	// in links/ named nothing like Pontoon's links.
	pinForeign("foreign_counters")
	pinForeign(filepath.Join("links", "other-tool"))
	out := cleanup()
	left := w.pinList()
	for _, p := range own {
		if p != "." && p != "links" && slices.Contains(left, p) {
			t.Errorf("cleanup left Pontoon's pin %s", p)
		}
	}
	if len(own) < 10 {
		t.Errorf("the agent pinned only %v: nothing to prove cleanup removed", own)
	}
	if links := w.host.IP(t, "-br", "link"); strings.Contains(links, "pt-net") {
		t.Errorf("cleanup left the agent's bridge:\n%s", links)
	}
	// A pin that only shares the name of one of Pontoon's maps (as in a
	// directory other programs pin in too) is not Pontoon's either.
	pinForeign("config")
	out += cleanup()

	for i, name := range foreign {
		m, err := ebpf.LoadPinnedMap(filepath.Join(w.pins, name), nil)
		if err != nil {
			t.Errorf("cleanup removed the foreign pin %s: %v", name, err)
			continue
		}
		info, err := m.Info()
		m.Close()
		if id, _ := info.ID(); err != nil || id != ids[i] {
			t.Errorf("the pin %s is no longer the foreign map (id %d, want %d)", name, id, ids[i])
		}
		if !strings.Contains(out, "left "+name+" in "+w.pins) {
			t.Errorf("cleanup does not say it left %s", name)
		}
	}
}
