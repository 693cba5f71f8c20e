package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bulk rows: one TCP flow moving a fixed amount through each of Pontoon's
// translated paths, as a ratio to the same transfer over the path without
// translation, measured by the direct datapath in the same round.

// bulkPath is the way a bulk transfer takes.
type bulkPath string

const (
	// pathPublished: the outside client and the container through a
	// published port (DNAT one way, reply NAT the other).
	pathPublished bulkPath = "published"
	// pathMasquerade: the container and an outside server, masqueraded.
	pathMasquerade bulkPath = "masquerade"
	// pathHairpinTC: the peer container dials the host's address and a
	// published port, and tc's hairpin path carries it to the container.
	pathHairpinTC bulkPath = "hairpin_tc"
	// pathHairpinSock: the same dial from the hooked cgroup, which the
	// socket hooks point at the container at connect().
	pathHairpinSock bulkPath = "hairpin_sock"
	// pathPublished6: pathPublished over IPv6, the outside dialling the
	// host's IPv6 address.
	pathPublished6 bulkPath = "published6"
	// pathMasquerade6: pathMasquerade over IPv6 (NAT66, --masquerade6),
	// the container leaving as the uplink's IPv6 address.
	pathMasquerade6 bulkPath = "masquerade6"
)

// bulkRow is a path and the way the bytes go: a download is read by the
// client, an upload sent by it.
type bulkRow struct {
	path     bulkPath
	download bool
}

var allBulkRows = []bulkRow{
	{pathPublished, true}, {pathPublished, false},
	{pathMasquerade, false}, {pathMasquerade, true},
	{pathHairpinTC, false}, {pathHairpinTC, true},
	{pathHairpinSock, false}, {pathHairpinSock, true},
	{pathPublished6, true}, {pathPublished6, false},
	{pathMasquerade6, false}, {pathMasquerade6, true},
}

func (r bulkRow) direction() string {
	if r.download {
		return "download"
	}
	return "upload"
}

func (r bulkRow) id() string { return string(r.path) + "_" + r.direction() }

func (r bulkRow) op() string { return "bulk-" + r.direction() }

// label says what the row measures and what direct measures for it.
func (r bulkRow) label() (path, untranslated string) {
	switch r.path {
	case pathPublished:
		return "outside ↔ host IP:P ↔ container", "outside ↔ container IP, routed"
	case pathPublished6:
		return "outside ↔ [host IPv6]:P ↔ container", "outside ↔ container IPv6, routed"
	case pathMasquerade:
		return "container ↔ outside, masqueraded", "the same, routed back without NAT"
	case pathMasquerade6:
		return "container ↔ outside over IPv6, NAT66", "the same, routed back without NAT"
	case pathHairpinTC:
		return "peer → host IP:P → container, tc hairpin", "peer → container IP"
	case pathHairpinSock:
		return "peer → host IP:P → container, socket hooks", "peer → container IP"
	}
	return string(r.path), ""
}

// who says which end reads: "the client downloads" in words for the table.
func (r bulkRow) who() string {
	client := map[bulkPath]string{
		pathPublished: "outside", pathPublished6: "outside", pathMasquerade: "container",
		pathMasquerade6: "container", pathHairpinTC: "peer", pathHairpinSock: "peer",
	}[r.path]
	if r.download {
		return client + " downloads"
	}
	return client + " uploads"
}

func bulkRowIDs() []string {
	var ids []string
	for _, r := range allBulkRows {
		ids = append(ids, r.id())
	}
	return ids
}

func selectBulkRows(ids []string) ([]bulkRow, error) {
	for _, id := range ids {
		if !slices.Contains(bulkRowIDs(), id) {
			return nil, fmt.Errorf("--bulk %q: use %s", id, strings.Join(bulkRowIDs(), ", "))
		}
	}
	var out []bulkRow
	for _, r := range allBulkRows {
		if len(ids) == 0 || slices.Contains(ids, r.id()) {
			out = append(out, r)
		}
	}
	return out, nil
}

// bulkGoal is the goal for every bulk row: the translated path at
// 0.9x of the untranslated one or better.
const bulkGoal = 0.9

// bulkOnce runs one transfer through b.
func bulkOnce(ctx context.Context, b bulker, row bulkRow, o options) (loadResult, error) {
	ns, cg, addr, _ := b.bulkClient(row.path)
	args := []string{"client", "--measure", row.op(), "--addr", addr.String(),
		"--bytes", strconv.FormatInt(int64(o.bulkMiB)<<20, 10), "--duration", o.bulkLimit.String()}
	var r loadResult
	err := helper(ctx, ns, cg, o.bulkLimit+15*time.Second, &r, args...)
	if err != nil {
		return r, fmt.Errorf("%s bulk %s: %w", b.name(), row.id(), err)
	}
	return r, nil
}

// runBulk measures every bulk row on every datapath that carries it, in
// rounds with a rotating order as runMatrix does. A transfer that hits
// its bound is kept as a stalled run, and that datapath sits out the
// row's remaining rounds: one stall says what there is to say, and a
// stalled row would otherwise cost rounds × the bound.
func runBulk(ctx context.Context, o options, dps []datapath, res *results) error {
	rows, err := selectBulkRows(o.bulkRows)
	if err != nil {
		return err
	}
	var bs []bulker
	for _, dp := range dps {
		if b, ok := dp.(bulker); ok {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 || len(rows) == 0 {
		return nil
	}
	total := 0
	for _, row := range rows {
		for _, b := range bs {
			if _, _, _, ok := b.bulkClient(row.path); ok {
				total += o.bulkRuns
			}
		}
	}
	fmt.Fprintf(os.Stderr, "pontoon-bench: %d bulk transfers of %d MiB, each bounded at %s\n", total, o.bulkMiB, o.bulkLimit)
	done := 0
	for _, row := range rows {
		rounds := make([]round, o.bulkRuns)
		stalled := map[string]bool{}
		for r := range rounds {
			rounds[r] = round{}
			for i := range bs {
				b := bs[(i+r)%len(bs)]
				if _, _, _, ok := b.bulkClient(row.path); !ok {
					continue
				}
				done++
				if stalled[b.name()] {
					continue
				}
				lr, err := bulkOnce(ctx, b, row, o)
				if err != nil {
					if err := res.failed(ctx, err); err != nil {
						return err
					}
					continue
				}
				if lr.Stalled {
					stalled[b.name()] = true
					fmt.Fprintf(os.Stderr, "pontoon-bench: %s bulk %s stalled: %s in %.1f s\n",
						b.name(), row.id(), fmtRate(gbits.get(lr)), lr.Seconds)
				}
				rounds[r][b.name()] = &lr
			}
		}
		fmt.Fprintf(os.Stderr, "[%3d/%d] bulk %-24s", done, total, row.id())
		for _, b := range bs {
			if _, _, _, ok := b.bulkClient(row.path); !ok {
				continue
			}
			runs := values(rounds, b.name(), gbits)
			if len(runs) == 0 {
				fmt.Fprintf(os.Stderr, " %s=failed", b.name())
				continue
			}
			c := bulkCell{
				Datapath: b.name(), Row: row.id(), Path: string(row.path), Direction: row.direction(),
				Unit: gbits.unit, summary: summarize(runs),
			}
			for _, rd := range rounds {
				if lr := rd[b.name()]; lr != nil && lr.Stalled {
					c.Stalled++
				}
			}
			c.Ratio, c.RatioRuns = pairedRatio(rounds, b.name(), gbits)
			res.Bulk = append(res.Bulk, c)
			fmt.Fprintf(os.Stderr, " %s=%s", b.name(), fmtRate(c.Median))
			if c.Ratio != nil && b.name() != "direct" {
				fmt.Fprintf(os.Stderr, " (%.2fx)", *c.Ratio)
			}
		}
		fmt.Fprintln(os.Stderr)
	}
	return nil
}

// fmtRate is a rate in Gbit/s with its unit, in a smaller one when tiny.
func fmtRate(gbit float64) string {
	v, u := bestUnit(gbit, "Gbit/s")
	if u == "Gbit/s" {
		return fmtValue(v, u) + " Gbit/s"
	}
	return fmtValue(v, u) // carries its unit
}
