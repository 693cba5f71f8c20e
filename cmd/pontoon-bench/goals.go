package main

import (
	"fmt"
	"slices"
	"strings"
)

// goalVerdict says where one of the goals stands on this machine.
type goalVerdict struct {
	Goal     string `json:"goal"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // met, not met, not measured
}

const (
	goalMet         = "met"
	goalNotMet      = "not met"
	goalNotMeasured = "not measured"
)

func verdict(ok bool) string {
	if ok {
		return goalMet
	}
	return goalNotMet
}

func (r *results) cell(dp, client, measure, metric string) (cell, bool) {
	for _, c := range r.Cells {
		if c.Datapath == dp && c.Client == client && c.Measure == measure && c.Metric == metric {
			return c, true
		}
	}
	return cell{}, false
}

func (r *results) scale(dp string, n int, metric string) (scaleCell, bool) {
	for _, c := range r.Scaling {
		if c.Datapath == dp && c.N == n && c.Metric == metric {
			return c, true
		}
	}
	return scaleCell{}, false
}

func (r *results) scaleNs(dp string) []int {
	var ns []int
	for _, c := range r.Scaling {
		if c.Datapath == dp && !slices.Contains(ns, c.N) {
			ns = append(ns, c.N)
		}
	}
	slices.Sort(ns)
	return ns
}

// evaluateGoals checks the goals against what was measured.
func evaluateGoals(r *results) []goalVerdict {
	var out []goalVerdict
	tableMetric := map[string]bool{}
	for _, m := range allMeasures {
		for _, mt := range m.metrics {
			if mt.table {
				tableMetric[m.id+"/"+mt.id] = true
			}
		}
	}

	// Every Pontoon row >= 0.95x direct.
	{
		g := goalVerdict{Goal: "every Pontoon row vs direct", Target: ">= 0.95x", Status: goalNotMeasured}
		var below []string
		lowest, lowestAt := 0.0, ""
		for _, c := range r.Cells {
			if c.Datapath != "pontoon" || c.Ratio == nil || !tableMetric[c.Measure+"/"+c.Metric] {
				continue
			}
			at := fmt.Sprintf("%s %s %s", clientKind(c.Client).label(), c.Measure, c.Metric)
			if lowestAt == "" || *c.Ratio < lowest {
				lowest, lowestAt = *c.Ratio, at
			}
			if *c.Ratio < 0.95 {
				below = append(below, fmt.Sprintf("%s %.2fx", at, *c.Ratio))
			}
		}
		if lowestAt != "" {
			g.Status = verdict(len(below) == 0)
			g.Measured = fmt.Sprintf("lowest %.2fx (%s)", lowest, lowestAt)
			if len(below) > 0 {
				g.Measured += fmt.Sprintf("; %d rows below: %s", len(below), strings.Join(below, ", "))
			}
		}
		out = append(out, g)
	}

	// Every bulk row >= 0.9x of the untranslated path, per forwarding mode.
	for _, dp := range pontoonDatapaths {
		g := goalVerdict{Goal: "every bulk row vs the untranslated path, " + dpTitles[dp], Target: fmt.Sprintf(">= %.2fx", bulkGoal), Status: goalNotMeasured}
		var below []string
		rows, lowest, lowestAt := 0, 0.0, ""
		for _, row := range allBulkRows {
			c, ok := r.bulkCell(dp, row.id())
			if !ok || c.Ratio == nil {
				continue
			}
			rows++
			at := row.id()
			if c.Stalled > 0 {
				at += " (stalled)"
			}
			if lowestAt == "" || *c.Ratio < lowest {
				lowest, lowestAt = *c.Ratio, at
			}
			if *c.Ratio < bulkGoal {
				below = append(below, fmt.Sprintf("%s %.2fx", at, *c.Ratio))
			}
		}
		if rows == 0 {
			if dp != "pontoon" {
				continue // not asked for: no line
			}
		} else {
			g.Status = verdict(len(below) == 0)
			g.Measured = fmt.Sprintf("lowest %.2fx (%s)", lowest, lowestAt)
			if len(below) > 0 {
				g.Measured += fmt.Sprintf("; %d of %d rows below: %s", len(below), rows, strings.Join(below, ", "))
			}
		}
		out = append(out, g)
	}

	// >= 2.5x docker-proxy via 127.0.0.1.
	for _, m := range []struct{ measure, label string }{
		{"tcp_rr", "TCP request/response"},
		{"udp_rr", "UDP request/response"},
		{"tcp_crr", "connect rate"},
	} {
		g := goalVerdict{Goal: "Pontoon vs docker-proxy, " + m.label + " via 127.0.0.1", Target: ">= 2.5x", Status: goalNotMeasured}
		p, ok1 := r.cell("pontoon", string(viaLoopback), m.measure, opsRate.id)
		d, ok2 := r.cell("docker-proxy", string(viaLoopback), m.measure, opsRate.id)
		if x, ok := relative(p.summary, p.Ratio, d.summary, d.Ratio); ok1 && ok2 && ok {
			g.Measured = fmt.Sprintf("%.2fx (%s vs %s ops/s)", x, fmtAuto(p.Median, "ops/s"), fmtAuto(d.Median, "ops/s"))
			g.Status = verdict(x >= 2.5)
		}
		out = append(out, g)
	}

	// >= iptables at N=1, and flat from N=1 to the largest N. Both
	// compare cells measured minutes apart, so they compare ratios to
	// direct (measured alongside each cell) where there are some.
	for _, c := range scaleClients {
		metric := "connect_" + string(c)
		g := goalVerdict{Goal: "connect rate at N=1 vs iptables, " + c.label(), Target: ">= 1.00x", Status: goalNotMeasured}
		p, ok1 := r.scale("pontoon", 1, metric)
		ipt, ok2 := r.scale("iptables", 1, metric)
		if x, ok := relative(p.summary, p.Ratio, ipt.summary, ipt.Ratio); ok1 && ok2 && ok {
			g.Measured = fmt.Sprintf("%.2fx (%s vs %s ops/s)", x, fmtAuto(p.Median, "ops/s"), fmtAuto(ipt.Median, "ops/s"))
			g.Status = verdict(x >= 1)
		}
		out = append(out, g)
	}
	for _, c := range scaleClients {
		metric := "connect_" + string(c)
		ns := r.scaleNs("pontoon")
		g := goalVerdict{Goal: "connect rate flat from N=1 to the largest N, " + c.label(), Target: ">= 0.95x of N=1", Status: goalNotMeasured}
		if len(ns) > 1 && ns[0] == 1 {
			top := ns[len(ns)-1]
			lo, ok1 := r.scale("pontoon", 1, metric)
			hi, ok2 := r.scale("pontoon", top, metric)
			if x, ok := relative(hi.summary, hi.Ratio, lo.summary, lo.Ratio); ok1 && ok2 && ok {
				g.Measured = fmt.Sprintf("N=%s at %.2fx of N=1", thousands(float64(top)), x)
				ilo, ok1 := r.scale("iptables", 1, metric)
				ihi, ok2 := r.scale("iptables", top, metric)
				if y, ok := relative(ihi.summary, ihi.Ratio, ilo.summary, ilo.Ratio); ok1 && ok2 && ok {
					g.Measured += fmt.Sprintf(" (iptables: %.2fx)", y)
				}
				g.Status = verdict(x >= 0.95)
			}
		}
		out = append(out, g)
	}

	// 60k installed in under 200 ms; one add or delete under 50 µs at 60k.
	const bigN = 60000
	for _, m := range []struct {
		metric, goal, target, unit string
		limit                      float64
	}{
		{"install_ms", "install 60k ports", "< 200 ms", "ms", 200},
		{"add_one_us", "add one port at N=60k", "< 50 µs", "µs", 50},
		{"delete_one_us", "delete one port at N=60k", "< 50 µs", "µs", 50},
	} {
		g := goalVerdict{Goal: m.goal, Target: m.target, Status: goalNotMeasured}
		if c, ok := r.scale("pontoon", bigN, m.metric); ok {
			g.Measured = fmt.Sprintf("%s (max %s)", fmtAuto(c.Median, m.unit), fmtAuto(c.Max, m.unit))
			g.Status = verdict(c.Median < m.limit)
		}
		out = append(out, g)
	}
	for _, c := range r.Micro {
		if g, m, ok := c.goal(); ok {
			out = append(out, goalVerdict{Goal: c.Name + " (go test -bench " + c.Package + ")", Target: g.what,
				Measured: fmt.Sprintf("%s (max %s)", fmtNs(m.Median), fmtNs(m.Max)), Status: verdict(m.Median < g.limit)})
		}
	}
	return out
}

// relative is a's rate over b's. Cells measured in different rounds (or
// minutes apart) compare best through their ratios to direct, which were
// each measured alongside; the medians are the fallback.
func relative(a summary, aRatio *float64, b summary, bRatio *float64) (float64, bool) {
	if aRatio != nil && bRatio != nil && *bRatio > 0 {
		return *aRatio / *bRatio, true
	}
	if b.Median > 0 {
		return a.Median / b.Median, true
	}
	return 0, false
}
