package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/pontoon-net/pontoon/loader"
)

// options are the run's knobs; presets fill them for --quick and full.
type options struct {
	id        string // names this run's namespaces, pins and cgroup; random when empty
	quick     bool
	runs      int
	duration  time.Duration
	scaleNs   []int
	scaleRuns int
	proxyMaxN int
	datapaths []string
	clients   []string
	measures  []string
	mdPath    string
	jsonPath  string
	cacheDir  string
	proxyBin  string
	iptables  string
	legacyTC  bool
	noMatrix  bool
	noMicro   bool
	// Bulk rows: rounds (0 skips them), MiB per transfer, the bound on
	// one transfer, and which rows (empty for all).
	bulkRuns  int
	bulkMiB   int
	bulkLimit time.Duration
	bulkRows  []string
	// fillerAddr is the host address rule-scaling fillers are published
	// on; the unspecified address publishes them on all.
	fillerAddr netip.Addr
}

var allDatapaths = []string{"direct", "iptables", "docker-proxy", "pontoon", "pontoon-stack", "pontoon-xdp"}

// bulkOnly are datapaths measured in the bulk rows alone: Pontoon with
// stack forwarding differs from the default only in how translated
// packets are forwarded, which the bulk rows show, and the connect-rate
// matrix and rule scaling would take a quarter longer with it.
var bulkOnly = map[string]bool{"pontoon-stack": true}

// matrixDPs are the datapaths of the connect-rate matrix and scaling.
func matrixDPs(dps []datapath) []datapath {
	var out []datapath
	for _, dp := range dps {
		if !bulkOnly[dp.name()] {
			out = append(out, dp)
		}
	}
	return out
}

func newID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func runBench(ctx context.Context, o options) (res *results, err error) {
	start := time.Now()
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the bench builds network namespaces and loads BPF: run it as root")
	}
	if err := cleanStale(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "pontoon-bench: clean up earlier runs: %v\n", err)
	}
	id := o.id
	if id == "" {
		id = newID()
	}
	unlock, err := lockRun(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cl := &cleanups{}
	defer cl.run()
	res = &results{Sys: collectSysInfo(ctx, o.iptables)}
	res.Config = runConfig{Mode: "full", Runs: o.runs, Duration: o.duration.String(), ScaleNs: o.scaleNs, ScaleRuns: o.scaleRuns, Datapaths: o.datapaths, Nice: childNice}
	if o.bulkRuns > 0 {
		res.Config.BulkRuns, res.Config.BulkMiB, res.Config.BulkLimit = o.bulkRuns, o.bulkMiB, o.bulkLimit.String()
	}
	if o.quick {
		res.Config.Mode = "quick"
	}
	exe, err := self()
	if err != nil {
		return nil, err
	}

	var dps []datapath
	for _, name := range o.datapaths {
		if !slices.Contains(allDatapaths, name) {
			return nil, fmt.Errorf("unknown datapath %q: use %v", name, allDatapaths)
		}
		if bulkOnly[name] && o.bulkRuns == 0 {
			continue
		}
		w, err := newWorld(ctx, cl, worldPrefixOf(id)+"-"+name)
		if err != nil {
			return nil, fmt.Errorf("build %s world: %w", name, err)
		}
		srv, err := startReady(w.container, 10*time.Second, os.Stderr, exe, "serve",
			"--tcp-echo", fmt.Sprintf(":%d", echoTCP.containerPort),
			"--tcp-sink", fmt.Sprintf(":%d", sinkTCP.containerPort),
			"--udp-echo", fmt.Sprintf(":%d", echoUDP.containerPort),
			"--tcp-bulk", fmt.Sprintf(":%d", bulkTCP.containerPort),
			"--ready-fd", "3")
		if err != nil {
			return nil, fmt.Errorf("start %s server: %w", name, err)
		}
		cl.add(name+" server", func() error { return srv.stop(syscall.SIGTERM) })
		// The outside server of the masquerade rows.
		outSrv, err := startReady(w.outside, 10*time.Second, os.Stderr, exe, "serve",
			"--tcp-echo", "", "--tcp-sink", "", "--udp-echo", "",
			"--tcp-bulk", fmt.Sprintf(":%d", bulkTCP.containerPort),
			"--ready-fd", "3")
		if err != nil {
			return nil, fmt.Errorf("start %s outside server: %w", name, err)
		}
		cl.add(name+" outside server", func() error { return outSrv.stop(syscall.SIGTERM) })
		var dp datapath
		switch name {
		case "direct":
			dp = &direct{w: w}
		case "iptables":
			dp = &iptablesDP{w: w, iptables: o.iptables}
		case "docker-proxy":
			bin, err := findDockerProxy(ctx, o.proxyBin, o.cacheDir)
			if err != nil {
				return nil, err
			}
			res.Sys.DockerProxy = bin.Package
			res.Config.DockerProxy = bin.Path
			dp = &dockerProxyDP{w: w, bin: bin.Path, limit: o.proxyMaxN}
		case "pontoon", "pontoon-stack", "pontoon-xdp":
			cg, err := newCgroup(cl, cgroupNameOf(id)+pontoonSuffix(name))
			if err != nil {
				return nil, err
			}
			dp = &pontoonDP{w: w, cg: cg, pinDir: pinDirOf(id) + pontoonSuffix(name), legacyTC: o.legacyTC, stack: name == "pontoon-stack"}
			if name == "pontoon-xdp" {
				dp.(*pontoonDP).xdp = loader.XDPNative
			}
		default:
			return nil, fmt.Errorf("unknown datapath %q: use %v", name, allDatapaths)
		}
		if err := dp.setup(ctx, cl); err != nil {
			return nil, fmt.Errorf("set up %s: %w", name, err)
		}
		dps = append(dps, dp)
	}
	if p, ok := findDP[*pontoonDP](dps); ok {
		res.Sys.TCMode = tcModeOf(p)
	}

	if !o.noMatrix {
		if err := runMatrix(ctx, o, matrixDPs(dps), res); err != nil {
			return res, err
		}
	}
	// Bulk before scaling: scaling leaves only the ports it measures
	// published.
	if o.bulkRuns > 0 {
		if err := runBulk(ctx, o, dps, res); err != nil {
			return res, err
		}
	}
	if len(o.scaleNs) > 0 {
		if err := runScaling(ctx, o, matrixDPs(dps), res); err != nil {
			return res, err
		}
	}
	// Last: the benchmarks start agents and load programs of their own,
	// and should not share the machine with the worlds' servers' warm-up.
	if !o.noMicro {
		if err := runMicro(ctx, o, res); err != nil {
			return res, err
		}
	}
	res.Goals = evaluateGoals(res)
	res.Sys.LoadAfter = loadAverage()
	res.Config.Elapsed = time.Since(start).Round(time.Second).String()
	return res, nil
}

func findDP[T datapath](dps []datapath) (T, bool) {
	for _, dp := range dps {
		if t, ok := dp.(T); ok {
			return t, true
		}
	}
	var zero T
	return zero, false
}

func tcModeOf(p *pontoonDP) string {
	atts, err := loader.ListAttachments(p.pinDir)
	if err != nil || len(atts) == 0 {
		return ""
	}
	for _, a := range atts {
		if a.Kind != "cgroup" {
			return a.Kind
		}
	}
	return ""
}

// measureOnce runs one client and returns its result.
func measureOnce(ctx context.Context, dp datapath, c clientKind, m measure, d time.Duration) (loadResult, error) {
	ns := dp.world().host
	if c.outside() {
		ns = dp.world().outside
	}
	addr := dp.target(c, m.svc).String()
	var r loadResult
	err := helper(ctx, ns, dp.clientCgroup(c), d+30*time.Second, &r,
		"client", "--measure", m.kind, "--addr", addr, "--duration", d.String())
	if err != nil {
		return r, fmt.Errorf("%s %s via %s: %w", dp.name(), m.id, c, err)
	}
	return r, nil
}

// round is one run of every datapath, back to back.
type round map[string]*loadResult

// runMatrix measures every client × measure × datapath in rounds: each
// round runs every datapath once, in an order that rotates from round to
// round. A ratio to direct is the median of the per-round ratios, so a
// machine whose speed drifts or jumps (other jobs, a VM's neighbours)
// moves both sides of each ratio alike.
func runMatrix(ctx context.Context, o options, dps []datapath, res *results) error {
	clients := selectClients(o.clients)
	measures := selectMeasures(o.measures)
	total := 0
	for _, c := range clients {
		for _, dp := range dps {
			if why := clientGap(dp, c); why != "" {
				res.NotMeasured = append(res.NotMeasured, notMeasured{Datapath: dp.name(), Client: string(c), Why: why})
				continue
			}
			total += len(measures) * o.runs
		}
	}
	then := ""
	if o.bulkRuns > 0 {
		then = ", then bulk transfers"
	}
	if len(o.scaleNs) > 0 {
		then += ", then rule scaling"
	}
	fmt.Fprintf(os.Stderr, "pontoon-bench: %d runs of %s (about %s)%s\n",
		total, o.duration, (time.Duration(total) * (o.duration + 60*time.Millisecond)).Round(time.Second), then)
	done := 0
	for _, c := range clients {
		for _, m := range measures {
			rounds := make([]round, o.runs)
			for r := range rounds {
				rounds[r] = round{}
				for i := range dps {
					dp := dps[(i+r)%len(dps)]
					if clientGap(dp, c) != "" {
						continue
					}
					done++
					lr, err := measureOnce(ctx, dp, c, m, o.duration)
					if err != nil {
						if err := res.failed(ctx, err); err != nil {
							return err
						}
						continue
					}
					rounds[r][dp.name()] = &lr
				}
			}
			fmt.Fprintf(os.Stderr, "[%3d/%d] %-18s %-26s", done, total, c.label(), m.label)
			for _, dp := range dps {
				if clientGap(dp, c) != "" {
					continue
				}
				s := summarize(values(rounds, dp.name(), m.metrics[0]))
				fmt.Fprintf(os.Stderr, " %s=%s", dp.name(), fmtAuto(s.Median, m.metrics[0].unit))
			}
			fmt.Fprintln(os.Stderr)
			for _, mt := range m.metrics {
				for _, dp := range dps {
					runs := values(rounds, dp.name(), mt)
					if len(runs) == 0 {
						continue // every run failed: no cell
					}
					cl := cell{
						Datapath: dp.name(), Client: string(c), Measure: m.id, Metric: mt.id,
						Unit: mt.unit, Higher: mt.higher, summary: summarize(runs),
					}
					cl.Ratio, cl.RatioRuns = pairedRatio(rounds, dp.name(), mt)
					res.Cells = append(res.Cells, cl)
				}
			}
		}
	}
	return nil
}

// values are a datapath's numbers over the rounds it completed.
func values(rounds []round, dp string, mt metric) []float64 {
	var out []float64
	for _, r := range rounds {
		if lr := r[dp]; lr != nil {
			out = append(out, mt.get(*lr))
		}
	}
	return out
}

// pairedRatio is the median over rounds of dp's performance relative to
// direct's in the same round.
func pairedRatio(rounds []round, dp string, mt metric) (*float64, []float64) {
	var rs []float64
	for _, r := range rounds {
		if a, ref := r[dp], r["direct"]; a != nil && ref != nil {
			if x := ratio(mt.get(*a), mt.get(*ref), mt.higher); x != nil {
				rs = append(rs, *x)
			}
		}
	}
	if len(rs) == 0 {
		return nil, nil
	}
	med := summarize(rs).Median
	return &med, rs
}

func selectClients(names []string) []clientKind {
	var out []clientKind
	for _, c := range allClients {
		if len(names) == 0 || slices.Contains(names, string(c)) {
			out = append(out, c)
		}
	}
	return out
}

func selectMeasures(names []string) []measure {
	var out []measure
	for _, m := range allMeasures {
		if len(names) == 0 || slices.Contains(names, m.id) {
			out = append(out, m)
		}
	}
	return out
}

// scaleClients are the clients whose connect rate is measured at every N:
// the outside path crosses PREROUTING and FORWARD, the loopback path
// OUTPUT; the host-IP path takes the same chains as loopback.
var scaleClients = []clientKind{viaOutside, viaLoopback}

// runScaling publishes N ports on each datapath that can (the measured
// one last), then times installing them, one add and one delete, reads
// the memory they take and measures the connect rate to the last port.
func runScaling(ctx context.Context, o options, dps []datapath, res *results) error {
	ref, _ := findDP[*direct](dps)
	for _, dp := range dps {
		sc, ok := dp.(scaler)
		if !ok {
			continue
		}
		for _, n := range o.scaleNs {
			if n > sc.maxN() {
				fmt.Fprintf(os.Stderr, "pontoon-bench: %s: skipping N=%d (measured up to %d)\n", dp.name(), n, sc.maxN())
				continue
			}
			if err := scaleOne(ctx, o, sc, ref, n, res); err != nil {
				if err := res.failed(ctx, fmt.Errorf("%s at N=%d: %w", dp.name(), n, err)); err != nil {
					return err
				}
			}
		}
		// Back to the few measured ports: a thousand idle docker-proxy
		// processes (3 GiB) would otherwise share the machine with the
		// next datapath's runs.
		if _, _, err := sc.install(ctx, services); err != nil {
			if err := res.failed(ctx, fmt.Errorf("%s: unpublish the scaling ports: %w", dp.name(), err)); err != nil {
				return err
			}
		}
	}
	return nil
}

// opBudget bounds the time spent timing add/delete at one N: at 60k
// iptables rules one add and delete take half a minute.
const opBudget = 20 * time.Second

func scaleOne(ctx context.Context, o options, sc scaler, ref *direct, n int, res *results) error {
	var fillers netip.Addr
	if !o.fillerAddr.IsUnspecified() {
		fillers = o.fillerAddr
	}
	var installs, mems []float64
	var mem memUse
	for r := 0; r < o.scaleRuns; r++ {
		took, m, err := sc.install(ctx, scalePorts(n, fillers))
		if err != nil {
			return err
		}
		installs = append(installs, took.Seconds()*1e3)
		mems = append(mems, m.Bytes)
		mem = m
	}
	var adds, dels []float64
	opStart := time.Now()
	for r := 0; r < sc.opReps(o.scaleRuns); r++ {
		if r >= 2 && time.Since(opStart) > opBudget {
			break
		}
		took, err := sc.addOne(ctx)
		if err != nil {
			return fmt.Errorf("add one port: %w", err)
		}
		adds = append(adds, took.Seconds()*1e6)
		took, err = sc.deleteOne(ctx)
		if err != nil {
			return fmt.Errorf("delete one port: %w", err)
		}
		dels = append(dels, took.Seconds()*1e6)
	}
	add := func(c scaleCell, runs []float64) {
		c.Datapath, c.N, c.summary = sc.name(), n, summarize(runs)
		res.Scaling = append(res.Scaling, c)
	}
	for _, c := range scaleClients {
		// Direct runs alternate with the datapath's, so the ratio holds
		// however busy the machine was at this point of the run.
		rounds := make([]round, max(o.scaleRuns, o.runs/2))
		for r := range rounds {
			rounds[r] = round{}
			order := []datapath{sc}
			if ref != nil {
				order = append(order, ref)
			}
			for i := range order {
				dp := order[(i+r)%len(order)]
				lr, err := measureOnce(ctx, dp, c, crrMeasure, o.duration)
				if err != nil {
					return err
				}
				rounds[r][dp.name()] = &lr
			}
		}
		cell := scaleCell{Metric: "connect_" + string(c), Unit: "ops/s", Higher: true}
		if ref != nil {
			d := summarize(values(rounds, ref.name(), opsRate))
			cell.Direct = &d
			cell.Ratio, cell.RatioRuns = pairedRatio(rounds, sc.name(), opsRate)
		}
		add(cell, values(rounds, sc.name(), opsRate))
	}
	add(scaleCell{Metric: "install_ms", Unit: "ms"}, installs)
	add(scaleCell{Metric: "add_one_us", Unit: "µs"}, adds)
	add(scaleCell{Metric: "delete_one_us", Unit: "µs"}, dels)
	add(scaleCell{Metric: "memory_bytes", Unit: "bytes", What: mem.What, Extra: mem.Extra}, mems)
	// The six cells just added, in the order above.
	last := res.Scaling[len(res.Scaling)-6:]
	fmt.Fprintf(os.Stderr, "scaling %-12s N=%-6d connect outside=%s loopback=%s install=%s add=%s delete=%s memory=%s\n",
		sc.name(), n, fmtAuto(last[0].Median, "ops/s"), fmtAuto(last[1].Median, "ops/s"),
		fmtAuto(last[2].Median, "ms"), fmtAuto(last[3].Median, "µs"), fmtAuto(last[4].Median, "µs"), fmtBytes(last[5].Median))
	return nil
}
