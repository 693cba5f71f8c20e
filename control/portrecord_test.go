package control

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
)

// groupFixture has a mapping of every shape a group record holds.
func groupFixture() []*PortMapping {
	v4, v6 := netip.MustParseAddr("10.88.0.2"), netip.MustParseAddr("fd00:88::2")
	return []*PortMapping{
		{Endpoint: "web", Proto: "tcp", HostIP: netip.IPv4Unspecified(), Host: ipam.Port(8080), Container: ipam.Port(80), Backend: v4, ID: 1},
		{Endpoint: "web", Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), Host: ipam.PortRange{First: 9000, Last: 9099},
			Container: ipam.PortRange{First: 1000, Last: 1099}, Backend: v4, ID: 2},
		{Endpoint: "web", Proto: "tcp", HostIP: netip.IPv4Unspecified(), Host: ipam.Port(443), Container: ipam.Port(443),
			Backend: v4, Backend6: v6, ID: 1<<32 - 1,
			AllowFrom: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("0.0.0.0/0")}},
		{Endpoint: "a-very-long-endpoint-name-" + string(bytes.Repeat([]byte("x"), 200)), Proto: "sctp", HostIP: netip.MustParseAddr("::1"),
			Host: ipam.Port(65535), Container: ipam.Port(1), Backend: v6, ID: 7, AllowFrom: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}},
	}
}

func TestGroupRecordRoundTrip(t *testing.T) {
	want := groupFixture()
	v := encodeGroup(want)
	if v[0] != groupBinaryV1 {
		t.Fatalf("record starts with %#x, want the binary layout's %#x", v[0], groupBinaryV1)
	}
	got, err := decodeGroup(v)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
	// Older agents wrote the group as a JSON array: still read.
	js, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = decodeGroup(js); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("JSON group read back as %+v, %v", got, err)
	}
	// What a big publish saves: one-port mappings of one endpoint.
	var typical []*PortMapping
	for i := range groupSize {
		typical = append(typical, &PortMapping{Endpoint: "web", Proto: "tcp", HostIP: netip.IPv4Unspecified(),
			Host: ipam.Port(uint16(20000 + i)), Container: ipam.Port(uint16(20000 + i)), Backend: netip.MustParseAddr("10.88.0.2"), ID: uint32(1000 + i)})
	}
	js, _ = json.Marshal(typical)
	if v := encodeGroup(typical); len(v)*4 > len(js) {
		t.Errorf("a group of %d one-port mappings is %d bytes, as JSON %d: want it under a quarter", groupSize, len(v), len(js))
	}
}

func TestGroupRecordMalformed(t *testing.T) {
	good := encodeGroup(groupFixture())
	for n := range len(good) {
		if _, err := decodeGroup(good[:n]); err == nil {
			t.Fatalf("record cut to %d of %d bytes read without an error", n, len(good))
		}
	}
	one := encodeGroup(groupFixture()[:1])
	bad := map[string][]byte{
		"unknown layout":     append([]byte{2}, one[1:]...),
		"trailing byte":      append(append([]byte{}, one...), 0),
		"count past the end": {groupBinaryV1, 0xff, 0xff, 0x03, 3, 'w', 'e', 'b'},
		"address of 5 bytes": func() []byte {
			b := append([]byte{}, one...)
			b[2+1+3+1+3] = 5 // host IP length of the first mapping
			return b
		}(),
		"prefix too long": encodeGroup([]*PortMapping{{Endpoint: "w", Proto: "tcp", HostIP: netip.IPv4Unspecified(),
			AllowFrom: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("192.0.2.0"), 33)}}}),
		"not JSON either": []byte("[{"),
	}
	for name, v := range bad {
		if ms, err := decodeGroup(v); err == nil {
			t.Errorf("%s: read %d mappings without an error", name, len(ms))
		}
	}
}

// FuzzGroupRecord: no value panics the decoder, and whatever it reads
// encodes to a record that reads back the same.
func FuzzGroupRecord(f *testing.F) {
	f.Add(encodeGroup(groupFixture()))
	f.Add(encodeGroup(groupFixture()[:1]))
	f.Add([]byte{groupBinaryV1, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		ms, err := decodeGroup(v)
		if err != nil || len(v) == 0 || v[0] != groupBinaryV1 {
			return
		}
		again, err := decodeGroup(encodeGroup(ms))
		if err != nil || !reflect.DeepEqual(again, ms) {
			t.Fatalf("decoded %+v; encoded again it reads %+v, %v", ms, again, err)
		}
	})
}

// TestJSONGroupRecordsRead: a state file with JSON group records (agents
// before the binary layout) loads, and a group that loses a member is
// rewritten in the binary layout.
func TestJSONGroupRecordsRead(t *testing.T) {
	a := withCT(t, testAgent(t))
	ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8080:80", "8081:81", "8082:82/udp"}})
	if err != nil {
		t.Fatal(err)
	}
	key := groupKey(ms[0].ID)
	if err := a.store.Update(func(tx ipam.Tx) error { return put(tx, bucketPorts, string(key), ms) }); err != nil {
		t.Fatal(err)
	}
	endpoints := a.st.endpoints // testAgent's endpoint is not in the file
	if a.st, err = loadState(a.store); err != nil {
		t.Fatalf("load a JSON group record: %v", err)
	}
	a.st.endpoints = endpoints
	sameMappings(t, inMemory(a), reloaded(t, a))
	if len(a.st.ports) != 3 {
		t.Fatalf("%d mappings read from the JSON group, want 3", len(a.st.ports))
	}
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "8081:81/tcp"}); err != nil {
		t.Fatal(err)
	}
	var v []byte
	if err := a.store.View(func(tx ipam.Tx) error { v = bytes.Clone(tx.Get(bucketPorts, key)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(v) == 0 || v[0] != groupBinaryV1 {
		t.Fatalf("rewritten group record starts %q, want the binary layout", v[:min(len(v), 8)])
	}
	sameMappings(t, reloaded(t, a), inMemory(a))
}
