package control

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// publish60k is the request of BenchmarkAPIPublish60k: 30,000 TCP and
// 30,000 UDP one-port specs.
func publish60k() PublishRequest {
	return PublishRequest{Endpoint: "web", Specs: append(specsFrom(20000, 30_000, "tcp"), specsFrom(20000, 30_000, "udp")...)}
}

// BenchmarkDecodePublish60k: the agent reading a publish request of
// 60,000 specs, body read included.
func BenchmarkDecodePublish60k(b *testing.B) {
	body, _ := json.Marshal(publish60k())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", "/v1/ports?reply=ports", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var req PublishRequest
		if err := readJSON(httptest.NewRecorder(), r, &req); err != nil || len(req.Specs) != 60_000 {
			b.Fatalf("read %d specs: %v", len(req.Specs), err)
		}
	}
}

// BenchmarkEncodePublish60k: the client writing a publish request of
// 60,000 specs.
func BenchmarkEncodePublish60k(b *testing.B) {
	req := publish60k()
	b.ReportAllocs()
	for b.Loop() {
		if len(appendPublishRequest(nil, req)) == 0 {
			b.Fatal("no request written")
		}
	}
}

// BenchmarkPublishReply60k: the client reading the compact reply to a
// publish of 60,000 specs and rebuilding the mappings from it.
func BenchmarkPublishReply60k(b *testing.B) {
	req := publish60k()
	p := PublishedPorts{Endpoint: "web", FirstID: 1, EndpointIP: netip.MustParseAddr("10.88.0.2"), HostPorts: make([]uint16, len(req.Specs))}
	for i := range p.HostPorts {
		p.HostPorts[i] = uint16(20000 + i%30_000)
	}
	body, _ := json.Marshal(p)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var p PublishedPorts
		if !decodePublishedPorts(string(body), &p) {
			b.Fatal("compact reply not read")
		}
		ms, err := p.mappings(req)
		if err != nil || len(ms) != len(req.Specs) {
			b.Fatalf("rebuilt %d mappings: %v", len(ms), err)
		}
	}
}
