package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

// benchAgent is testAgent with the datapath's own map sizes, so that
// 60,000 bindings fit, and its API served in process: a CPU profile of
// a benchmark using it is the agent's side of a request, which the
// end-to-end benchmarks of cmd/pontoon (a separate agent process) cannot
// profile.
func benchAgent(b *testing.B) (*Agent, http.Handler) {
	b.Helper()
	a := testAgentMaps(b, filepath.Join(b.TempDir(), "pontoon.db"), newDatapathMap(b, "bindings"), newDatapathMap(b, "hostaddrs"))
	// An unpublish walks the conntrack tables.
	a.dp.Maps.CT, a.dp.Maps.CTNew = newDatapathMap(b, "ct"), newDatapathMap(b, "ct_new")
	// The agent copies its state file in a goroutine of its own, after
	// the reply (saveLastGoodSoon); no loop takes these kicks.
	a.backup.kick = make(chan struct{}, 1)
	return a, a.routes()
}

// post sends one JSON body to the in-process API and wants 200.
func post(b *testing.B, h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	b.Helper()
	r := httptest.NewRequest("POST", path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		b.Fatalf("POST %s: %d %s", path, w.Code, w.Body)
	}
	return w
}

func specsFrom(first, n int, proto string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%d:%d/%s", first+i, first+i, proto)
	}
	return out
}

// BenchmarkAPIPublish60k is the agent's side of BenchmarkPublish60k of
// cmd/pontoon: one publish request of 30,000 TCP and 30,000 UDP ports
// through the API handler, the compact reply encoded (as the client asks);
// the unpublish is untimed.
func BenchmarkAPIPublish60k(b *testing.B) {
	_, h := benchAgent(b)
	body, _ := json.Marshal(PublishRequest{Endpoint: "web", Specs: append(specsFrom(20000, 30_000, "tcp"), specsFrom(20000, 30_000, "udp")...)})
	size := 0
	for b.Loop() {
		size = post(b, h, "/v1/ports?reply=ports", body).Body.Len()
		b.StopTimer()
		for _, p := range []string{"tcp", "udp"} {
			post(b, h, "/v1/ports/unpublish", []byte(`{"endpoint":"web","spec":"1-65535/`+p+`"}`))
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(size), "B/reply")
}

// BenchmarkAPIPublishAt60k is the agent's side of one publish and its
// unpublish of one port while 60,000 mappings exist.
func BenchmarkAPIPublishAt60k(b *testing.B) {
	_, h := benchAgent(b)
	for _, p := range []string{"tcp", "udp"} {
		body, _ := json.Marshal(PublishRequest{Endpoint: "web", Specs: specsFrom(20000, 30_000, p)})
		post(b, h, "/v1/ports", body)
	}
	for b.Loop() {
		post(b, h, "/v1/ports", []byte(`{"endpoint":"web","specs":["10000:80/tcp"]}`))
		post(b, h, "/v1/ports/unpublish", []byte(`{"endpoint":"web","spec":"10000:80/tcp"}`))
	}
}
