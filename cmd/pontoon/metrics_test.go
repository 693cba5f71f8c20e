package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// metricsAddr is where the test agents serve metrics: in the world's own
// host namespace, so no other test's agent shares the port.
const metricsAddr = "127.0.0.1:9669"

// scrapeMetrics fetches /metrics from inside the world's host namespace.
// The request is written by hand on a socket made in the namespace: an
// http.Client would dial from another thread, outside it.
func (w *world) scrapeMetrics() string {
	w.t.Helper()
	var body string
	err := w.host.Do(func() error {
		c, err := net.DialTimeout("tcp4", metricsAddr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: pontoon\r\nAccept: text/plain\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
		}
		body = string(b)
		return err
	})
	if err != nil {
		w.t.Fatalf("scrape %s: %v\nagent log:\n%s", metricsAddr, err, w.agentLog())
	}
	return body
}

func parseScrape(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	return fams
}

// metricValue sums the series of name whose labels include labels (a
// counter's or gauge's value, a histogram's count).
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	sum, found := 0.0, false
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

// TestMetricsAndConntrack: real traffic through a published port moves
// the counters /metrics serves (parsed with the Prometheus text parser,
// lint clean) and `status` shows; the flow shows in `ct ls` with its
// client and backend, and `ct flush --binding` forgets it.
func TestMetricsAndConntrack(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent("--metrics-addr", metricsAddr)
	c1 := w.containers[0]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	var ep control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "net", "c1", "--netns", c1.Path())
	c1.ServeTCP(t, ":80")
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "publish", "c1", "8080:80")
	if len(ms) != 1 {
		t.Fatalf("publish: %+v", ms)
	}
	binding := ms[0].ID
	hostTCP := netip.AddrPortFrom(w.hostIP, 8080).String()

	before := parseScrape(t, w.scrapeMetrics())
	dnatBefore, ok := metricValue(before, "pontoon_datapath_packets_total", map[string]string{"reason": "dnat"})
	if !ok {
		t.Fatal("no pontoon_datapath_packets_total{reason=\"dnat\"} in /metrics")
	}

	// Each dial is a connection: SYN, ACK, the request, FIN and its ACK
	// from the client, at least three of which reach the port.
	const dials = 5
	for range dials {
		res, err := w.outside.Dial("tcp", hostTCP)
		expectEcho(t, res, err, w.outsideIP, hostTCP)
	}
	opened := time.Now()
	conn := w.outside.Connect(t, hostTCP)
	conn.RoundTrip(t, w.outsideIP)
	client := netip.MustParseAddrPort(conn.LocalAddr().String())
	sent := float64(3 * (dials + 1))
	// A drop with a reason: the outside dials the container by its own
	// address, which a default network does not publish.
	w.outside.IP(t, "route", "add", "10.77.0.0/24", "via", w.hostIP.String())
	direct := netip.AddrPortFrom(ep.IP, 80).String()
	if res, err := w.outside.Dial("tcp", direct); err == nil {
		t.Fatalf("outside reached %s, which is not published: %+v", direct, res)
	}

	t.Run("metrics", func(t *testing.T) {
		id := strconv.FormatUint(uint64(binding), 10)
		fams := parseScrape(t, w.scrapeMetrics())
		for _, c := range []struct {
			name   string
			labels map[string]string
			min    float64
		}{
			{"pontoon_datapath_packets_total", map[string]string{"reason": "dnat", "verdict": "other"}, dnatBefore + sent},
			{"pontoon_datapath_bytes_total", map[string]string{"reason": "dnat"}, 40 * sent},
			{"pontoon_datapath_packets_total", map[string]string{"reason": "rnat"}, 2 * (dials + 1)},
			{"pontoon_binding_packets_total", map[string]string{"binding_id": id, "endpoint": "c1", "proto": "tcp", "host": "0.0.0.0:8080", "direction": "in"}, sent},
			{"pontoon_binding_packets_total", map[string]string{"binding_id": id, "direction": "out"}, 2 * (dials + 1)},
			{"pontoon_map_entries", map[string]string{"map": "ct"}, 1},
			{"pontoon_map_entries", map[string]string{"map": "bindings"}, 1},
			{"pontoon_map_entries", map[string]string{"map": "endpoints"}, 1},
			{"pontoon_map_max_entries", map[string]string{"map": "ct"}, 1024},
			{"pontoon_map_max_entries", map[string]string{"map": "snat"}, 1024},
			{"pontoon_datapath_uplinks", nil, 1},
			{"pontoon_reconcile_duration_seconds", map[string]string{"kind": "start"}, 1},
			{"pontoon_api_requests_total", map[string]string{"route": "POST /v1/ports", "code": "200"}, 1},
			{"pontoon_api_request_duration_seconds", map[string]string{"route": "POST /v1/endpoints"}, 1},
		} {
			if got, ok := metricValue(fams, c.name, c.labels); !ok || got < c.min {
				t.Errorf("%s%v = %v (found %t), want at least %v", c.name, c.labels, got, ok, c.min)
			}
		}
		if got, _ := metricValue(fams, "pontoon_datapath_packets_total", map[string]string{"reason": "drop_not_published", "verdict": "drop"}); got < 1 {
			t.Errorf("drop_not_published = %v after a dial to %s, want at least its SYN", got, direct)
		}
		for _, drop := range []string{"drop_ct_full", "drop_spoofed", "drop_icc"} {
			if _, ok := metricValue(fams, "pontoon_datapath_packets_total", map[string]string{"reason": drop, "verdict": "drop"}); !ok {
				t.Errorf("no drop counter %s in /metrics", drop)
			}
		}
	})

	t.Run("status names the counters", func(t *testing.T) {
		text := w.ok("status")
		counter := regexp.MustCompile(`(?m)^counter dnat:\s+[1-9]\d* packets, [1-9]\d* bytes$`)
		drops := regexp.MustCompile(`(?m)^drop drop_not_published:\s+[1-9]\d* packets, [1-9]\d* bytes$`)
		if !counter.MatchString(text) || !drops.MatchString(text) {
			t.Errorf("status text lacks the named counters:\n%s", text)
		}
	})

	var flow *control.ConntrackList
	t.Run("ct ls shows the flow", func(t *testing.T) {
		var l control.ConntrackList
		w.okJSON(&l, "ct", "ls", "--endpoint", "c1")
		flow = &l
		f := findFlow(l, client)
		if f == nil {
			t.Fatalf("no flow from %s in ct ls: %+v", client, l.Flows)
		}
		want := netip.AddrPortFrom(ep.IP, 80)
		if f.Backend != want || f.Dialled.String() != hostTCP || f.BindingID != binding || f.Proto != "tcp" || f.State != "ESTABLISHED" || f.Table != "ct" {
			t.Errorf("flow %+v: want backend %s, dialled %s, binding %d, tcp ESTABLISHED in ct", f, want, hostTCP, binding)
		}
		// Its age counts from the connection's SYN: at least its idle
		// time, at most the time since the test dialled.
		if f.AgeAtLeast || f.AgeSeconds < int64(f.Idle/time.Second) || f.AgeSeconds > int64(time.Since(opened)/time.Second)+1 {
			t.Errorf("flow age %ds (lower bound %v), idle %s: want between idle and %s since the dial", f.AgeSeconds, f.AgeAtLeast, f.Idle, time.Since(opened))
		}
		text := w.ok("ct", "ls")
		var after control.ConntrackList
		w.okJSON(&after, "ct", "ls", "--endpoint", "c1")
		line := ""
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, client.String()) {
				line = l
			}
		}
		if !strings.Contains(line, hostTCP) || !strings.Contains(line, want.String()) || !strings.Contains(line, "ESTABLISHED") {
			t.Errorf("ct ls has no line for %s -> %s -> %s:\n%s", client, hostTCP, want, text)
		}
		// The text shows the age as a duration, between the two listings'.
		ages := []string{}
		if g := findFlow(after, client); g != nil {
			for s := f.AgeSeconds; s <= g.AgeSeconds; s++ {
				ages = append(ages, " "+(time.Duration(s)*time.Second).String()+" ")
			}
		}
		if !strings.Contains(text, " AGE ") || !slices.ContainsFunc(ages, func(a string) bool { return strings.Contains(line, a) }) {
			t.Errorf("ct ls line %q: want an AGE column with one of %q", line, ages)
		}
	})
	if flow == nil {
		t.FailNow()
	}

	t.Run("bad input is refused in one line", func(t *testing.T) {
		for _, args := range [][]string{
			{"ct", "flush", "--binding", "4000000"},
			{"ct", "flush", "--binding", "x"},
			{"ct", "ls", "--endpoint", "nope"},
			{"ct", "ls", "extra"},
		} {
			r := w.pt(args...)
			if r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stderr == "" {
				t.Errorf("pontoon %s: exit %d, stderr %q: want a one-line refusal", strings.Join(args, " "), r.code, r.stderr)
			}
		}
		var l control.ConntrackList
		w.okJSON(&l, "ct", "ls")
		if findFlow(l, client) == nil {
			t.Errorf("a refused command removed the flow: %+v", l.Flows)
		}
	})

	t.Run("ct flush --binding forgets it", func(t *testing.T) {
		var n control.ConntrackFlushed
		w.okJSON(&n, "ct", "flush", "--binding", strconv.FormatUint(uint64(binding), 10))
		if n.Conntrack < 1 {
			t.Errorf("flush deleted %+v, want the flow", n)
		}
		var l control.ConntrackList
		w.okJSON(&l, "ct", "ls")
		for _, f := range l.Flows {
			if f.BindingID == binding {
				t.Errorf("flow of binding %d left after flush: %+v", binding, f)
			}
		}
	})
	t.Run("ct ls shows a masqueraded flow", func(t *testing.T) {
		w.outside.ServeTCP(t, ":7000")
		server := netip.AddrPortFrom(w.outsideIP, 7000)
		conn := c1.Connect(t, server.String())
		conn.RoundTrip(t, w.hostIP)
		container := netip.MustParseAddrPort(conn.LocalAddr().String())
		var l control.ConntrackList
		w.okJSON(&l, "ct", "ls", "--endpoint", "c1")
		var found *maps.SNATView
		for i, f := range l.SNAT {
			if f.Container == container {
				found = &l.SNAT[i]
			}
		}
		if found == nil {
			t.Fatalf("no masqueraded flow from %s in ct ls: %+v", container, l.SNAT)
		}
		if found.Server != server || found.Translated.Addr() != w.hostIP || found.State != "ESTABLISHED" || found.Half != "" || found.Proto != "tcp" {
			t.Errorf("masqueraded flow %+v: want server %s, translated to %s, tcp ESTABLISHED, both halves", found, server, w.hostIP)
		}
	})
	t.Run("ct flush forgets every flow", func(t *testing.T) { flushAll(t, w, hostTCP) })
}

// flushAll is the end of TestMetricsAndConntrack: `ct flush` without a
// binding empties the tables.
func flushAll(t *testing.T, w *world, hostTCP string) {
	conn := w.outside.Connect(t, hostTCP)
	conn.RoundTrip(t, w.outsideIP)
	var n control.ConntrackFlushed
	w.okJSON(&n, "ct", "flush")
	if n.Conntrack < 1 {
		t.Errorf("flush deleted %+v, want at least the open connection", n)
	}
	var l control.ConntrackList
	w.okJSON(&l, "ct", "ls")
	if len(l.Flows) != 0 || len(l.SNAT) != 0 {
		t.Errorf("flows left after ct flush: %+v", l)
	}
}

func findFlow(l control.ConntrackList, client netip.AddrPort) *maps.CTFlow {
	for i := range l.Flows {
		if l.Flows[i].Client == client {
			return &l.Flows[i]
		}
	}
	return nil
}

// TestMetricsAddrRefused: a metrics address beyond loopback is refused in
// one line before the agent does anything; without the flag nothing
// listens.
func TestMetricsAddrRefused(t *testing.T) {
	w := newWorld(t, 0)
	for _, addr := range []string{"0.0.0.0:9669", ":9669", w.hostIP.String() + ":9669"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
		cmd := exec.CommandContext(ctx, "nsenter", "--net="+w.host.Path(), "--", bin, "agent", "--metrics-addr", addr,
			"--state-dir", w.stateDir, "--socket", w.socket, "--bpffs", w.pins, "--cgroup", w.cgroup, "--uplink", w.uplink)
		r := runCmd(t, nil, cmd)
		cancel()
		msg := strings.TrimSpace(r.stderr)
		if r.code == 0 || msg == "" || strings.Contains(msg, "\n") || !strings.Contains(msg, "--metrics-allow-remote") {
			t.Errorf("agent --metrics-addr %s: exit %d, stderr %q: want a one-line refusal naming --metrics-allow-remote", addr, r.code, r.stderr)
		}
		if entries, _ := os.ReadDir(w.stateDir); len(entries) != 0 {
			t.Errorf("agent --metrics-addr %s left %d files in the state directory", addr, len(entries))
		}
	}

	w.startAgent()
	err := w.host.Do(func() error {
		c, err := net.DialTimeout("tcp4", metricsAddr, 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("something listens on %s without --metrics-addr", metricsAddr)
	}
}

// TestTableFillWarning: a SYN flood filling ct_new past 95% gets one
// warning naming the table, once, however many GC passes see it full.
func TestTableFillWarning(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent("--metrics-addr", metricsAddr)
	c1 := w.containers[0]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	c1.ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80")
	for _, p := range testenv.DocumentationRanges {
		w.outside.IP(t, "route", "add", "blackhole", p.String())
	}

	capacity, ok := metricValue(parseScrape(t, w.scrapeMetrics()), "pontoon_map_max_entries", map[string]string{"map": "ct_new"})
	if !ok || capacity < 1 {
		t.Fatalf("no capacity for ct_new in /metrics")
	}
	sent, err := w.outside.FloodSYN(testenv.SYNFlood{
		Dst: netip.AddrPortFrom(w.hostIP, 8080), Sources: testenv.DocumentationRanges,
		Count: int(capacity) * 5 / 4, Limit: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	fams := parseScrape(t, w.scrapeMetrics())
	entries, _ := metricValue(fams, "pontoon_map_entries", map[string]string{"map": "ct_new"})
	if entries < capacity*95/100 {
		t.Fatalf("ct_new holds %v of %v after %d SYNs: the flood did not fill it", entries, capacity, sent.Sent)
	}

	// Two GC passes after the flood: the first warns, the second must not.
	runs := func() float64 {
		v, _ := metricValue(parseScrape(t, w.scrapeMetrics()), "pontoon_conntrack_gc_runs_total", nil)
		return v
	}
	start := runs()
	for deadline := time.Now().Add(time.Minute); runs() < start+2; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) { // a hang guard
			t.Fatalf("the conntrack GC did not run twice in a minute\n%s", w.agentLog())
		}
	}
	var warnings []string
	for _, l := range strings.Split(w.agentLog(), "\n") {
		if strings.Contains(l, "datapath table filling up") && strings.Contains(l, "map=ct_new") {
			warnings = append(warnings, l)
		}
	}
	t.Logf("flood: %d SYNs in %s; ct_new held %v of %v; warnings: %q", sent.Sent, sent.Elapsed.Round(time.Millisecond), entries, capacity, warnings)
	// A GC pass in the middle of the flood may see ct_new between 80% and
	// 95% first: one warning for each threshold, never a repeat.
	count := map[string]int{}
	for _, l := range warnings {
		for _, p := range []string{"passed_percent=80", "passed_percent=95"} {
			if strings.Contains(l, p) && strings.Contains(l, "level=WARN") {
				count[p]++
			}
		}
	}
	if count["passed_percent=95"] != 1 || count["passed_percent=80"] > 1 || len(warnings) != count["passed_percent=95"]+count["passed_percent=80"] {
		t.Errorf("want one warning that ct_new passed 95%% (and at most one for 80%%), got %d:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
}
