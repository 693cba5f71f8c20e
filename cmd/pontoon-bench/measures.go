package main

// measure is one kind of client run and the numbers it yields.
type measure struct {
	id      string // in JSON and --measures
	label   string
	kind    string // the client subcommand's --measure
	svc     service
	metrics []metric
}

type metric struct {
	id     string
	label  string
	unit   string
	higher bool // higher is better
	// table: shown in the markdown table; every metric is in the JSON.
	table bool
	get   func(loadResult) float64
}

var (
	gbits = metric{"gbit_s", "Gbit/s", "Gbit/s", true, true, func(r loadResult) float64 {
		return float64(r.Bytes) * 8 / r.Seconds / 1e9
	}}
	opsRate = metric{"ops_s", "ops/s", "ops/s", true, true, func(r loadResult) float64 {
		return float64(r.Ops) / r.Seconds
	}}
	p50 = metric{"p50_us", "p50", "µs", false, true, func(r loadResult) float64 { return r.P50us }}
	p99 = metric{"p99_us", "p99", "µs", false, true, func(r loadResult) float64 { return r.P99us }}
)

func hidden(m metric) metric { m.table = false; return m }

var allMeasures = []measure{
	{"tcp_stream", "TCP stream", "stream", sinkTCP, []metric{gbits}},
	{"tcp_rr", "TCP request/response", "rr", echoTCP, []metric{opsRate, p50, p99}},
	{"tcp_crr", "TCP connect/request/close", "crr", echoTCP, []metric{opsRate, hidden(p50), hidden(p99)}},
	{"udp_rr", "UDP request/response", "udp-rr", echoUDP, []metric{opsRate, p50, p99}},
}

var crrMeasure = allMeasures[2]
