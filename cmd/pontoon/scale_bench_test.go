package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// agentCPU is the CPU time the agent has used so far. On a shared
// machine the wall time of a request says more about the neighbours than
// about the agent; agent-ms/op is what the request cost the agent.
func agentCPU(b *testing.B, w *world) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", w.agent.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which may hold spaces: utime and
	// stime are the 12th and 13th.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ticks := 0
	for _, s := range f[11:13] {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("agent stat %q: %v", stat, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// clientCPU is the CPU time this process (the client) has used so far.
func clientCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter sums the agent's and the client's CPU time over the timed
// parts of a benchmark.
type cpuMeter struct {
	b                  *testing.B
	w                  *world
	start, clientStart time.Duration
	total, clientTotal time.Duration
}

// begin starts the benchmark's timer and end stops it, each between the
// meter's two clocks: reading the agent's (its /proc stat file) costs the
// client ~0.05 ms, which was timed, and counted as the request's CPU.
// Benchmarks stop the timer before their loop: only what lies between
// begin and end is timed.
func (m *cpuMeter) begin() {
	m.start = agentCPU(m.b, m.w)
	m.b.StartTimer()
	m.clientStart = clientCPU()
}

func (m *cpuMeter) end() {
	client := clientCPU()
	m.b.StopTimer()
	m.total += agentCPU(m.b, m.w) - m.start
	m.clientTotal += client - m.clientStart
}

func (m *cpuMeter) report() {
	m.b.ReportMetric(float64(m.total.Milliseconds())/float64(m.b.N), "agent-ms/op")
	m.b.ReportMetric(float64(m.clientTotal.Microseconds())/1000/float64(m.b.N), "client-ms/op")
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
	w, c := scaleWorld(b)
	cpu := &cpuMeter{b: b, w: w}
	defer cpu.report()
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		cpu.begin()
		publishAll(b, c, 20000, 10_000, proto)
		cpu.end()
		if n := unpublishAll(b, c, proto); n != 10_000 {
			b.Fatalf("unpublished %d mappings, want 10000", n)
		}
	}
}

// BenchmarkPublish10kTCP: one publish request of 10,000 TCP specs.
func BenchmarkPublish10kTCP(b *testing.B) { benchmarkPublish10k(b, "tcp") }

// BenchmarkPublish10kUDP: one publish request of 10,000 UDP specs.
func BenchmarkPublish10kUDP(b *testing.B) { benchmarkPublish10k(b, "udp") }

// BenchmarkUnpublish30k: one unpublish request removing 30,000 mappings.
func BenchmarkUnpublish30k(b *testing.B) {
	w, c := scaleWorld(b)
	cpu := &cpuMeter{b: b, w: w}
	defer cpu.report()
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		publishAll(b, c, 20000, 30_000, "tcp")
		cpu.begin()
		n := unpublishAll(b, c, "tcp")
		cpu.end()
		if n != 30_000 {
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
			b.StopTimer()
			size := 0
			cpu := &cpuMeter{b: b, w: w}
			defer cpu.report()
			for range b.N {
				cpu.begin()
				resp, err := hc.Get("http://pontoon/v1/ports" + q.query)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				cpu.end()
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
// (untimed) while 10, 250 and 1,000 others exist: the time per create
// should not grow with the count.
func BenchmarkNetworkCreate(b *testing.B) {
	w, c := scaleWorld(b)
	have := 0
	create := func(i int) error {
		_, err := c.CreateNetwork(control.NetworkCreate{Name: fmt.Sprintf("n%d", i), Subnet: fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)})
		return err
	}
	for _, at := range []int{10, 250, 1000} {
		b.Run(fmt.Sprintf("at%d", at), func(b *testing.B) {
			b.StopTimer()
			for ; have < at; have++ {
				if err := create(have); err != nil {
					b.Fatalf("create network %d: %v", have, err)
				}
			}
			cpu := &cpuMeter{b: b, w: w}
			defer cpu.report()
			for i := range b.N {
				cpu.begin()
				err := create(at + 1 + i)
				cpu.end()
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

// specs60k are 30,000 TCP and 30,000 UDP one-port specs, host port =
// container port from 20000: 60,000 ports.
func specs60k() []string {
	return append(specs(20000, 30_000, "tcp"), specs(20000, 30_000, "udp")...)
}

// BenchmarkPublish60k: one publish request of 60,000 ports (issue 16's
// goal: < 200 ms end to end), the client decoding the reply included.
func BenchmarkPublish60k(b *testing.B) {
	w, c := scaleWorld(b)
	cpu := &cpuMeter{b: b, w: w}
	defer cpu.report()
	all := specs60k()
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		cpu.begin()
		ms, err := c.Publish(control.PublishRequest{Endpoint: "c1", Specs: all})
		cpu.end()
		if err != nil {
			b.Fatalf("publish 60,000 specs: %v", err)
		}
		if len(ms) != len(all) {
			b.Fatalf("published %d mappings, want %d", len(ms), len(all))
		}
		if unpublishAll(b, c, "tcp")+unpublishAll(b, c, "udp") != len(all) {
			b.Fatal("unpublish did not remove all 60,000 mappings")
		}
	}
}

// at60k is a world whose endpoint has 60,000 mappings published.
func at60k(b *testing.B) (*world, *control.Client) {
	w, c := scaleWorld(b)
	publishAll(b, c, 20000, 30_000, "tcp")
	publishAll(b, c, 20000, 30_000, "udp")
	return w, c
}

// BenchmarkPublishAt60k: one publish of one port while 60,000 bindings
// exist (goal: < 1 ms end to end); its unpublish is untimed.
func BenchmarkPublishAt60k(b *testing.B) {
	w, c := at60k(b)
	cpu := &cpuMeter{b: b, w: w}
	defer cpu.report()
	one := control.PublishRequest{Endpoint: "c1", Specs: []string{"10000:80/tcp"}}
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		cpu.begin()
		_, err := c.Publish(one)
		cpu.end()
		if err != nil {
			b.Fatalf("publish one port at 60,000: %v", err)
		}
		if _, err := c.Unpublish(control.UnpublishRequest{Endpoint: "c1", Spec: "10000:80/tcp"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnpublishAt60k: one unpublish of one port while 60,000 other
// bindings exist (goal: < 1 ms end to end); its publish is untimed.
func BenchmarkUnpublishAt60k(b *testing.B) {
	w, c := at60k(b)
	cpu := &cpuMeter{b: b, w: w}
	defer cpu.report()
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		if _, err := c.Publish(control.PublishRequest{Endpoint: "c1", Specs: []string{"10000:80/tcp"}}); err != nil {
			b.Fatal(err)
		}
		cpu.begin()
		ms, err := c.Unpublish(control.UnpublishRequest{Endpoint: "c1", Spec: "10000:80/tcp"})
		cpu.end()
		if err != nil || len(ms) != 1 {
			b.Fatalf("unpublish one port at 60,000: %d removed, %v", len(ms), err)
		}
	}
}
