package control

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// recordKeys counts the state file's port records: of one mapping each
// (portKey) and group records.
func recordKeys(t *testing.T, a *Agent) (singles, groups int) {
	t.Helper()
	err := a.store.View(func(tx ipam.Tx) error {
		return tx.ForEach(bucketPorts, func(k, _ []byte) error {
			if bytes.HasPrefix(k, []byte(groupPrefix)) {
				groups++
			} else {
				singles++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return singles, groups
}

// reloaded is the mappings the state file holds, sorted.
func reloaded(t *testing.T, a *Agent) []*PortMapping {
	t.Helper()
	st, err := loadState(a.store)
	if err != nil {
		t.Fatalf("read the state file again: %v", err)
	}
	var ms []*PortMapping
	for _, m := range st.ports {
		ms = append(ms, m)
	}
	sortMappings(ms)
	return ms
}

// withCT gives a test agent the conntrack maps unpublish flushes.
func withCT(t *testing.T, a *Agent) *Agent {
	a.dp.Maps.CT = newHashMap(t, maps.CTKey{}, maps.CTValue{})
	a.dp.Maps.CTNew = newHashMap(t, maps.CTKey{}, maps.CTValue{})
	return a
}

func inMemory(a *Agent) []*PortMapping {
	var ms []*PortMapping
	for _, m := range a.st.ports {
		ms = append(ms, m)
	}
	sortMappings(ms)
	return ms
}

func sameMappings(t *testing.T, got, want []*PortMapping) {
	t.Helper()
	eq := func(x, y *PortMapping) bool {
		return x.Endpoint == y.Endpoint && x.Proto == y.Proto && x.HostIP == y.HostIP && x.Host == y.Host &&
			x.Container == y.Container && x.Backend == y.Backend && x.Backend6 == y.Backend6 && x.ID == y.ID &&
			slices.Equal(x.AllowFrom, y.AllowFrom)
	}
	if !slices.EqualFunc(got, want, eq) {
		t.Fatalf("state file holds %d mappings, memory %d, or they differ", len(got), len(want))
	}
}

// TestStateMappingRecordsMigrate opens a state file an agent wrote before
// group records (testdata/state-mapping-records.db: one record per
// mapping, 203 mappings of endpoint web), and publishes, unpublishes and
// splits on it: the old records are read and removed as before, the new
// ones go in groups, and the file reads back as memory holds it.
func TestStateMappingRecordsMigrate(t *testing.T) {
	old, err := os.ReadFile("testdata/state-mapping-records.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pontoon.db")
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	a := withCT(t, testAgentAt(t, path))
	if n := len(a.st.ports); n != 203 {
		t.Fatalf("%d mappings read from the old state file, want 203", n)
	}
	if singles, groups := recordKeys(t, a); singles != 203 || groups != 0 {
		t.Fatalf("old file: %d single records and %d groups, want 203 and 0", singles, groups)
	}

	if _, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"7000:70", "7001:71/udp"}}); err != nil {
		t.Fatalf("publish on the old state: %v", err)
	}
	if ms, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "8080:80/tcp"}); err != nil || len(ms) != 1 {
		t.Fatalf("unpublish an old mapping: %d removed, %v", len(ms), err)
	}
	if ms, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "9001/udp"}); err != nil || len(ms) != 1 {
		t.Fatalf("unpublish part of an old range mapping: %d removed, %v", len(ms), err)
	}
	// 203 + 2 published - 1 - the range, + its two kept parts.
	if n := len(a.st.ports); n != 205 {
		t.Fatalf("%d mappings in memory, want 205", n)
	}
	if singles, groups := recordKeys(t, a); singles != 203 || groups != 1 {
		t.Errorf("%d single records and %d groups, want 203 (201 old, 2 kept parts) and 1", singles, groups)
	}
	sameMappings(t, reloaded(t, a), inMemory(a))
	if got := len(a.ipam.Ports("")); got != 205 {
		t.Errorf("%d port allocations, want 205", got)
	}
}

// TestPortGroups: a publish saves its mappings in groups of groupSize;
// removing members, the one whose id keys the group included, rewrites
// the group, and removing the last deletes it.
func TestPortGroups(t *testing.T) {
	a := withCT(t, testAgent(t))
	specs := []string{"8080:80", "8081:81", "8082:82/udp"}
	ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs})
	if err != nil {
		t.Fatal(err)
	}
	if _, groups := recordKeys(t, a); groups != 1 {
		t.Fatalf("%d group records after one publish, want 1", groups)
	}
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "8080:80/tcp"}); err != nil {
		t.Fatalf("unpublish the group's first mapping: %v", err)
	}
	got := reloaded(t, a)
	sameMappings(t, got, inMemory(a))
	if len(got) != 2 || got[0].ID != ms[1].ID || got[1].ID != ms[2].ID {
		t.Fatalf("after removing the first: %d mappings read back, want 81/tcp and 82/udp", len(got))
	}
	// A state read back keeps the groups: removing from it rewrites them.
	endpoints := a.st.endpoints // testAgent's endpoint is not in the file
	if a.st, err = loadState(a.store); err != nil {
		t.Fatal(err)
	}
	a.st.endpoints = endpoints
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "82/udp"}); err != nil {
		t.Fatal(err)
	}
	sameMappings(t, reloaded(t, a), inMemory(a))
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "81/tcp"}); err != nil {
		t.Fatal(err)
	}
	if singles, groups := recordKeys(t, a); singles+groups != 0 {
		t.Fatalf("%d records left after unpublishing everything, want none", singles+groups)
	}

	// More than groupSize mappings take several groups.
	var many []*PortMapping
	for i := range groupSize + 10 {
		many = append(many, &PortMapping{Endpoint: "web", Proto: "tcp", HostIP: netip.IPv4Unspecified(),
			Host: ipam.Port(uint16(20000 + i)), Container: ipam.Port(80), Backend: netip.MustParseAddr("10.88.0.2"), ID: uint32(1000 + i)})
	}
	if err := a.store.Update(func(tx ipam.Tx) error { return saveGroups(tx, many) }); err != nil {
		t.Fatal(err)
	}
	if _, groups := recordKeys(t, a); groups != 2 {
		t.Fatalf("%d group records for %d mappings, want 2", groups, len(many))
	}
	sortMappings(many)
	sameMappings(t, reloaded(t, a), many)
}
