package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/pontoon-net/pontoon/control"
)

// Control-plane scale benchmarks (issue 18): each builds its own world (a
// host namespace running `pontoon agent`, one container) and talks to the
// agent over its socket, so the figures are what a client waits for. Run
// one at a time with -benchtime=1x or a small Nx:
//
//	go test ./cmd/pontoon -run '^$' -bench Publish10kTCP -benchtime=3x

// scaleWorld is a running agent with network "net" and endpoint "c1".
func scaleWorld(b *testing.B) (*world, *control.Client) {
	b.Helper()
	w := newWorld(b, 1)
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/16")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())
	return w, control.NewClient(w.socket)
}

// specs are n one-port specs with host port = container port from first.
func specs(first, n int, proto string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%d:%d/%s", first+i, first+i, proto)
	}
	return out
}

// publishAll publishes n one-port specs from first, in requests of 10,000.
func publishAll(b *testing.B, c *control.Client, first, n int, proto string) {
	b.Helper()
	for done := 0; done < n; done += 10_000 {
		k := min(10_000, n-done)
		if _, err := c.Publish(control.PublishRequest{Endpoint: "c1", Specs: specs(first+done, k, proto)}); err != nil {
			b.Fatalf("publish %d %s specs from %d: %v", k, proto, first+done, err)
		}
	}
}

func unpublishAll(b *testing.B, c *control.Client, proto string) int {
	b.Helper()
	ms, err := c.Unpublish(control.UnpublishRequest{Endpoint: "c1", Spec: "1-65535/" + proto})
	if err != nil {
		b.Fatalf("unpublish every %s mapping: %v", proto, err)
	}
	return len(ms)
}

func benchmarkPublish10k(b *testing.B, proto string) {
	_, c := scaleWorld(b)
	b.ResetTimer()
	for range b.N {
		publishAll(b, c, 20000, 10_000, proto)
		b.StopTimer()
		if n := unpublishAll(b, c, proto); n != 10_000 {
			b.Fatalf("unpublished %d mappings, want 10000", n)
		}
		b.StartTimer()
	}
}

// BenchmarkPublish10kTCP: one publish request of 10,000 TCP specs.
func BenchmarkPublish10kTCP(b *testing.B) { benchmarkPublish10k(b, "tcp") }

// BenchmarkPublish10kUDP: one publish request of 10,000 UDP specs.
func BenchmarkPublish10kUDP(b *testing.B) { benchmarkPublish10k(b, "udp") }

// BenchmarkUnpublish30k: one unpublish request removing 30,000 mappings.
func BenchmarkUnpublish30k(b *testing.B) {
	_, c := scaleWorld(b)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		publishAll(b, c, 20000, 30_000, "tcp")
		b.StartTimer()
		if n := unpublishAll(b, c, "tcp"); n != 30_000 {
			b.Fatalf("unpublished %d mappings, want 30000", n)
		}
	}
}

// BenchmarkPortList60k lists 60,000 mappings: all in one reply, one page
// of 1,000, and a filter matching one mapping. B/reply is the reply size.
func BenchmarkPortList60k(b *testing.B) {
	w, c := scaleWorld(b)
	publishAll(b, c, 20000, 30_000, "tcp")
	publishAll(b, c, 20000, 30_000, "udp")
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", w.socket)
		},
	}}
	for _, q := range []struct{ name, query string }{
		{"all", ""},
		{"page1000", "?limit=1000"},
		{"filter1", "?proto=udp&host_port=35000"},
	} {
		b.Run(q.name, func(b *testing.B) {
			size := 0
			for range b.N {
				resp, err := hc.Get("http://pontoon/v1/ports" + q.query)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("GET /v1/ports%s: %s, %v", q.query, resp.Status, err)
				}
				size = int(n)
			}
			b.ReportMetric(float64(size), "B/reply")
		})
	}
}

// BenchmarkNetworkCreate creates one network (timed) and removes it
// (untimed) while 250, 500 and 1,000 others exist: the time per create
// should not grow with the count.
func BenchmarkNetworkCreate(b *testing.B) {
	_, c := scaleWorld(b)
	have := 0
	create := func(i int) error {
		_, err := c.CreateNetwork(control.NetworkCreate{Name: fmt.Sprintf("n%d", i), Subnet: fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)})
		return err
	}
	for _, at := range []int{250, 500, 1000} {
		b.Run(fmt.Sprintf("at%d", at), func(b *testing.B) {
			b.StopTimer()
			for ; have < at; have++ {
				if err := create(have); err != nil {
					b.Fatalf("create network %d: %v", have, err)
				}
			}
			for i := range b.N {
				b.StartTimer()
				err := create(at + 1 + i)
				b.StopTimer()
				if err != nil {
					b.Fatalf("create network at %d: %v", at, err)
				}
				if err := c.RemoveNetwork(fmt.Sprintf("n%d", at+1+i), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
