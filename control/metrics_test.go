package control

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

func TestCheckMetricsAddr(t *testing.T) {
	for _, c := range []struct {
		addr   string
		remote bool
		err    string
	}{
		{"127.0.0.1:9669", false, ""},
		{"127.0.0.2:9669", false, ""},
		{"[::1]:9669", false, ""},
		{"localhost:9669", false, ""},
		{"0.0.0.0:9669", false, "is every address"},
		{"[::]:9669", false, "is every address"},
		{":9669", false, "is every address"},
		{"198.19.0.1:9669", false, "add --metrics-allow-remote"},
		{"example.com:9669", false, "a name, not a loopback address"},
		{"0.0.0.0:9669", true, ""},
		{"127.0.0.1", false, "give HOST:PORT"},
		{"127.0.0.1:http", false, "the port must be a number"},
		{"127.0.0.1:70000", true, "the port must be a number"},
	} {
		err := checkMetricsAddr(c.addr, c.remote)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s (remote %t): %v", c.addr, c.remote, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s (remote %t): error %v, want one mentioning %q", c.addr, c.remote, err, c.err)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error is not one line: %q", c.addr, err)
		}
	}
}

// TestFillWarner: each threshold warns once on the way up, a jump past
// both warns once naming the higher, and a threshold warns again only
// after the fill fell 5 points below it.
func TestFillWarner(t *testing.T) {
	var w fillWarner
	type step struct {
		entries int
		want    string // "" for nothing logged, "up 80", "down 95"...
	}
	fill := func(name string, n int) maps.Fill { return maps.Fill{Name: name, Entries: n, Capacity: 1000} }
	say := func(c fillChange, ok bool) string {
		switch {
		case !ok:
			return ""
		case c.Up:
			return "up " + strconv.FormatFloat(c.Threshold, 'f', -1, 64)
		}
		return "down " + strconv.FormatFloat(c.Threshold, 'f', -1, 64)
	}
	for i, s := range []step{
		{100, ""}, {799, ""}, {800, "up 80"}, {900, ""}, {790, ""}, {760, ""},
		{749, "down 80"}, {810, "up 80"}, {950, "up 95"}, {999, ""}, {1000, ""},
		{920, ""}, {899, "down 95"}, {960, "up 95"}, {10, "down 80"}, {10, ""}, {970, "up 95"}, {960, ""},
	} {
		if got := say(w.update(fill("ct", s.entries))); got != s.want {
			t.Errorf("step %d, %d/1000: logged %q, want %q", i, s.entries, got, s.want)
		}
	}
	// Tables are tracked apart; an empty capacity never warns.
	if got := say(w.update(fill("snat", 850))); got != "up 80" {
		t.Errorf("snat at 85%%: logged %q, want up 80", got)
	}
	if got := say(w.update(maps.Fill{Name: "bindings", Entries: 5})); got != "" {
		t.Errorf("zero capacity: logged %q", got)
	}
}

// TestInstrument: requests are counted by the pattern that matched and
// the status written, 200 when the handler wrote none.
func TestInstrument(t *testing.T) {
	m := newMetrics(&Agent{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "missing" {
			http.Error(w, "no such network", http.StatusNotFound)
			return
		}
		io.WriteString(w, "{}")
	})
	h := m.instrument(mux)
	for _, p := range []string{"/v1/networks/a", "/v1/networks/b", "/v1/networks/missing", "/nowhere"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"GET /v1/networks/{name}", "200", 2},
		{"GET /v1/networks/{name}", "404", 1},
		{"unmatched", "404", 1},
	} {
		if got := testutil.ToFloat64(m.apiRequests.WithLabelValues(c.route, c.code)); got != c.want {
			t.Errorf("requests{route=%q,code=%s} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.apiDuration); n != 3 {
		t.Errorf("%d latency series, want 3", n)
	}
	var nilMetrics *agentMetrics
	if nilMetrics.instrument(mux) == nil {
		t.Error("nil metrics lost the handler")
	}
}

func newMapOf(t *testing.T, typ ebpf.MapType, key, value any, max uint32) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: typ, KeySize: uint32(binary.Size(key)), ValueSize: uint32(binary.Size(value)), MaxEntries: max})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps, run 'sudo make test': %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// conntrackAgent is an agent with the tables metrics and conntrack read,
// as real unpinned maps, and one endpoint at 10.88.0.2.
func conntrackAgent(t *testing.T) *Agent {
	t.Helper()
	a := testAgent(t)
	a.dp.Maps.CT = newMapOf(t, ebpf.Hash, maps.CTKey{}, maps.CTValue{}, 100)
	a.dp.Maps.CTNew = newMapOf(t, ebpf.LRUHash, maps.CTKey{}, maps.CTValue{}, 50)
	a.dp.Maps.SNAT = newMapOf(t, ebpf.Hash, maps.CTKey{}, maps.SNATValue{}, 100)
	a.dp.Maps.Endpoints = newMapOf(t, ebpf.Hash, maps.EndpointKey{}, maps.EndpointValue{}, 10)
	a.dp.Maps.Bindings = newMapOf(t, ebpf.Hash, maps.BindingKey{}, maps.BindingValue{}, 1000)
	a.dp.Maps.Stats = newMapOf(t, ebpf.PerCPUArray, uint32(0), maps.Counter{}, uint32(len(maps.StatNames)))
	a.dp.Maps.BindingStats = newDatapathMap(t, "binding_stats")
	a.bindings = maps.NewBindings(a.dp.Maps.Bindings)
	a.writer = a.bindings
	a.uplinks = map[int]Uplink{2: {Name: "eth0", Mode: string(loader.TCX)}}
	a.metrics = newMetrics(a)
	return a
}

// be is a port as the datapath stores it.
func be(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func raw4(a netip.Addr) (r [16]byte) {
	v := a.As4()
	copy(r[:], v[:])
	return r
}

// putDNAT tracks a connection client -> dialled -> backend in m, keyed by
// its reply as the datapath keys it.
func putDNAT(t *testing.T, m *ebpf.Map, client, dialled, backend netip.AddrPort, binding uint32) {
	t.Helper()
	k := maps.CTKey{Family: 2, Proto: maps.TCP, Sport: be(backend.Port()), Dport: be(client.Port()), Saddr: raw4(backend.Addr()), Daddr: raw4(client.Addr())}
	v := maps.CTValue{NatAddr: raw4(dialled.Addr()), NatPort: be(dialled.Port()), Flags: maps.CTDNATReply,
		TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished, BindingID: binding, LastSeenNs: uint64(maps.MonotonicNow())}
	if err := m.Put(k, v); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsScrape: /metrics parses with the Prometheus text parser,
// lints clean, names every stats counter and reads the tables' fill.
func TestMetricsScrape(t *testing.T) {
	a := conntrackAgent(t)
	ap := netip.MustParseAddrPort
	putDNAT(t, a.dp.Maps.CT, ap("198.19.0.2:50000"), ap("198.19.0.1:8080"), ap("10.88.0.2:80"), 1)
	putDNAT(t, a.dp.Maps.CT, ap("198.19.0.2:50001"), ap("198.19.0.1:8080"), ap("10.88.0.2:80"), 1)
	putDNAT(t, a.dp.Maps.CTNew, ap("198.19.0.3:50000"), ap("198.19.0.1:8080"), ap("10.88.0.2:80"), 1)
	perCPU := make([]maps.Counter, ebpf.MustPossibleCPU())
	perCPU[0] = maps.Counter{Packets: 3, Bytes: 180}
	if err := a.dp.Maps.Stats.Put(uint32(6), perCPU); err != nil { // dnat
		t.Fatal(err)
	}
	a.st.ports["tcp/0.0.0.0/8080"] = &PortMapping{Endpoint: "web", Proto: "tcp", HostIP: netip.IPv4Unspecified(),
		Host: ipam.PortRange{First: 8080, Last: 8089}, ID: 1}
	traffic := maps.BindingCounter{PacketsIn: 7, BytesIn: 700, PacketsOut: 5, BytesOut: 500}
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Put(1, traffic); err != nil {
		t.Fatal(err)
	}
	// Counters no record explains are left out.
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Put(2, traffic); err != nil {
		t.Fatal(err)
	}
	a.metrics.observeGC(time.Now(), 4, -1)
	a.metrics.observeReconcile("start", time.Now())
	a.routes().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/networks", nil))

	body := scrape(t, a.metrics.handler())
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	fams := parseMetrics(t, body)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pontoon_datapath_packets_total", map[string]string{"reason": "dnat", "verdict": "other"}, 3},
		{"pontoon_datapath_bytes_total", map[string]string{"reason": "dnat", "verdict": "other"}, 180},
		{"pontoon_datapath_packets_total", map[string]string{"reason": "drop_icc", "verdict": "drop"}, 0},
		{"pontoon_datapath_packets_total", map[string]string{"reason": "pass_no_match", "verdict": "pass"}, 0},
		{"pontoon_binding_packets_total", map[string]string{"binding_id": "1", "endpoint": "web", "proto": "tcp", "host": "0.0.0.0:8080-8089", "direction": "in"}, 7},
		{"pontoon_binding_bytes_total", map[string]string{"binding_id": "1", "direction": "out"}, 500},
		{"pontoon_map_entries", map[string]string{"map": "ct"}, 2},
		{"pontoon_map_entries", map[string]string{"map": "ct_new"}, 1},
		{"pontoon_map_entries", map[string]string{"map": "snat"}, 0},
		{"pontoon_map_max_entries", map[string]string{"map": "ct"}, 100},
		{"pontoon_map_max_entries", map[string]string{"map": "bindings"}, 1000},
		{"pontoon_datapath_uplinks", map[string]string{"mode": "tcx"}, 1},
		{"pontoon_datapath_uplinks", map[string]string{"mode": "legacy-tc"}, 0},
		{"pontoon_conntrack_gc_runs_total", nil, 1},
		{"pontoon_conntrack_gc_deleted_entries_total", map[string]string{"table": "conntrack"}, 4},
		{"pontoon_conntrack_gc_errors_total", map[string]string{"table": "snat"}, 1},
		{"pontoon_api_requests_total", map[string]string{"route": "GET /v1/networks", "code": "200"}, 1},
	} {
		if got, ok := sample(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %t), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if got := countSeries(fams, "pontoon_binding_packets_total"); got != 2 {
		t.Errorf("%d binding packet counters, want binding 1's in and out", got)
	}
	if got := countSeries(fams, "pontoon_datapath_packets_total"); got != len(maps.StatNames) {
		t.Errorf("%d packet counters, want one per stat name (%d)", got, len(maps.StatNames))
	}
	for _, n := range []string{"pontoon_reconcile_duration_seconds", "pontoon_conntrack_gc_duration_seconds", "pontoon_api_request_duration_seconds"} {
		if f := fams[n]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s: not a histogram: %v", n, f)
		}
	}
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func parseMetrics(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// sample is the value of the series of name with labels (a counter's or
// gauge's).
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
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
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func countSeries(fams map[string]*dto.MetricFamily, name string) int {
	if f := fams[name]; f != nil {
		return len(f.GetMetric())
	}
	return 0
}

// TestConntrackListAndFlush: flows decode, filter by endpoint, and flush
// by binding; an unknown binding or endpoint is refused and changes
// nothing.
func TestConntrackListAndFlush(t *testing.T) {
	a := conntrackAgent(t)
	ap := netip.MustParseAddrPort
	a.st.ports["tcp/0.0.0.0/8080"] = &PortMapping{Endpoint: "web", ID: 1}
	putDNAT(t, a.dp.Maps.CT, ap("198.19.0.2:50000"), ap("198.19.0.1:8080"), ap("10.88.0.2:80"), 1)
	putDNAT(t, a.dp.Maps.CTNew, ap("198.19.0.3:50000"), ap("198.19.0.1:9090"), ap("10.88.0.3:80"), 2)

	l, err := a.Conntrack("")
	if err != nil || len(l.Flows) != 2 {
		t.Fatalf("list: %+v %v", l, err)
	}
	l, err = a.Conntrack("web")
	if err != nil || len(l.Flows) != 1 {
		t.Fatalf("list --endpoint web: %+v %v", l, err)
	}
	if f := l.Flows[0]; f.Client != ap("198.19.0.2:50000") || f.Dialled != ap("198.19.0.1:8080") || f.Backend != ap("10.88.0.2:80") ||
		f.BindingID != 1 || f.Table != "ct" || f.State != "ESTABLISHED" || f.Proto != "tcp" {
		t.Errorf("flow: %+v", f)
	}
	if _, err := a.Conntrack("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown endpoint: %v", err)
	}

	id := uint32(99)
	if _, err := a.FlushConntrack(ConntrackFlush{BindingID: &id}); !errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), "\n") {
		t.Errorf("flush of an unknown binding: %v", err)
	}
	id = 1
	if n, err := a.FlushConntrack(ConntrackFlush{BindingID: &id}); err != nil || n.Conntrack != 1 {
		t.Errorf("flush binding 1: %+v %v", n, err)
	}
	if l, _ := a.Conntrack(""); len(l.Flows) != 1 || l.Flows[0].BindingID != 2 {
		t.Errorf("after flushing binding 1: %+v", l.Flows)
	}
	// A published binding without flows flushes nothing, without error.
	if n, err := a.FlushConntrack(ConntrackFlush{BindingID: &id}); err != nil || n.Conntrack != 0 {
		t.Errorf("second flush of binding 1: %+v %v", n, err)
	}
	if n, err := a.FlushConntrack(ConntrackFlush{}); err != nil || n.Conntrack != 1 {
		t.Errorf("flush all: %+v %v", n, err)
	}
	if l, _ := a.Conntrack(""); len(l.Flows) != 0 {
		t.Errorf("after flushing all: %+v", l.Flows)
	}
}

// TestListenMetricsInUse: a metrics port already taken is one line naming
// the address, before the agent changes anything.
func TestListenMetricsInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ln, err := listenMetrics(taken.Addr().String())
	if err == nil {
		ln.Close()
		t.Fatalf("listened on %s twice", taken.Addr())
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "listen for metrics on "+taken.Addr().String()+": ") || !strings.Contains(msg, "address already in use") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming the address and the cause", msg)
	}
	if ln, err := listenMetrics(""); ln != nil || err != nil {
		t.Errorf("no address: listener %v, error %v; want neither", ln, err)
	}
}
