package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// The micro benchmarks are the repository's own Go benchmarks of the
// per-packet cost (BPF_PROG_TEST_RUN of the tc and XDP programs) and of
// the control plane (ipam alone, and requests through a real agent): the
// bench runs them with `go test` from the source tree, so their figures
// and goals land in the same report as the rest.

// microSuite is one `go test -bench` run.
type microSuite struct {
	pkg, pattern string
	// benchtime for a full run and for --quick.
	full, quick string
}

var microSuites = []microSuite{
	{"./bpf", "^Benchmark(NotIP|Miss|DNAT|DNATWildcard|DNATUDP|RNAT)$", "1s", "200ms"},
	{"./ipam", "^BenchmarkIPAMFill65535$", "10x", "5x"},
	{"./cmd/pontoon", "^BenchmarkPublish60k$", "5x", "2x"},
	{"./cmd/pontoon", "^Benchmark(PublishAt60k|UnpublishAt60k)$", "200x", "50x"},
}

// microCell is one benchmark's figures over the -count runs: time per op,
// and every other metric it reports (agent-ms/op, cpu-ms/op, ...).
type microCell struct {
	Package string `json:"package"`
	Name    string `json:"name"` // without the GOMAXPROCS suffix
	Unit    string `json:"unit"` // ns/op
	summary
	Metrics map[string]summary `json:"metrics,omitempty"`
}

// microGoal is one of issue 16's goals: benchmarks whose name starts
// with prefix, judged on metric (ns/pkt: the kernel's time per packet of
// a test run, without the system call's share of ns/op) in nanoseconds.
type microGoal struct {
	prefix, metric, what string
	limit                float64
}

var microGoals = []microGoal{
	{"Miss/", "ns/pkt", "< 60 ns a packet", 60},
	{"DNAT/", "ns/pkt", "< 150 ns a packet", 150},
	{"DNATWildcard/", "ns/pkt", "< 150 ns a packet", 150},
	{"DNATUDP/", "ns/pkt", "< 150 ns a packet", 150},
	{"RNAT/", "ns/pkt", "< 150 ns a packet", 150},
	{"IPAMFill65535/bolt", "ns/op", "< 10 ms", 10e6},
	{"Publish60k", "ns/op", "< 200 ms", 200e6},
	{"PublishAt60k", "ns/op", "< 1 ms", 1e6},
	{"UnpublishAt60k", "ns/op", "< 1 ms", 1e6},
}

// goal is c's goal and what it measured for it, ok false when it has none.
func (c microCell) goal() (g microGoal, measured summary, ok bool) {
	for _, g := range microGoals {
		if !strings.HasPrefix(c.Name, g.prefix) {
			continue
		}
		if g.metric == "ns/op" {
			return g, c.summary, true
		}
		m, ok := c.Metrics[g.metric]
		return g, m, ok
	}
	return microGoal{}, summary{}, false
}

// runMicro runs every suite from the module's source tree; a suite that
// fails is a failure of the report, the others still run.
func runMicro(ctx context.Context, o options, res *results) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return res.failed(ctx, fmt.Errorf("micro benchmarks: %w", err))
	}
	count, pick := "3", func(s microSuite) string { return s.full }
	if o.quick {
		count, pick = "1", func(s microSuite) string { return s.quick }
	}
	for _, s := range microSuites {
		fmt.Fprintf(os.Stderr, "pontoon-bench: go test -bench '%s' %s\n", s.pattern, s.pkg)
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", s.pattern, "-benchtime", pick(s), "-count", count, "-timeout", "20m", s.pkg)
		cmd.Dir = root
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(lastLines(out.String()+stderr.String(), 5))
			if err := res.failed(ctx, fmt.Errorf("go test -bench '%s' %s: %v: %s", s.pattern, s.pkg, err, msg)); err != nil {
				return err
			}
			continue
		}
		cells, err := parseMicro(&out, s.pkg)
		if err != nil {
			return res.failed(ctx, err)
		}
		res.Micro = append(res.Micro, cells...)
	}
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("they need Pontoon's source tree and the go tool: run the bench from the repository (make bench)")
	}
	return filepath.Dir(mod), nil
}

// parseMicro reads `go test -bench` output: each benchmark's runs, in
// the order they first appear.
func parseMicro(out *bytes.Buffer, pkg string) ([]microCell, error) {
	type runs struct {
		ns      []float64
		metrics map[string][]float64
	}
	var order []string
	byName := map[string]*runs{}
	r := benchfmt.NewReader(out, pkg)
	for r.Scan() {
		res, ok := r.Result().(*benchfmt.Result)
		if !ok {
			continue // a syntax error is a line that is not a result
		}
		name := trimProcs(string(res.Name))
		rs := byName[name]
		if rs == nil {
			rs = &runs{metrics: map[string][]float64{}}
			byName[name] = rs
			order = append(order, name)
		}
		for _, v := range res.Values {
			unit, val := v.OrigUnit, v.OrigValue
			if unit == "" {
				unit, val = v.Unit, v.Value
			}
			if unit == "ns/op" {
				rs.ns = append(rs.ns, val)
			} else {
				rs.metrics[unit] = append(rs.metrics[unit], val)
			}
		}
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark results of %s: %w", pkg, err)
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("go test -bench %s printed no benchmark result", pkg)
	}
	var cells []microCell
	for _, name := range order {
		rs := byName[name]
		c := microCell{Package: pkg, Name: name, Unit: "ns/op", summary: summarize(rs.ns)}
		for unit, vals := range rs.metrics {
			if c.Metrics == nil {
				c.Metrics = map[string]summary{}
			}
			c.Metrics[unit] = summarize(vals)
		}
		cells = append(cells, c)
	}
	return cells, nil
}

// trimProcs drops the -GOMAXPROCS suffix go test adds to a name.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 && strings.Trim(name[i+1:], "0123456789") == "" && i+1 < len(name) {
		return name[:i]
	}
	return name
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// writeMicro is the micro benchmarks' table.
func writeMicro(b *bytes.Buffer, r *results) {
	fmt.Fprintf(b, "\n## Per packet and control plane (go test -bench)\n\n")
	fmt.Fprintf(b, "The repository's Go benchmarks, %s runs each: per packet under BPF_PROG_TEST_RUN (tc and XDP programs), "+
		"ipam alone, and requests through a real agent process. Median (min–max); other metrics as the benchmark reports them "+
		"(ns/pkt: the kernel's time per packet of a test run, what the per-packet goals judge).\n\n", microCount(r))
	fmt.Fprintf(b, "| package | benchmark | time per op | other metrics | goal |\n|---|---|--:|---|---|\n")
	for _, c := range r.Micro {
		var extra []string
		for _, unit := range slices.Sorted(maps.Keys(c.Metrics)) {
			extra = append(extra, fmt.Sprintf("%s %s", trimFloat(c.Metrics[unit].Median), unit))
		}
		goal := "–"
		if g, m, ok := c.goal(); ok {
			goal = g.what + ": " + verdict(m.Median < g.limit)
		}
		fmt.Fprintf(b, "| %s | %s | %s (%s–%s) | %s | %s |\n", c.Package, c.Name,
			fmtNs(c.Median), fmtNs(c.Min), fmtNs(c.Max), orDash(strings.Join(extra, ", ")), goal)
	}
}

// fmtNs formats nanoseconds: 46 ns, 1.40 ms.
func fmtNs(v float64) string {
	if v < 1000 {
		return fmt.Sprintf("%.0f ns", v)
	}
	return fmtAuto(v/1e3, "µs")
}

func microCount(r *results) string {
	if r.Config.Mode == "quick" {
		return "1"
	}
	return "3"
}

func trimFloat(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
