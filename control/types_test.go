package control

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// TestJSONSnakeCase: every key of everything the API emits is snake_case,
// down to the port ranges and counters of other packages' types.
func TestJSONSnakeCase(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.2")
	yes := true
	for name, v := range map[string]any{
		"network": &NetworkInfo{Network: Network{Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/24"), AddedGateway: true,
			Subnets: []NetworkSubnet{{Subnet: netip.MustParsePrefix("10.0.0.0/24"), IPRange: netip.MustParsePrefix("10.0.0.128/25"), AuxAddresses: map[string]netip.Addr{"router": ip}}},
		}, Endpoints: []string{"e"}, Notes: []string{"x"}},
		"endpoint": &Endpoint{Name: "e", IP: ip},
		"mapping":  &PortMapping{Endpoint: "e", Proto: "tcp", HostIP: ip, Host: ipam.PortRange{First: 80, Last: 81}, Container: ipam.Port(80), Backend: ip, ID: 1},
		"status": &Status{
			Uplinks: []Uplink{{Name: "eth0", Mode: "tcx", Addr: ip}}, Attachments: []loader.Attachment{{Kind: "tcx"}},
			Counters: map[string]maps.Counter{"tcp_rst_ignored": {Packets: 1, Bytes: 2}},
		},
		"network create":    &NetworkCreate{Name: "n", ICC: &yes, Masquerade: &yes, Routed: true, Force: true},
		"endpoint attach":   &EndpointAttach{Network: "n", Name: "e", Netns: "/x", PID: 1},
		"publish request":   &PublishRequest{Endpoint: "e", Specs: []string{"80"}},
		"unpublish request": &UnpublishRequest{Endpoint: "e", Spec: "80"},
		"error":             &apiError{Error: "x"},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var tree any
		if err := json.Unmarshal(b, &tree); err != nil {
			t.Fatal(err)
		}
		for _, k := range jsonKeys(tree) {
			if !snakeCase.MatchString(k) {
				t.Errorf("%s: key %q is not snake_case in %s", name, k, b)
			}
		}
	}
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

func jsonKeys(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			out = append(append(out, k), jsonKeys(e)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, jsonKeys(e)...)
		}
	}
	return out
}

// TestOldMappingRecordsLoad: records saved before the port ranges had
// snake_case keys ("First", "Last") still load.
func TestOldMappingRecordsLoad(t *testing.T) {
	var m PortMapping
	old := `{"endpoint":"e","proto":"tcp","host_ip":"0.0.0.0","host_ports":{"First":8080,"Last":8081},"container_ports":{"First":80,"Last":81},"backend":"10.0.0.2","binding_id":7}`
	if err := decode(bucketPorts, []byte("k"), []byte(old), &m); err != nil {
		t.Fatal(err)
	}
	if m.Host != (ipam.PortRange{First: 8080, Last: 8081}) || m.Container != (ipam.PortRange{First: 80, Last: 81}) || m.ID != 7 {
		t.Errorf("loaded %+v", m)
	}
}

func TestLinkLocal(t *testing.T) {
	ll, ok := linkLocal([6]byte{0x02, 0x42, 0xac, 0x11, 0x00, 0x02})
	if want := netip.MustParseAddr("fe80::42:acff:fe11:2"); !ok || ll != want {
		t.Errorf("linkLocal(02:42:ac:11:00:02) = %s, want %s", ll, want)
	}
	if _, ok := linkLocal([6]byte{}); ok {
		t.Error("an unrecorded MAC gave a link-local address")
	}
}
