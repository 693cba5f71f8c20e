package control

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestDockerPortSpecs(t *testing.T) {
	portmap := func(js string) any {
		var v any
		if err := json.Unmarshal([]byte(js), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name, portmap string
		dual          bool
		want          []string
		err           string
	}{
		{"fixed", `[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`, false, []string{"8080:80/tcp"}, ""},
		{"loopback udp", `[{"Proto":17,"Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":5353}]`, false, []string{"127.0.0.1:5353:53/udp"}, ""},
		{"a host range for one port", `[{"Proto":6,"Port":80,"HostPort":8000,"HostPortEnd":8010}]`, false, []string{"8000-8010:80/tcp"}, ""},
		{"allocated (-p 80, -P)", `[{"Proto":6,"Port":80,"HostPort":0,"HostPortEnd":0}]`, false, []string{"80/tcp"}, ""},
		{"allocated on loopback", `[{"Proto":6,"Port":80,"HostIP":"127.0.0.1"}]`, false, []string{"127.0.0.1::80/tcp"}, ""},
		{"sctp is refused: the datapath does not translate it", `[{"Proto":6,"Port":80,"HostPort":80},{"Proto":132,"Port":9,"HostPort":9}]`, false, nil, "-p 9/sctp: the pontoon driver publishes tcp and udp ports only"},
		{"[::] on a dual-stack endpoint", `[{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080}]`, true, []string{"[::]:8080:80/tcp"}, ""},
		{"[::1] allocated on a dual-stack endpoint", `[{"Proto":6,"Port":80,"HostIP":"::1"}]`, true, []string{"[::1]::80/tcp"}, ""},
		{"[::] beside no host IP adds nothing", `[{"Proto":6,"Port":80,"HostPort":8080},{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080}]`, true, []string{"8080:80/tcp"}, ""},
		{"0.0.0.0 and [::] on a dual-stack endpoint stay apart", `[{"Proto":6,"Port":80,"HostIP":"0.0.0.0","HostPort":8080},{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080}]`, true, []string{"0.0.0.0:8080:80/tcp", "[::]:8080:80/tcp"}, ""},
		{"0.0.0.0 and [::] on an IPv4-only endpoint are both families", `[{"Proto":6,"Port":80,"HostIP":"0.0.0.0","HostPort":8080},{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080}]`, false, []string{"8080:80/tcp"}, ""},
		{"[::] alone on an IPv4-only endpoint is refused", `[{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080}]`, false, nil, "the container has IPv4 only on this network; create the network with --ipv6"},
		{"a bad protocol", `[{"Proto":1,"Port":80,"HostPort":8080}]`, false, nil, "protocol number 1"},
		{"a bad host IP", `[{"Proto":6,"Port":80,"HostIP":"nowhere","HostPort":8080}]`, false, nil, "not an address"},
		{"none", `null`, false, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := dockerPortSpecs(portmap(c.portmap), c.dual)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
			for _, s := range got {
				if _, err := ParsePortSpec(s); err != nil {
					t.Errorf("spec %q does not parse: %v", s, err)
				}
			}
		})
	}
}

func TestDockerNetworkOptions(t *testing.T) {
	var nc NetworkCreate
	err := dockerNetworkOptions(map[string]any{
		"com.docker.network.internal": true,
		dockerGenericKey: map[string]any{
			"icc": "false", "com.docker.network.driver.mtu": "1400", "bridge": "br-web", "masquerade": "true", "masquerade6": "true",
		},
	}, &nc)
	if err != nil {
		t.Fatal(err)
	}
	if nc.ICC == nil || *nc.ICC || nc.MTU != 1400 || nc.Bridge != "br-web" || nc.Masquerade == nil || *nc.Masquerade || nc.Masquerade6 {
		t.Errorf("options read as %+v (internal must win over masquerade=true and masquerade6=true)", nc)
	}
	for opts, want := range map[string]string{
		`{"color":"blue"}`:     `unknown option "color"`,
		`{"icc":"maybe"}`:      "give true or false",
		`{"mtu":"big"}`:        "give a number",
		`{"routed":"yes"}`:     "give true or false",
		`{"masquerade6":"1x"}`: "give true or false",
	} {
		var generic map[string]any
		json.Unmarshal([]byte(opts), &generic)
		if err := dockerNetworkOptions(map[string]any{dockerGenericKey: generic}, &NetworkCreate{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("options %s: %v, want an error saying %q", opts, err, want)
		}
	}
	var nat66 NetworkCreate
	if err := dockerNetworkOptions(map[string]any{dockerGenericKey: map[string]any{"masquerade": "false", "masquerade6": "true"}}, &nat66); err != nil ||
		!nat66.Masquerade6 || nat66.Masquerade == nil || *nat66.Masquerade {
		t.Errorf("-o masquerade=false -o masquerade6=true read as %+v, %v", nat66, err)
	}
	var routed NetworkCreate
	if err := dockerNetworkOptions(map[string]any{dockerGenericKey: map[string]any{"routed": "true"}}, &routed); err != nil || !routed.Routed {
		t.Errorf("-o routed=true read as %+v, %v", routed, err)
	}
	err = dockerNetworkOptions(map[string]any{"com.docker.network.internal": true, dockerGenericKey: map[string]any{"routed": "true"}}, &NetworkCreate{})
	if err == nil || !strings.Contains(err.Error(), "--internal and -o routed=true contradict") {
		t.Errorf("--internal with -o routed=true: %v", err)
	}
}

// TestDockerPluginProtocol checks the envelope dockerd relies on: the
// manifest, and errors as {"Err": ...} with a failing status.
func TestDockerPluginProtocol(t *testing.T) {
	p := &dockerPlugin{a: &Agent{log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	srv := httptest.NewServer(p.routes())
	defer srv.Close()
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(srv.URL+path, dockerContentType, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("%s: reply is not JSON: %v", path, err)
		}
		return resp.StatusCode, out
	}
	if code, out := post("/Plugin.Activate", ""); code != 200 || !slices.Equal(toStrings(out["Implements"]), []string{"NetworkDriver", "IpamDriver"}) {
		t.Errorf("activate: %d %v", code, out)
	}
	if code, out := post("/NetworkDriver.GetCapabilities", "{}"); code != 200 || out["Scope"] != "local" {
		t.Errorf("capabilities: %d %v", code, out)
	}
	for path, body := range map[string]string{
		"/NetworkDriver.CreateEndpoint": `{"NetworkID":"n","EndpointID":"e","Interface":{}}`,
		"/IpamDriver.RequestPool":       `{"Pool":"not-a-subnet"}`,
		"/NetworkDriver.Join":           `{"NetworkID":`,
		"/NetworkDriver.NoSuchCall":     `{}`,
	} {
		code, out := post(path, body)
		if msg, _ := out["Err"].(string); code == 200 || !strings.HasPrefix(msg, "pontoon") {
			t.Errorf("%s %s: %d %v, want a failure with an Err naming pontoon", path, body, code, out)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}
