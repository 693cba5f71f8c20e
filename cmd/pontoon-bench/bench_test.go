package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for pontoon-bench: the bench
// re-executes itself as server, client and loader.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && slices.Contains([]string{"serve", "client", "attach", "detach", "netns-cookie"}, os.Args[1]) {
		cmd := rootCmd()
		cmd.SetArgs(os.Args[1:])
		if err := cmd.Execute(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		runs          []float64
		med, min, max float64
	}{
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{7}, 7, 7, 7},
	} {
		s := summarize(c.runs)
		if s.Median != c.med || s.Min != c.min || s.Max != c.max {
			t.Errorf("summarize(%v) = median %v min %v max %v, want %v %v %v", c.runs, s.Median, s.Min, s.Max, c.med, c.min, c.max)
		}
	}
	if s := summarize(nil); s.Median != 0 {
		t.Errorf("summarize(nil) = %+v", s)
	}
}

func TestRatioIsPerformance(t *testing.T) {
	if r := ratio(50, 100, true); r == nil || *r != 0.5 {
		t.Errorf("half the rate: %v, want 0.5", r)
	}
	if r := ratio(200, 100, false); r == nil || *r != 0.5 {
		t.Errorf("twice the latency: %v, want 0.5", r)
	}
	if r := ratio(0, 100, true); r != nil {
		t.Errorf("zero value has a ratio: %v", *r)
	}
}

func TestFillerPortsAvoidMeasuredPorts(t *testing.T) {
	ports := fillerPorts(60000)
	if len(ports) != 60000 {
		t.Fatalf("%d filler ports, want 60000", len(ports))
	}
	seen := map[uint16]bool{}
	for _, p := range ports {
		if p < 1024 || seen[p] || p == extraPort || p == echoTCP.hostPort || p == sinkTCP.hostPort || p == echoUDP.hostPort {
			t.Fatalf("bad filler port %d", p)
		}
		seen[p] = true
	}
}

// The measured port's rules must come last in every chain they are in,
// so every filler rule is tried first.
func TestRulesetPutsMeasuredPortLast(t *testing.T) {
	var b bytes.Buffer
	writeRuleset(&b, rules4, scalePorts(5, hostIP))
	var natDocker, filterDocker, postrouting []string
	table := ""
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "*") {
			table = line
		}
		switch {
		case table == "*nat" && strings.HasPrefix(line, "-A DOCKER "):
			natDocker = append(natDocker, line)
		case table == "*filter" && strings.HasPrefix(line, "-A DOCKER "):
			filterDocker = append(filterDocker, line)
		case strings.HasPrefix(line, "-A POSTROUTING -p tcp"):
			postrouting = append(postrouting, line)
		}
	}
	for name, rules := range map[string][]string{"nat DOCKER": natDocker, "filter DOCKER": filterDocker, "POSTROUTING": postrouting} {
		if len(rules) != 5 {
			t.Fatalf("%s has %d port rules, want 5:\n%s", name, len(rules), b.String())
		}
	}
	if last := natDocker[4]; !strings.Contains(last, "--dport 8080 ") || !strings.Contains(last, "10.89.0.2:80") {
		t.Errorf("last DNAT rule is not the measured port: %s", last)
	}
	if last := filterDocker[4]; !strings.Contains(last, "--dport 80 ") {
		t.Errorf("last ACCEPT rule is not the measured port: %s", last)
	}
	if !strings.Contains(b.String(), ":FORWARD DROP") || !strings.Contains(b.String(), "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER") {
		t.Errorf("ruleset lacks Docker's FORWARD policy or OUTPUT jump:\n%s", b.String())
	}
}

// The IPv6 rules are the IPv4 ones with the container's IPv6 address:
// wildcard DNAT from ::/0, an ACCEPT and MASQUERADE for it, and the
// network's IPv6 subnet masqueraded.
func TestRuleset6(t *testing.T) {
	var b bytes.Buffer
	writeRuleset(&b, rules6, []service{echoTCP, {name: "one address", containerPort: 81, hostPort: 8083, hostAddr: hostIP6}})
	for _, want := range []string{
		"-A DOCKER -p tcp -d ::/0 --dport 8080 -j DNAT --to-destination [fd89::2]:80\n",
		"-A DOCKER -p tcp -d 2001:2::1/128 --dport 8083 -j DNAT --to-destination [fd89::2]:81\n",
		"-A DOCKER ! -i pbr0 -o pbr0 -p tcp -d fd89::2 --dport 80 -j ACCEPT\n",
		"-A POSTROUTING -p tcp -s fd89::2 -d fd89::2 --dport 80 -j MASQUERADE\n",
		"-A POSTROUTING -s fd89::/64 ! -o pbr0 -j MASQUERADE\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("ruleset lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "10.89.") {
		t.Errorf("IPv6 ruleset names an IPv4 address:\n%s", b.String())
	}
}

func TestUnitsReadWell(t *testing.T) {
	for _, c := range []struct {
		s    summary
		unit string
		want string
	}{
		{summary{Runs: []float64{0.5, 0.75, 0.9}, Median: 0.75, Min: 0.5, Max: 0.9}, "ms", "750 µs (500–900 µs)"},
		{summary{Runs: []float64{13e6, 14e6}, Median: 13.5e6, Min: 13e6, Max: 14e6}, "µs", "13.5 s (13.0–14.0 s)"},
		{summary{Runs: []float64{31250}, Median: 31250, Min: 31250, Max: 31250}, "ops/s", "31,250"},
	} {
		if got := fmtStat(c.s, c.unit, nil, false); got != c.want {
			t.Errorf("fmtStat(%v %s) = %q, want %q", c.s.Median, c.unit, got, c.want)
		}
	}
}

// TestSmoke runs the whole bench, briefly: every datapath, client and
// measure must produce a number (the IPv6 clients' too, but for the
// iptables baseline's [::1], which it says it cannot serve), and nothing
// may be left behind. It
// asserts no speed; that is what the bench itself reports.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds namespace worlds and loads BPF: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: run 'sudo make test' (builds network namespaces and loads BPF)")
	}
	for _, tool := range []string{"ip", "nsenter", "iptables-restore", "nice"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: run 'make deps'", tool)
		}
	}
	cache, err := filepath.Abs("../../.cache/pontoon-bench")
	if err != nil {
		t.Fatal(err)
	}
	datapaths := []string{"direct", "iptables", "pontoon", "pontoon-stack", "pontoon-xdp"}
	// docker-proxy only when it is at hand: a test downloads nothing.
	if _, _, ok := installedDockerProxy(context.Background()); ok {
		datapaths = append(datapaths, "docker-proxy")
	} else if _, err := os.Stat(filepath.Join(cache, "docker.io", "docker-proxy")); err == nil {
		datapaths = append(datapaths, "docker-proxy")
	} else {
		t.Logf("docker-proxy not installed or unpacked: run the bench once to fetch it; testing without it")
	}
	id := "t" + newID()[:4]
	o := options{
		id:   id,
		runs: 1, duration: 100 * time.Millisecond, scaleNs: []int{1, 10}, scaleRuns: 1, proxyMaxN: 10,
		datapaths: datapaths, cacheDir: cache, iptables: "iptables", fillerAddr: hostIP,
		bulkRuns: 1, bulkMiB: 8, bulkLimit: 5 * time.Second,
		noMicro: true, // go test of three packages: TestParseMicro covers the reading
	}
	res, err := runBench(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	metrics := 0
	for _, m := range allMeasures {
		metrics += len(m.metrics)
	}
	// pontoon-stack: bulk rows only; iptables: no [::1].
	want := (len(datapaths)-1)*len(allClients)*metrics - metrics
	if len(res.Cells) != want {
		t.Errorf("%d result cells, want %d", len(res.Cells), want)
	}
	for _, dp := range datapaths {
		for _, c := range []clientKind{viaLoopback6, viaOutside6} {
			n, skipped := res.notMeasured(dp, string(c))
			if gap := dp == "iptables" && c == viaLoopback6; skipped != gap {
				t.Errorf("%s %s: not measured %v (%q), want %v", dp, c, skipped, n.Why, gap)
			}
			if dp == "pontoon-stack" || skipped {
				continue
			}
			for _, m := range allMeasures {
				if _, ok := res.cell(dp, string(c), m.id, m.metrics[0].id); !ok {
					t.Errorf("%s %s %s: no IPv6 cell", dp, c, m.id)
				}
			}
		}
	}
	if len(res.NotMeasured) != 1 {
		t.Errorf("not measured: %+v, want iptables' [::1] alone", res.NotMeasured)
	}
	for _, c := range res.Cells {
		if c.Median <= 0 {
			t.Errorf("%s %s %s %s: no measurement (%v)", c.Datapath, c.Client, c.Measure, c.Metric, c.Runs)
		}
		if c.Datapath != "direct" && c.Ratio == nil {
			t.Errorf("%s %s %s %s: no ratio to direct", c.Datapath, c.Client, c.Measure, c.Metric)
		}
	}
	for _, c := range res.Scaling {
		if strings.HasPrefix(c.Metric, "connect_") && c.Median <= 0 {
			t.Errorf("%s N=%d %s: no connections", c.Datapath, c.N, c.Metric)
		}
	}
	// Every bulk row on direct, Pontoon and Pontoon with XDP, the
	// published and masquerade rows of both families (all but the 4
	// hairpin ones) on stack forwarding. A stalled transfer is a datapath's failure, and the
	// bench's to report, not this test's.
	wantBulk := 4*len(allBulkRows) - 4
	if len(res.Bulk) != wantBulk {
		t.Errorf("%d bulk cells, want %d", len(res.Bulk), wantBulk)
	}
	for _, dp := range []string{"direct", "pontoon", "pontoon-stack", "pontoon-xdp"} {
		for _, row := range []string{"published6_download", "published6_upload", "masquerade6_upload", "masquerade6_download"} {
			if _, ok := res.bulkCell(dp, row); !ok {
				t.Errorf("%s bulk %s: no cell", dp, row)
			}
		}
	}
	for _, c := range res.Bulk {
		if c.Median <= 0 {
			t.Errorf("%s bulk %s: nothing moved (%v)", c.Datapath, c.Row, c.Runs)
		}
		if c.Datapath != "direct" && c.Ratio == nil {
			t.Errorf("%s bulk %s: no ratio to the untranslated path", c.Datapath, c.Row)
		}
	}
	if md := markdown(res); !strings.Contains(md, "| host → 127.0.0.1 | TCP stream Gbit/s |") || !strings.Contains(md, "## Rule scaling") ||
		!strings.Contains(md, "## Bulk transfer") || !strings.Contains(md, "| host → [::1] | TCP stream Gbit/s |") ||
		!strings.Contains(md, "| outside → host IPv6 | UDP request/response ops/s |") || !strings.Contains(md, "not measured |") {
		t.Errorf("markdown lacks the tables:\n%s", md)
	}
	if left := leftovers(id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// leftovers lists the namespaces, pins and cgroups of run id.
func leftovers(id string) []string {
	var out []string
	for _, pattern := range []string{
		"/run/netns/pbench-" + id + "-*",
		"/sys/fs/bpf/pontoon-bench-" + id + "*",
		"/sys/fs/cgroup/pontoon-bench-" + id + "*",
		"/sys/fs/cgroup/*/pontoon-bench-" + id + "*",
	} {
		m, _ := filepath.Glob(pattern)
		out = append(out, m...)
	}
	return out
}

func TestBulkRows(t *testing.T) {
	rows, err := selectBulkRows(nil)
	if err != nil || len(rows) != len(allBulkRows) {
		t.Fatalf("all rows: %d, %v", len(rows), err)
	}
	rows, err = selectBulkRows([]string{"masquerade_upload", "published_download"})
	if err != nil || len(rows) != 2 || rows[0].id() != "published_download" || rows[1].id() != "masquerade_upload" {
		t.Errorf("two rows: %v, %v", rows, err)
	}
	if _, err := selectBulkRows([]string{"published"}); err == nil {
		t.Error("a path without a direction was accepted")
	}
	seen := map[string]bool{}
	for _, r := range allBulkRows {
		if seen[r.id()] {
			t.Errorf("row %s twice", r.id())
		}
		seen[r.id()] = true
		if path, ref := r.label(); path == "" || ref == "" {
			t.Errorf("row %s has no label", r.id())
		}
	}
}

// Stalled transfers are a few hundred Kbit/s: they must read as that, not
// as 0.00 Gbit/s.
func TestTinyRatesReadWell(t *testing.T) {
	for _, c := range []struct {
		gbit float64
		want string
	}{
		{9.5, "9.50 Gbit/s"},
		{0.05, "50 Mbit/s"},
		{0.00034, "340 Kbit/s"},
	} {
		if got := fmtRate(c.gbit); got != c.want {
			t.Errorf("fmtRate(%v) = %q, want %q", c.gbit, got, c.want)
		}
	}
}

func TestBulkGoalInCells(t *testing.T) {
	r := func(x float64) *float64 { return &x }
	for _, c := range []struct {
		cell bulkCell
		want string
	}{
		{bulkCell{Unit: "Gbit/s", summary: summarize([]float64{9, 10}), Ratio: r(0.95)}, "9.50 (9.00–10.00) **0.95x** met"},
		{bulkCell{Unit: "Gbit/s", summary: summarize([]float64{5}), Ratio: r(0.5)}, "5.00 **0.50x** not met"},
		{bulkCell{Unit: "Gbit/s", summary: summarize([]float64{0.00034}), Ratio: r(0.00004), Stalled: 1}, "340 Kbit/s **0.00x** not met; stalled in 1 of 1 runs"},
	} {
		if got := fmtBulk(c.cell, true); got != c.want {
			t.Errorf("fmtBulk = %q, want %q", got, c.want)
		}
	}
}

// TestCallMitigations: the mitigations in force are named with the
// kernel's words; those it reports as not needed, and those it does not
// know, are left out.
func TestCallMitigations(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"spectre_v2":           "Mitigation: Retpolines; STIBP: disabled\n",
		"retbleed":             "Not affected\n",
		"spec_rstack_overflow": "Vulnerable: Safe RET, no microcode\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := "spectre_v2: Mitigation: Retpolines; STIBP: disabled; spec_rstack_overflow: Vulnerable: Safe RET, no microcode"
	if got := callMitigations(dir); got != want {
		t.Errorf("callMitigations = %q, want %q", got, want)
	}
	if got := callMitigations(t.TempDir()); got != "" {
		t.Errorf("callMitigations of a kernel that reports none = %q, want none", got)
	}
}
