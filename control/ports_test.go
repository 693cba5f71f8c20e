package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// failingWriter writes the first `after` bindings of a batch to the real
// map and then fails, as a batch update stopping half-way does; with
// failDelete the rollback's delete fails too.
type failingWriter struct {
	real       *maps.Bindings
	after      int
	failDelete bool
}

var (
	errInjectedPut    = errors.New("injected: map full")
	errInjectedDelete = errors.New("injected: delete refused")
)

func (f *failingWriter) PutBatch(bs []maps.Binding) error {
	if f.after >= len(bs) {
		return f.real.PutBatch(bs)
	}
	if err := f.real.PutBatch(bs[:f.after]); err != nil {
		return err
	}
	return errInjectedPut
}

func (f *failingWriter) DeleteBatch(keys []maps.BindingKey) error {
	if f.failDelete {
		return errInjectedDelete
	}
	return f.real.DeleteBatch(keys)
}

func newHashMap(t *testing.T, key, value any) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Type: ebpf.Hash, KeySize: uint32(binary.Size(key)), ValueSize: uint32(binary.Size(value)), MaxEntries: 256,
	})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// newDatapathMap creates the datapath's map name as the compiled object
// declares it.
func newDatapathMap(t testing.TB, name string) *ebpf.Map {
	t.Helper()
	spec, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[name].Copy()
	ms.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// testAgent is an agent with a state file, ipam, one endpoint and real
// (unpinned) bindings and hostaddrs maps, and nothing else: enough to
// publish ports.
func testAgent(t *testing.T) *Agent {
	t.Helper()
	return testAgentAt(t, filepath.Join(t.TempDir(), "pontoon.db"))
}

// testAgentAt is testAgent on the state file at path.
func testAgentAt(t *testing.T, path string) *Agent {
	t.Helper()
	return testAgentMaps(t, path, newHashMap(t, maps.BindingKey{}, maps.BindingValue{}), newHashMap(t, maps.HostAddrKey{}, maps.HostAddrValue{}))
}

// testAgentMaps is testAgentAt with the given bindings and hostaddrs maps.
func testAgentMaps(t testing.TB, path string, bindingsMap, hostAddrs *ebpf.Map) *Agent {
	t.Helper()
	bindings := maps.NewBindings(bindingsMap)
	store, err := ipam.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	a := &Agent{
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: store,
		dp: &loader.Datapath{Maps: loader.Maps{HostAddrs: hostAddrs,
			Prefilter: newDatapathMap(t, "prefilter_skip"), BindingFilter: newDatapathMap(t, "bfilter_skip"),
			BindingStats: newDatapathMap(t, "binding_stats"),
			AllowFrom:    newDatapathMap(t, "allow_from")}},
		bindings: bindings, writer: bindings,
	}
	if a.ipam, err = ipam.Open(store, ipam.Options{DynamicPorts: ipam.PortRange{First: 61000, Last: 65535}}); err != nil {
		t.Fatal(err)
	}
	if a.st, err = loadState(store); err != nil {
		t.Fatal(err)
	}
	a.st.endpoints["web"] = &Endpoint{Name: "web", Network: "net", IP: netip.MustParseAddr("10.88.0.2")}
	return a
}

// TestPublishRollback: a bindings write that fails half-way leaves no
// entry in the map, no record and no allocated port; a rollback that
// fails too is reported along with the failure.
func TestPublishRollback(t *testing.T) {
	specs := []string{"8080:80", "9000-9004:9000-9004/udp", "127.0.0.1::80"} // 7 bindings
	for _, c := range []struct {
		name       string
		after      int
		failDelete bool
	}{
		{"nothing written", 0, false},
		{"first written", 1, false},
		{"all but the last written", 6, false},
		{"rollback fails too", 3, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := testAgent(t)
			fw := &failingWriter{real: a.bindings, after: c.after, failDelete: c.failDelete}
			a.writer = fw
			nextID := a.st.nextID

			_, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs})
			if err == nil {
				t.Fatal("publish succeeded, want the injected failure")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !errors.Is(err, errInjectedPut) || !strings.Contains(msg, "write 7 bindings") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line about writing 7 bindings, wrapping the injected failure", msg)
			}
			if c.failDelete {
				if !strings.Contains(msg, errInjectedDelete.Error()) || !strings.Contains(msg, "undoing it failed too") {
					t.Errorf("error %q does not report the failed rollback", msg)
				}
				if got, _ := a.bindings.All(); len(got) != c.after {
					t.Errorf("%d bindings in the map, want the %d the failed rollback left", len(got), c.after)
				}
				return
			}
			if strings.Contains(msg, "undoing") {
				t.Errorf("error %q reports a rollback failure that did not happen", msg)
			}

			if got, err := a.bindings.All(); err != nil || len(got) != 0 {
				t.Errorf("bindings left in the map: %v %v", got, err)
			}
			if len(a.st.ports) != 0 || a.st.nextID != nextID {
				t.Errorf("in-memory state changed: %d mappings, next id %d (was %d)", len(a.st.ports), a.st.nextID, nextID)
			}
			if st, err := loadState(a.store); err != nil || len(st.ports) != 0 || st.nextID != nextID {
				t.Errorf("state file changed: %+v %v", st, err)
			}
			if pas := a.ipam.Ports(""); len(pas) != 0 {
				t.Errorf("ports still allocated: %v", pas)
			}

			// Everything was released: the same request now works.
			fw.after = 1 << 20
			ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs})
			if err != nil {
				t.Fatalf("publish after the rollback: %v", err)
			}
			if got, _ := a.bindings.All(); len(got) != 7 || len(ms) != 3 {
				t.Errorf("after a good publish: %d bindings, %d mappings", len(got), len(ms))
			}
		})
	}
}

// TestBigPublishOverlapsUndo: a publish of overlapAbove specs and more
// writes its counters while ipam commits and its bindings while the state
// takes the mappings; each failure still leaves nothing behind it: no
// mapping in memory or in its index, no binding, no counter, no port.
func TestBigPublishOverlapsUndo(t *testing.T) {
	a := withCT(t, testAgentMaps(t, filepath.Join(t.TempDir(), "pontoon.db"), newDatapathMap(t, "bindings"), newHashMap(t, maps.HostAddrKey{}, maps.HostAddrValue{})))
	n := overlapAbove + 100
	specs := make([]string, n)
	for i := range specs {
		specs[i] = fmt.Sprintf("%d:%d", 20000+i, 1000+i)
	}
	counters := maps.NewBindingStats(a.dp.Maps.BindingStats)
	nothingLeft := func(when string) {
		t.Helper()
		if len(a.st.ports) != 0 || indexed(a, "web") != 0 || len(a.st.groups) != 0 ||
			len(a.st.portCandidates("web", "tcp", ipam.PortRange{First: 1000, Last: 1000 + uint16(n)})) != 0 {
			t.Fatalf("%s: the state holds %d mappings (index %d, groups %d)", when, len(a.st.ports), indexed(a, "web"), len(a.st.groups))
		}
		if got, err := a.bindings.All(); err != nil || len(got) != 0 {
			t.Fatalf("%s: %d bindings left in the map (%v)", when, len(got), err)
		}
		if got, err := counters.All(); err != nil || len(got) != 0 {
			t.Fatalf("%s: %d traffic counters left (%v)", when, len(got), err)
		}
		if pas := a.ipam.Ports(""); len(pas) != 0 {
			t.Fatalf("%s: %d port allocations left", when, len(pas))
		}
	}

	// The map batch fails half-way.
	fw := &failingWriter{real: a.bindings, after: n / 2}
	a.writer = fw
	if _, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs}); !errors.Is(err, errInjectedPut) {
		t.Fatalf("publish with a failing map batch: %v, want the injected failure", err)
	}
	nothingLeft("after the failed map batch")

	// ipam refuses the batch: its last port is taken.
	fw.after = 1 << 20
	taken := fmt.Sprintf("%d:80", 20000+n-1)
	if _, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{taken}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs}); err == nil {
		t.Fatal("publish over a taken port succeeded")
	}
	if got, _ := counters.All(); len(got) != 1 {
		t.Fatalf("%d counters after ipam refused the batch, want the one mapping's", len(got))
	}
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "80/tcp"}); err != nil {
		t.Fatal(err)
	}
	nothingLeft("after ipam refused the batch")

	// And it goes through: every mapping indexed, bound and counted.
	ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != n || indexed(a, "web") != n {
		t.Fatalf("%d mappings published, %d indexed, want %d", len(ms), indexed(a, "web"), n)
	}
	if got, _ := a.bindings.All(); len(got) != n {
		t.Errorf("%d bindings, want %d", len(got), n)
	}
	got, _ := counters.All()
	for _, m := range ms {
		if _, ok := got[m.ID]; !ok {
			t.Fatalf("mapping %d has no traffic counter", m.ID)
		}
	}
}

// indexed counts the endpoint's mappings in the state's index.
func indexed(a *Agent, endpoint string) int {
	n := 0
	for range a.st.endpointPorts(endpoint) {
		n++
	}
	return n
}
