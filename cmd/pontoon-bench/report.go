package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// bestUnit moves a duration to the unit that reads best: 750 µs rather
// than 0.75 ms, 13.4 s rather than 13,400,000 µs.
func bestUnit(v float64, unit string) (float64, string) {
	switch {
	case unit == "ms" && v < 1:
		return v * 1e3, "µs"
	case unit == "µs" && v >= 10000:
		return bestUnit(v/1e3, "ms")
	case unit == "ms" && v >= 10000:
		return v / 1e3, "s"
	case unit == "Gbit/s" && v < 0.1 && v > 0:
		return bestUnit(v*1e3, "Mbit/s")
	case unit == "Mbit/s" && v < 1:
		return v * 1e3, "Kbit/s"
	}
	return v, unit
}

// fmtAuto formats a single value in the unit that reads best.
func fmtAuto(v float64, unit string) string {
	return fmtValue(bestUnit(v, unit))
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "Gbit/s":
		return fmt.Sprintf("%.2f", v)
	case "Mbit/s", "Kbit/s":
		// Only a stalled transfer is this slow; the unit says so.
		return fmt.Sprintf("%.3g %s", v, unit)
	case "ops/s":
		return thousands(v)
	case "µs", "ms", "s":
		switch {
		case v >= 10000:
			return thousands(v) + " " + unit
		case v >= 100:
			return fmt.Sprintf("%.0f %s", v, unit)
		case v >= 10:
			return fmt.Sprintf("%.1f %s", v, unit)
		}
		return fmt.Sprintf("%.2f %s", v, unit)
	case "bytes":
		return fmtBytes(v)
	}
	return fmt.Sprintf("%.3g", v)
}

func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtBytes(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.0f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// fmtStat is "median (min–max)", and the ratio to direct when there is
// one. Ratios are performance: above 1 is better than direct.
func fmtStat(s summary, unit string, r *float64, withRatio bool) string {
	// One unit for median, min and max, chosen by the median.
	if v, u := bestUnit(s.Median, unit); u != unit && s.Median != 0 {
		s, unit = scaled(s, v/s.Median), u
	}
	out := fmtValue(s.Median, unit)
	if len(s.Runs) > 1 {
		lo, hi := fmtValue(s.Min, unit), fmtValue(s.Max, unit)
		if u := " " + unit; strings.HasSuffix(lo, u) && strings.HasSuffix(hi, u) {
			lo = strings.TrimSuffix(lo, u)
		}
		out += fmt.Sprintf(" (%s–%s)", lo, hi)
	}
	if withRatio && r != nil {
		out += fmt.Sprintf(" **%.2fx**", *r)
	}
	return out
}

var dpTitles = map[string]string{
	"direct":        "direct (ceiling)",
	"iptables":      "iptables DNAT",
	"docker-proxy":  "docker-proxy",
	"pontoon":       "Pontoon",
	"pontoon-stack": "Pontoon, stack forwarding",
	"pontoon-xdp":   "Pontoon, XDP native",
}

func markdown(r *results) string {
	var b bytes.Buffer
	s := r.Sys
	fmt.Fprintf(&b, "# Pontoon bench: direct, iptables DNAT, docker-proxy and Pontoon\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| kernel | %s |\n", s.Kernel)
	fmt.Fprintf(&b, "| CPU | %s, %d cores |\n", s.CPU, s.Cores)
	if s.Mitigations != "" {
		fmt.Fprintf(&b, "| call and return mitigations | %s |\n", s.Mitigations)
	}
	fmt.Fprintf(&b, "| memory | %d GiB |\n", s.MemoryGiB)
	fmt.Fprintf(&b, "| OS | %s |\n", s.OS)
	fmt.Fprintf(&b, "| iptables | %s |\n", orDash(s.Iptables))
	fmt.Fprintf(&b, "| docker-proxy | %s |\n", orDash(s.DockerProxy))
	pontoon := s.Pontoon
	if s.TCMode != "" {
		pontoon += ", uplink attached with " + s.TCMode
	}
	fmt.Fprintf(&b, "| Pontoon | %s |\n", pontoon)
	fmt.Fprintf(&b, "| Go | %s |\n", s.Go)
	fmt.Fprintf(&b, "| load average | %.2f before, %.2f after (other work on the machine is noise in every row alike) |\n", s.LoadBefore, s.LoadAfter)
	fmt.Fprintf(&b, "| run | %s mode, %s; %d rounds of %s runs per cell, each round runs every datapath once; processes at nice %d; took %s |\n\n",
		r.Config.Mode, s.Date, r.Config.Runs, r.Config.Duration, r.Config.Nice, r.Config.Elapsed)
	fmt.Fprintf(&b, "Each cell: median (min–max) over the runs, then **performance relative to direct**: "+
		"the median over rounds of the ratio to direct's run in the same round "+
		"(rates divided by direct's, latencies: direct's divided by them; above 1.00x is better than direct).\n\n")

	if len(r.Cells) > 0 {
		writeMatrix(&b, r)
	}

	if len(r.Scaling) > 0 {
		fmt.Fprintf(&b, "\n## Rule scaling\n\n")
		fmt.Fprintf(&b, "N published TCP ports, the measured one published last (last in iptables order). "+
			"Connect rate is TCP connect/request/close to that port, relative to direct measured in alternating runs. "+
			"Install: all N at once; add/delete: one more port at N.\n\n")
		fmt.Fprintf(&b, "| datapath | N | connect rate, %s | connect rate, %s | install N | add one | delete one | memory |\n",
			viaOutside.label(), viaLoopback.label())
		fmt.Fprintf(&b, "|---|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, dp := range allDatapaths {
			for _, n := range r.scaleNs(dp) {
				fmt.Fprintf(&b, "| %s | %s |", dpTitles[dp], thousands(float64(n)))
				for _, m := range []string{"connect_" + string(viaOutside), "connect_" + string(viaLoopback), "install_ms", "add_one_us", "delete_one_us", "memory_bytes"} {
					c, ok := r.scale(dp, n, m)
					if !ok {
						fmt.Fprintf(&b, " – |")
						continue
					}
					cellText := fmtStat(c.summary, c.Unit, c.Ratio, true)
					if c.Extra != "" {
						cellText += ", " + c.Extra
					}
					fmt.Fprintf(&b, " %s |", cellText)
				}
				fmt.Fprintln(&b)
			}
		}
		fmt.Fprintf(&b, "\nMemory: Pontoon counts the bindings map (kernel memlock accounting, grows with entries); "+
			"iptables the kernel memory (slab + per-CPU + vmalloc) that installing the rules added, system-wide, so "+
			"it is noise below about 1 MiB; docker-proxy the RSS (and PSS) of its processes.\n")
	}

	if len(r.Bulk) > 0 {
		writeBulk(&b, r)
	}
	if len(r.Micro) > 0 {
		writeMicro(&b, r)
	}

	if len(r.Goals) > 0 {
		fmt.Fprintf(&b, "\n## Goals\n\n| goal | target | measured | status |\n|---|---|---|---|\n")
		for _, g := range r.Goals {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.Goal, g.Target, orDash(g.Measured), g.Status)
		}
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(&b, "\n## Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
	}
	fmt.Fprintf(&b, "\n## How\n\n%s", methodNotes)
	return b.String()
}

// writeMatrix is the data path table: a row per client and metric, a
// column per datapath.
func writeMatrix(b *bytes.Buffer, r *results) {
	var dps []string
	for _, name := range allDatapaths {
		for _, c := range r.Cells {
			if c.Datapath == name {
				dps = append(dps, name)
				break
			}
		}
	}
	fmt.Fprintf(b, "## Data path\n\n| client | measure |")
	for _, dp := range dps {
		fmt.Fprintf(b, " %s |", dpTitles[dp])
	}
	fmt.Fprintf(b, "\n|---|---|")
	for range dps {
		fmt.Fprintf(b, "--:|")
	}
	fmt.Fprintln(b)
	for _, c := range allClients {
		for _, m := range allMeasures {
			for _, mt := range m.metrics {
				if !mt.table {
					continue
				}
				row := fmt.Sprintf("| %s | %s %s |", c.label(), m.label, mt.label)
				found := false
				for _, dp := range dps {
					v, ok := r.cell(dp, string(c), m.id, mt.id)
					if _, skipped := r.notMeasured(dp, string(c)); !ok && skipped {
						row += " not measured |"
						continue
					}
					if !ok {
						row += " failed |"
						continue
					}
					found = true
					row += " " + fmtStat(v.summary, mt.unit, v.Ratio, dp != "direct") + " |"
				}
				if found {
					fmt.Fprintln(b, row)
				}
			}
		}
	}
	if len(r.NotMeasured) > 0 {
		fmt.Fprintf(b, "\nNot measured:")
		for i, n := range r.NotMeasured {
			sep := ";"
			if i == len(r.NotMeasured)-1 {
				sep = "."
			}
			fmt.Fprintf(b, " %s, %s: %s%s", dpTitles[n.Datapath], clientKind(n.Client).label(), n.Why, sep)
		}
		fmt.Fprintln(b)
	}
}

// writeBulk is the bulk-transfer table: a row per path and direction, a
// column per datapath, direct's being the untranslated path.
func writeBulk(b *bytes.Buffer, r *results) {
	var dps []string
	for _, name := range allDatapaths {
		for _, c := range r.Bulk {
			if c.Datapath == name {
				dps = append(dps, name)
				break
			}
		}
	}
	fmt.Fprintf(b, "\n## Bulk transfer\n\n")
	fmt.Fprintf(b, "One TCP flow moving %d MiB per run, %d rounds, each transfer bounded at %s; Gbit/s as "+
		"it reached the far end. Ratios are to the untranslated path, which the direct datapath "+
		"measures in the same round; the goal for every row is %.2fx or better.\n\n",
		r.Config.BulkMiB, r.Config.BulkRuns, r.Config.BulkLimit, bulkGoal)
	fmt.Fprintf(b, "| path | direction | untranslated path |")
	for _, dp := range dps {
		title := dpTitles[dp]
		if dp == "direct" {
			title = "untranslated (direct)"
		}
		fmt.Fprintf(b, " %s |", title)
	}
	fmt.Fprintf(b, " goal |\n|---|---|---|")
	for range dps {
		fmt.Fprintf(b, "--:|")
	}
	fmt.Fprintf(b, "---|\n")
	for _, row := range allBulkRows {
		path, untranslated := row.label()
		line := fmt.Sprintf("| %s | %s | %s |", path, row.who(), untranslated)
		found := false
		for _, dp := range dps {
			c, ok := r.bulkCell(dp, row.id())
			if !ok {
				line += " – |"
				continue
			}
			found = true
			line += " " + fmtBulk(c, dp != "direct") + " |"
		}
		if found {
			fmt.Fprintf(b, "%s >= %.2fx |\n", line, bulkGoal)
		}
	}
	fmt.Fprintf(b, "\nA stalled run hit the bound; its rate is what got through until then, and that "+
		"datapath sat out the row's remaining rounds. Stack forwarding has no hairpin rows: tc forwards "+
		"hairpinned packets in BPF in either mode, and the socket hooks translate no packet.\n")
}

// fmtBulk is a bulk cell: the rate, its ratio and whether it meets the goal.
func fmtBulk(c bulkCell, withRatio bool) string {
	out := fmtStat(c.summary, c.Unit, c.Ratio, withRatio)
	if withRatio {
		switch {
		case c.Ratio == nil:
			out += " (no untranslated run to compare)"
		case *c.Ratio >= bulkGoal:
			out += " met"
		default:
			out += " not met"
		}
	}
	if c.Stalled > 0 {
		out += fmt.Sprintf("; stalled in %d of %d runs", c.Stalled, len(c.Runs))
	}
	return out
}

func scaled(s summary, f float64) summary {
	out := summary{Median: s.Median * f, Min: s.Min * f, Max: s.Max * f}
	for _, v := range s.Runs {
		out.Runs = append(out.Runs, v*f)
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

const methodNotes = `- Every datapath gets its own namespaces: a host (uplink veth 198.18.0.1, bridge 10.89.0.1), a
  container (10.89.0.2) and an outside client (198.18.0.2). Nothing runs on the real host's
  network; Pontoon's socket hooks sit on a child cgroup that holds only the bench's host clients.
- IPv6: the network is dual-stack (bridge fd89::1, container fd89::2, uplink 2001:2::1, outside
  2001:2::2), and every service is published on [::] too, to the container's IPv6 address, as
  the agent does for a dual-stack endpoint. The IPv6 clients dial [::1]:P (the socket hooks'
  connect6) and, from outside, the uplink's IPv6 address (tc's IPv6 DNAT; the XDP program leaves
  IPv6 to tc, so "XDP native" adds only its pass); direct dials the container's IPv6 address, so
  the ratios are to direct IPv6. docker-proxy gets one more proxy per port on [::1] and on the
  uplink's IPv6 address, as dockerd starts them for those host IPs. iptables gets the same rules
  in ip6tables, to the container's IPv6 address, as dockerd writes them with ip6tables on; it has
  no [::1] row: IPv6 has no route_localnet, so no DNAT takes [::1] off the host.
- Rounds: each round runs every datapath once, in a rotating order; ratios to direct are the
  median of the per-round ratios. Every process in the worlds runs at the same raised priority
  (--nice), so other work on the machine disturbs the numbers less.
- Clients: a host process dialling 127.0.0.1:P, a host process dialling the host's uplink
  address, and the outside namespace dialling the uplink address. Direct dials the container.
- Load: this binary's own client and server, one flow, one request in flight. Stream: 128 KiB
  writes, rate as received by the server. Request/response: 64-byte messages on one
  connection (UDP: a connected socket). Connect: connect, 64-byte request and answer, close.
- iptables: the rules dockerd (docker.io 20.10) writes with userland-proxy off (DOCKER chains,
  addrtype LOCAL jumps, DNAT, MASQUERADE, FORWARD policy DROP, route_localnet=1). Installing N is
  one iptables-restore, a lower bound (dockerd runs six iptables commands per port); adding and
  deleting one port are dockerd's six commands (-C then -A or -D, for three rules).
- docker-proxy: Debian's binary, alone, one process per port and protocol with dockerd's flags and
  its readiness pipe on fd 3, on 0.0.0.0, and for the IPv6 rows on [::1] and the uplink's IPv6
  address (see IPv6 above). In Docker, outside
  clients take the iptables path even with the proxy on; its outside rows show the proxy alone.
  Scaling stops at 1,000 ports: tens of thousands of processes measure the process table, not
  the proxy.
- Rule scaling: N-1 filler ports published on the uplink address (1024 upwards), then the
  measured port on all addresses. Fillers avoid the wildcard because Pontoon's tc programs
  currently DNAT any packet to a published port, replies to host-originated connections
  included, and 60k wildcard ports cover the host's ephemeral range (--filler-addr 0.0.0.0
  shows it).
- Pontoon: the committed BPF objects loaded and programmed as the agent does: uplink, bridge and
  container-veth tc programs, socket hooks, host addresses and netns cookie, the network
  (masquerading, IPv6 too: --masquerade6), its endpoints and their namespaces, the uplink's
  IPv4 and IPv6 addresses, and forwarding of translated packets in BPF (bpf_fib_lookup and
  redirect), the agent's default. "Pontoon, stack forwarding" is the same with
  --stack-forwarding; it runs the bulk rows only. Idle conntrack and SNAT entries are collected
  every 10 s, as the agent does. Installing N is one batch map update; add/delete one is one map
  update or delete.
- Bulk transfer: this binary's client and server, one TCP flow moving a fixed amount in 256 KiB
  reads and writes, timed from connect to the last byte read (download) or to the server's
  count of what arrived (upload). Each world has a second container, the peer (10.89.0.3), for
  the hairpin rows, and an outside server for the masquerade rows. Published port: the outside
  dials the host's address and port P; untranslated, the container's own address, routed
  through the host. Masquerade: the container dials the outside server and leaves with the
  host's address; untranslated, the outside routes replies back to the container's own
  address. Hairpin: the peer dials the host's address and P, from outside the hooked cgroup
  (tc's hairpin path, as a VM or a raw client would) or from inside it with its namespace
  registered (the socket hooks connect it to the container directly); untranslated, the peer
  dials the container's address. Published port over IPv6: the outside dials the host's IPv6
  address and P; untranslated, the container's IPv6 address, routed through the host.
  Masquerade over IPv6: the network is --masquerade6 (NAT66), and the container dials the
  outside server's IPv6 address and leaves with the host's; untranslated, the outside routes
  replies back to the container's own IPv6 address.
`

func writeOutputs(r *results, mdPath, jsonPath string) error {
	md := markdown(r)
	if mdPath != "" {
		if err := os.MkdirAll(filepath.Dir(mdPath), 0o755); err != nil {
			return fmt.Errorf("create output directory: %w", err)
		}
		if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write markdown: %w", err)
		}
	}
	if jsonPath != "" {
		if err := os.MkdirAll(filepath.Dir(jsonPath), 0o755); err != nil {
			return fmt.Errorf("create output directory: %w", err)
		}
		js, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encode results: %w", err)
		}
		if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
	}
	fmt.Print(md)
	return nil
}
