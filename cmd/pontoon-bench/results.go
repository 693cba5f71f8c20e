package main

import (
	"context"
	"fmt"
	"os"
)

// results is everything one run measured; report.go renders it.
type results struct {
	Sys     sysInfo       `json:"system"`
	Config  runConfig     `json:"config"`
	Cells   []cell        `json:"results"`
	Scaling []scaleCell   `json:"scaling,omitempty"`
	Bulk    []bulkCell    `json:"bulk,omitempty"`
	Micro   []microCell   `json:"micro,omitempty"`
	Goals   []goalVerdict `json:"goals,omitempty"`
	// NotMeasured are the clients a datapath cannot serve (iptables
	// DNAT and [::1]), and why.
	NotMeasured []notMeasured `json:"not_measured,omitempty"`
	// Failures are measurements that did not complete; the rest of the
	// run goes on without them.
	Failures []string `json:"failures,omitempty"`
}

// notMeasured is a datapath and client left out on purpose.
type notMeasured struct {
	Datapath string `json:"datapath"`
	Client   string `json:"client"`
	Why      string `json:"why"`
}

func (r *results) notMeasured(dp, client string) (notMeasured, bool) {
	for _, n := range r.NotMeasured {
		if n.Datapath == dp && n.Client == client {
			return n, true
		}
	}
	return notMeasured{}, false
}

// failed records a failed measurement, unless the run is being stopped.
func (r *results) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(os.Stderr, "pontoon-bench: FAILED: %v\n", err)
	r.Failures = append(r.Failures, err.Error())
	return nil
}

type runConfig struct {
	Mode        string   `json:"mode"`
	Runs        int      `json:"runs"`
	Duration    string   `json:"duration_per_run"`
	ScaleNs     []int    `json:"scale_n"`
	ScaleRuns   int      `json:"scale_runs"`
	Datapaths   []string `json:"datapaths"`
	BulkRuns    int      `json:"bulk_runs,omitempty"`
	BulkMiB     int      `json:"bulk_mib,omitempty"`
	BulkLimit   string   `json:"bulk_limit,omitempty"`
	DockerProxy string   `json:"docker_proxy_binary,omitempty"`
	Nice        int      `json:"nice"`
	Elapsed     string   `json:"elapsed"`
}

// cell is one datapath's number for one client, measure and metric.
type cell struct {
	Datapath string `json:"datapath"`
	Client   string `json:"client"`
	Measure  string `json:"measure"`
	Metric   string `json:"metric"`
	Unit     string `json:"unit"`
	Higher   bool   `json:"higher_is_better"`
	summary
	// Ratio is the median of RatioRuns: performance relative to direct
	// in each round (above 1 is better than direct).
	Ratio     *float64  `json:"ratio_to_direct,omitempty"`
	RatioRuns []float64 `json:"ratio_runs,omitempty"`
}

// scaleCell is one number of the rule-scaling part at n published ports.
type scaleCell struct {
	Datapath string `json:"datapath"`
	N        int    `json:"n"`
	Metric   string `json:"metric"`
	Unit     string `json:"unit"`
	Higher   bool   `json:"higher_is_better"`
	summary
	Ratio     *float64  `json:"ratio_to_direct,omitempty"`
	RatioRuns []float64 `json:"ratio_runs,omitempty"`
	// Direct is the reference the ratio is taken against, measured in
	// runs alternating with this cell's.
	Direct *summary `json:"direct,omitempty"`
	What   string   `json:"what,omitempty"`
	Extra  string   `json:"extra,omitempty"`
}

// bulkCell is one datapath's throughput on one bulk row.
type bulkCell struct {
	Datapath  string `json:"datapath"`
	Row       string `json:"row"`
	Path      string `json:"path"`
	Direction string `json:"direction"` // download: the client reads
	Unit      string `json:"unit"`
	summary
	// Ratio is the median of RatioRuns: throughput relative to the
	// untranslated path (direct's run of the row in the same round).
	Ratio     *float64  `json:"ratio_to_untranslated,omitempty"`
	RatioRuns []float64 `json:"ratio_runs,omitempty"`
	// Stalled counts the runs that hit the bound on one transfer.
	Stalled int `json:"stalled,omitempty"`
}

func (r *results) bulkCell(dp, row string) (bulkCell, bool) {
	for _, c := range r.Bulk {
		if c.Datapath == dp && c.Row == row {
			return c, true
		}
	}
	return bulkCell{}, false
}
