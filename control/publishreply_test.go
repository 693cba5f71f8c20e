package control

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// serveAPI serves a's API, through wrap when not nil, on a socket of its
// own and returns a client of it.
func serveAPI(t *testing.T, a *Agent, wrap func(http.Handler) http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := a.routes()
	if wrap != nil {
		h = wrap(h)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

// mixedPublish is a request of every kind of spec: fixed, dynamic, a
// range, a host range for one port, loopback, IPv6, with an allowlist.
var mixedPublish = PublishRequest{Endpoint: "web", Specs: []string{
	"8080:80/tcp", "90/udp", "127.0.0.1:9000-9002:9000-9002", "9100-9110:100", "[::1]:9200:200/tcp", "7000-7003/udp",
}, AllowFrom: []string{"10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"}}

// stored is what the agent holds of endpoint web's mappings, in binding
// id order, without the listing-only fields.
func stored(t *testing.T, a *Agent) []*PortMapping {
	t.Helper()
	ms, err := a.Ports("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		m.Traffic, m.group = nil, 0
	}
	slices.SortFunc(ms, func(x, y *PortMapping) int { return int(x.ID) - int(y.ID) })
	return ms
}

// TestPublishedPortsReply: the client asks for the compact reply and
// rebuilds from it exactly the mappings the agent stored, for every kind
// of spec, and still reads the whole mappings of an agent that does not
// know the compact reply.
func TestPublishedPortsReply(t *testing.T) {
	for _, agent := range []string{"compact", "old"} {
		t.Run(agent, func(t *testing.T) {
			a := testAgent(t)
			a.st.endpoints["web"].IPv6 = netip.MustParseAddr("fd00::2")
			var wrap func(http.Handler) http.Handler
			if agent == "old" {
				// An agent from before ?reply=ports ignores the query.
				wrap = func(h http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						r.URL.RawQuery = ""
						h.ServeHTTP(w, r)
					})
				}
			}
			c := serveAPI(t, a, wrap)
			got, err := c.Publish(mixedPublish)
			if err != nil {
				t.Fatal(err)
			}
			want := stored(t, a)
			if len(got) != len(mixedPublish.Specs) || !reflect.DeepEqual(got, want) {
				t.Fatalf("client's mappings differ from the agent's:\ngot  %s\nwant %s", mappingsText(got), mappingsText(want))
			}
			if got[1].Host.First < 61000 || got[3].Host.Len() != 1 || !got[0].Backend6.IsValid() || got[4].Backend != netip.MustParseAddr("fd00::2") {
				t.Fatalf("mappings are not what the specs ask for: %s", mappingsText(got))
			}
		})
	}
}

func mappingsText(ms []*PortMapping) string {
	var out []string
	for _, m := range ms {
		out = append(out, strings.Join(DockerLines([]*PortMapping{m}), "; ")+" id "+m.Backend.String()+"/"+m.Backend6.String())
	}
	return strings.Join(out, " | ")
}

// TestPublishReplyForm: an unknown reply form is refused with one line
// before anything is published.
func TestPublishReplyForm(t *testing.T) {
	a := testAgent(t)
	r := httptest.NewRequest("POST", "/v1/ports?reply=mappings", strings.NewReader(`{"endpoint":"web","specs":["8080:80"]}`))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	a.routes().ServeHTTP(w, r)
	body := strings.TrimSpace(w.Body.String())
	if w.Code != http.StatusBadRequest || strings.Contains(body, "\n") || !strings.Contains(body, `unknown reply form \"mappings\"`) {
		t.Fatalf("POST /v1/ports?reply=mappings: %d %s", w.Code, body)
	}
	if len(a.st.ports) != 0 {
		t.Fatalf("a refused request published %d mappings", len(a.st.ports))
	}
}

// TestPublishedPortsMismatch: a compact reply that does not fit the
// request is an error, not wrong mappings.
func TestPublishedPortsMismatch(t *testing.T) {
	req := PublishRequest{Endpoint: "web", Specs: []string{"8080:80", "9000-9009:9000-9009"}}
	ip := netip.MustParseAddr("10.88.0.2")
	for _, p := range []PublishedPorts{
		{Endpoint: "web", FirstID: 1, EndpointIP: ip, HostPorts: []uint16{8080}},
		{Endpoint: "web", FirstID: 1, EndpointIP: ip, HostPorts: []uint16{8080, 65530}},
		{Endpoint: "web", FirstID: 1, EndpointIP: ip, HostPorts: []uint16{0, 9000}},
	} {
		if ms, err := p.mappings(req); err == nil {
			t.Errorf("reply %+v: rebuilt %s, want an error", p, mappingsText(ms))
		}
	}
}
