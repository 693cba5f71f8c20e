package control

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// durationBuckets span an API call answered from memory (well under a
// millisecond) to a reconcile of thousands of endpoints (tens of seconds).
var durationBuckets = prometheus.ExponentialBuckets(0.0005, 4, 9)

// agentMetrics are what the agent itself measures; the datapath's counters
// and map fill levels are read from the maps on each scrape (datapathCollector).
// A nil *agentMetrics measures nothing, for agents built by unit tests.
type agentMetrics struct {
	reg         *prometheus.Registry
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
	gcRuns      prometheus.Counter
	gcDuration  prometheus.Histogram
	gcDeleted   *prometheus.CounterVec
	gcErrors    *prometheus.CounterVec
	reconcile   *prometheus.HistogramVec
}

func newMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pontoon_api_requests_total",
			Help: "API requests answered, by route (method and path pattern) and HTTP status code.",
		}, []string{"route", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pontoon_api_request_duration_seconds",
			Help:    "Time to answer an API request, by route and HTTP status code.",
			Buckets: durationBuckets,
		}, []string{"route", "code"}),
		gcRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pontoon_conntrack_gc_runs_total",
			Help: "Passes of the conntrack garbage collector over ct, ct_new and snat.",
		}),
		gcDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pontoon_conntrack_gc_duration_seconds",
			Help:    "Time one pass of the conntrack garbage collector took.",
			Buckets: durationBuckets,
		}),
		gcDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pontoon_conntrack_gc_deleted_entries_total",
			Help: "Idle entries the conntrack garbage collector deleted, by table (conntrack: ct and ct_new; snat).",
		}, []string{"table"}),
		gcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pontoon_conntrack_gc_errors_total",
			Help: "Garbage collector passes over a table that failed, by table.",
		}, []string{"table"}),
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pontoon_reconcile_duration_seconds",
			Help:    "Time to make the kernel match the state: kind start is the full reconcile before ready, resync the periodic and event-driven ones.",
			Buckets: durationBuckets,
		}, []string{"kind"}),
	}
	m.reg.MustRegister(m.apiRequests, m.apiDuration, m.gcRuns, m.gcDuration, m.gcDeleted, m.gcErrors, m.reconcile,
		&datapathCollector{a: a},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, t := range []string{"conntrack", "snat"} {
		m.gcDeleted.WithLabelValues(t)
		m.gcErrors.WithLabelValues(t)
	}
	return m
}

// handler serves the registry in the Prometheus exposition formats. A map
// that cannot be read costs its own series, not the scrape.
func (m *agentMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "pontoon serves GET /metrics here", http.StatusNotFound)
	})
	return mux
}

// instrument counts and times the API's requests. The route label is the
// pattern that matched (ServeMux sets it on the request), so paths with
// names in them do not make a series each.
func (m *agentMetrics) instrument(next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		code := strconv.Itoa(rec.code)
		m.apiRequests.WithLabelValues(route, code).Inc()
		m.apiDuration.WithLabelValues(route, code).Observe(time.Since(start).Seconds())
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code    int
	written bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.written {
		s.code, s.written = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.written = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (m *agentMetrics) observeReconcile(kind string, start time.Time) {
	if m != nil {
		m.reconcile.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	}
}

// observeGC records one collector pass; a negative count is a failed table.
func (m *agentMetrics) observeGC(start time.Time, ctDeleted, snatDeleted int) {
	if m == nil {
		return
	}
	m.gcRuns.Inc()
	m.gcDuration.Observe(time.Since(start).Seconds())
	for table, n := range map[string]int{"conntrack": ctDeleted, "snat": snatDeleted} {
		if n < 0 {
			m.gcErrors.WithLabelValues(table).Inc()
			continue
		}
		m.gcDeleted.WithLabelValues(table).Add(float64(n))
	}
}

// datapathCollector reads the datapath's state on each scrape: the stats
// counters, how full the tables are and how the uplinks are attached.
type datapathCollector struct{ a *Agent }

var bindingLabels = []string{"binding_id", "endpoint", "proto", "host", "direction"}

var (
	packetsDesc = prometheus.NewDesc("pontoon_datapath_packets_total",
		"Packets the datapath counted, by reason (the stats map's names, as in 'pontoon status') and verdict: drop, pass (left to the stack untouched) or other (translated, redirected, socket hook events).",
		[]string{"reason", "verdict"}, nil)
	bytesDesc = prometheus.NewDesc("pontoon_datapath_bytes_total",
		"Bytes of the packets in pontoon_datapath_packets_total, by reason and verdict.",
		[]string{"reason", "verdict"}, nil)
	mapEntriesDesc = prometheus.NewDesc("pontoon_map_entries",
		"Entries in a datapath table.", []string{"map"}, nil)
	mapMaxDesc = prometheus.NewDesc("pontoon_map_max_entries",
		"Capacity of a datapath table (its max_entries).", []string{"map"}, nil)
	bindingPacketsDesc = prometheus.NewDesc("pontoon_binding_packets_total",
		"Packets a published port mapping carried, by binding id (binding_id in 'pontoon port ls -o json'), endpoint, protocol, host address and ports, and direction: in (to the container) or out (its replies). GSO packets count as the segments they carry.",
		bindingLabels, nil)
	bindingBytesDesc = prometheus.NewDesc("pontoon_binding_bytes_total",
		"Bytes of the packets in pontoon_binding_packets_total.",
		bindingLabels, nil)
	monitorClientsDesc = prometheus.NewDesc("pontoon_monitor_clients",
		"'pontoon monitor' clients connected; the datapath writes events only while there is one.", nil, nil)
	eventsLostDesc = prometheus.NewDesc("pontoon_monitor_events_lost_total",
		"Datapath events not written, by cause: budget (over 1,000 per CPU and second) or ring_full (the agent read too slowly).",
		[]string{"cause"}, nil)
	uplinksDesc = prometheus.NewDesc("pontoon_datapath_uplinks",
		"Uplinks the datapath programs are attached to, by attach mode (tcx, or legacy-tc on kernels without TCX).",
		[]string{"mode"}, nil)
)

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, bindingPacketsDesc, bindingBytesDesc, mapEntriesDesc, mapMaxDesc, uplinksDesc, monitorClientsDesc, eventsLostDesc} {
		ch <- d
	}
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	counters, err := maps.NewStats(a.dp.Maps.Stats).Read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
	}
	for name, n := range counters {
		v := StatVerdict(name)
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(n.Packets), name, v)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n.Bytes), name, v)
	}
	for _, t := range a.tables() {
		ch <- prometheus.MustNewConstMetric(mapMaxDesc, prometheus.GaugeValue, float64(t.m.MaxEntries()), t.name)
		n, err := maps.CountEntries(t.m)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(mapEntriesDesc, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(mapEntriesDesc, prometheus.GaugeValue, float64(n), t.name)
	}
	c.collectBindings(ch)
	ch <- prometheus.MustNewConstMetric(monitorClientsDesc, prometheus.GaugeValue, float64(a.events.listeners.Load()))
	if a.dp.Maps.EventBudget != nil {
		if l, err := maps.ReadEventLosses(a.dp.Maps.EventBudget); err != nil {
			ch <- prometheus.NewInvalidMetric(eventsLostDesc, err)
		} else {
			ch <- prometheus.MustNewConstMetric(eventsLostDesc, prometheus.CounterValue, float64(l.Suppressed), "budget")
			ch <- prometheus.MustNewConstMetric(eventsLostDesc, prometheus.CounterValue, float64(l.RingFull), "ring_full")
		}
	}
	modes := map[string]int{string(loader.TCX): 0, string(loader.LegacyTC): 0}
	a.mu.Lock()
	for _, u := range a.uplinks {
		modes[u.Mode]++
	}
	a.mu.Unlock()
	for mode, n := range modes {
		ch <- prometheus.MustNewConstMetric(uplinksDesc, prometheus.GaugeValue, float64(n), mode)
	}
}

// collectBindings serves the traffic of each port mapping the records
// hold; counters of bindings no record explains (yet) are left out.
func (c *datapathCollector) collectBindings(ch chan<- prometheus.Metric) {
	a := c.a
	if a.dp.Maps.BindingStats == nil {
		return
	}
	counts, err := maps.NewBindingStats(a.dp.Maps.BindingStats).All()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(bindingPacketsDesc, err)
		return
	}
	type mapping struct{ endpoint, proto, host string }
	byID := map[uint32]mapping{}
	a.mu.Lock()
	for _, m := range a.st.ports {
		host := netip.AddrPortFrom(m.HostIP, m.Host.First).String()
		if m.Host.Last != m.Host.First {
			host += "-" + strconv.Itoa(int(m.Host.Last))
		}
		byID[m.ID] = mapping{m.Endpoint, m.Proto, host}
	}
	a.mu.Unlock()
	for id, n := range counts {
		m, ok := byID[id]
		if !ok {
			continue
		}
		labels := []string{strconv.FormatUint(uint64(id), 10), m.endpoint, m.proto, m.host}
		ch <- prometheus.MustNewConstMetric(bindingPacketsDesc, prometheus.CounterValue, float64(n.PacketsIn), append(labels, "in")...)
		ch <- prometheus.MustNewConstMetric(bindingBytesDesc, prometheus.CounterValue, float64(n.BytesIn), append(labels, "in")...)
		ch <- prometheus.MustNewConstMetric(bindingPacketsDesc, prometheus.CounterValue, float64(n.PacketsOut), append(labels, "out")...)
		ch <- prometheus.MustNewConstMetric(bindingBytesDesc, prometheus.CounterValue, float64(n.BytesOut), append(labels, "out")...)
	}
}

// StatVerdict is "drop", "pass" (left to the stack untouched) or "other"
// for a stats counter name, told by the prefixes bpf/lib/types.h keeps.
func StatVerdict(name string) string {
	switch {
	case strings.HasPrefix(name, "drop_"):
		return "drop"
	case strings.HasPrefix(name, "pass_"):
		return "pass"
	}
	return "other"
}

type table struct {
	name string
	m    *ebpf.Map
}

// tables are the datapath maps whose fill is watched: the ones that
// refuse (or, for ct_new, evict) when full.
func (a *Agent) tables() []table {
	return []table{
		{"ct", a.dp.Maps.CT}, {"ct_new", a.dp.Maps.CTNew}, {"snat", a.dp.Maps.SNAT},
		{"bindings", a.dp.Maps.Bindings}, {"endpoints", a.dp.Maps.Endpoints},
	}
}

// checkMetricsAddr refuses what would publish the metrics beyond the host
// unless allowRemote: they name every published port and flow count.
func checkMetricsAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("invalid --metrics-addr %q: give HOST:PORT, such as 127.0.0.1:9669", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("invalid --metrics-addr %q: the port must be a number from 0 to 65535, such as 127.0.0.1:9669", addr)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		what := "a non-loopback address"
		switch {
		case host == "" || ip.IsUnspecified():
			what = "every address"
		case err != nil:
			what = "a name, not a loopback address"
		}
		return fmt.Errorf("--metrics-addr %s is %s: metrics would be served to the network; use 127.0.0.1:%s, or add --metrics-allow-remote to mean it", addr, what, port)
	}
	return nil
}

// listenMetrics opens the metrics address (checked by checkMetricsAddr)
// before anything is changed, so a port in use stops the agent while it
// has done nothing.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // drop net's own "listen tcp ADDR:" prefix
		}
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	return ln, nil
}
