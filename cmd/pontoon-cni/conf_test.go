package main

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/ipam"
)

func TestParseConf(t *testing.T) {
	for _, c := range []struct {
		name, conf string
		wantSpecs  []string
		wantCode   uint
		wantNet    string
	}{
		{
			name:      "main plugin with port mappings",
			conf:      `{"cniVersion":"1.0.0","name":"podnet","type":"pontoon-cni","socket":"/tmp/s","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"UDP","hostIP":"127.0.0.1"},{"hostPort":9090,"containerPort":90,"protocol":"tcp","hostIP":"0.0.0.0"}]}}`,
			wantSpecs: []string{"8080:80/tcp", "127.0.0.1:5353:53/udp", "9090:90/tcp"},
			wantNet:   "podnet",
		},
		{
			name:    "network overrides the conflist name",
			conf:    `{"cniVersion":"1.0.0","name":"podnet","type":"pontoon-cni","network":"web","subnet":"10.88.0.0/16"}`,
			wantNet: "web",
		},
		{name: "not JSON", conf: `{"cniVersion":`, wantCode: types.ErrDecodingFailure},
		{name: "no name", conf: `{"cniVersion":"1.0.0","type":"pontoon-cni"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad subnet", conf: `{"cniVersion":"1.0.0","name":"n","type":"pontoon-cni","subnet":"10.88.0.0"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "port 0", conf: `{"cniVersion":"1.0.0","name":"n","type":"pontoon-cni","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]}}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "IPv6 host IP", conf: `{"cniVersion":"1.0.0","name":"n","type":"pontoon-cni","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"::1"}]}}`, wantCode: types.ErrInvalidNetworkConfig},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf, err := parseConf([]byte(c.conf))
			if c.wantCode != 0 {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != c.wantCode || te.Msg == "" {
					t.Fatalf("error %#v, want a CNI error with code %d and a message", err, c.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			specs, _ := conf.specs()
			if !slices.Equal(specs, c.wantSpecs) {
				t.Errorf("specs %q, want %q", specs, c.wantSpecs)
			}
			if conf.Network != c.wantNet {
				t.Errorf("network %q, want %q", conf.Network, c.wantNet)
			}
		})
	}
}

func TestParseConfDefaultsSocket(t *testing.T) {
	conf, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"pontoon-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Socket != control.DefaultSocket {
		t.Errorf("socket %q, want %q", conf.Socket, control.DefaultSocket)
	}
}

func TestEndpointName(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	a := endpointName(id, "eth0", "n1")
	for _, other := range []string{endpointName(id, "eth1", "n1"), endpointName(id, "eth0", "n2"), endpointName("x"+id, "eth0", "n1")} {
		if other == a {
			t.Errorf("two attachments share the endpoint name %s", a)
		}
	}
	if a != endpointName(id, "eth0", "n1") {
		t.Error("the name is not stable")
	}
	if !strings.HasPrefix(a, "cni-ab12ab12ab12-") || len(a) > 64 {
		t.Errorf("name %q", a)
	}
	if n := endpointName("a/b c;d", "eth0", "n"); strings.ContainsAny(n, "/ ;") {
		t.Errorf("unsafe characters kept in %q", n)
	}
}

func TestAgentErrorCodes(t *testing.T) {
	down := control.NewClient("/nonexistent/pontoon.sock")
	_, err := down.Status()
	if !control.Unreachable(err) {
		t.Fatalf("dialling a missing socket: %v is not 'unreachable'", err)
	}
	for _, c := range []struct {
		name string
		err  error
		want uint
	}{
		{"agent down", err, types.ErrTryAgainLater},
		{"agent unhealthy", &control.ReplyError{Status: 503, Message: "unhealthy"}, types.ErrTryAgainLater},
		{"refused", &control.ReplyError{Status: 409, Message: "port 8080 in use"}, errAgentRefused},
		{"unsupported", &control.ReplyError{Status: 501, Message: "IPv6"}, errAgentRefused},
		{"failed", &control.ReplyError{Status: 500, Message: "disk"}, types.ErrInternal},
	} {
		te := agentError("doing", c.err)
		if te.Code != c.want || te.Msg != c.err.Error() || te.Details != "doing" {
			t.Errorf("%s: %+v, want code %d with the agent's message", c.name, te, c.want)
		}
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cause (no such socket) of %v is not kept", err)
	}
}

func TestContainerAddress(t *testing.T) {
	prev := &current.Result{}
	raw := `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},{"name":"veth1","mac":"aa:bb:cc:dd:ee:02"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:03","sandbox":"/run/netns/x"}],
		"ips":[{"interface":2,"address":"10.22.0.5/16","gateway":"10.22.0.1"}]}`
	if err := json.Unmarshal([]byte(raw), prev); err != nil {
		t.Fatal(err)
	}
	addr, gw, err := containerAddress(prev, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if addr != netip.MustParsePrefix("10.22.0.5/16") || gw != netip.MustParseAddr("10.22.0.1") {
		t.Errorf("address %s gateway %s", addr, gw)
	}
	if _, _, err := containerAddress(prev, "eth1"); err == nil {
		t.Error("found an address for an interface prevResult does not list")
	}
	prev.IPs[0].Gateway = nil
	if _, _, err := containerAddress(prev, "eth0"); err == nil {
		t.Error("accepted an address without a gateway")
	}
}

func TestMainResult(t *testing.T) {
	ep := &control.Endpoint{
		Name: "cni-x", HostIf: "ptv0123456789", HostMAC: "02:00:00:00:00:01", IfName: "eth0", MAC: "02:00:00:00:00:02",
		IP: netip.MustParseAddr("10.88.0.2"), PrefixLen: 16, Gateway: netip.MustParseAddr("10.88.0.1"),
	}
	r := mainResult(ep, "/run/netns/c1")
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Interfaces []struct{ Name, Mac, Sandbox string }
		IPs        []struct {
			Interface        *int
			Address, Gateway string
		}
		Routes []struct{ Dst, GW string }
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Interfaces) != 2 || got.Interfaces[1].Sandbox != "/run/netns/c1" || got.Interfaces[1].Mac != ep.MAC || got.Interfaces[0].Sandbox != "" {
		t.Errorf("interfaces %+v", got.Interfaces)
	}
	if len(got.IPs) != 1 || got.IPs[0].Interface == nil || *got.IPs[0].Interface != 1 || got.IPs[0].Address != "10.88.0.2/16" || got.IPs[0].Gateway != "10.88.0.1" {
		t.Errorf("ips %s", b)
	}
	if len(got.Routes) != 1 || got.Routes[0].Dst != "0.0.0.0/0" || got.Routes[0].GW != "10.88.0.1" {
		t.Errorf("routes %+v", got.Routes)
	}
	ep.NoDefaultRoute = true
	if r := mainResult(ep, "/run/netns/c1"); len(r.Routes) != 0 {
		t.Errorf("a default route for an endpoint that does not hold it: %+v", r.Routes)
	}
}

func TestSamePorts(t *testing.T) {
	have := []*control.PortMapping{
		{Proto: "tcp", Host: ipam.PortRange{First: 8080, Last: 8081}, Container: ipam.PortRange{First: 80, Last: 81}},
		{Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), Host: ipam.PortRange{First: 53, Last: 53}, Container: ipam.PortRange{First: 53, Last: 53}},
	}
	want := []portMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 8081, ContainerPort: 81, Protocol: "tcp", HostIP: "0.0.0.0"},
		{HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"},
	}
	if missing, extra := samePorts(have, want); len(missing)+len(extra) != 0 {
		t.Errorf("missing %v extra %v", missing, extra)
	}
	missing, extra := samePorts(have[:1], want)
	if len(missing) != 1 || len(extra) != 0 {
		t.Errorf("missing %v extra %v, want one missing", missing, extra)
	}
}
