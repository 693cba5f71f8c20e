// Command pontoon-bench measures Pontoon against what it replaces, on the
// machine it runs on: direct to the container (the ceiling), Docker's
// iptables DNAT rules, Docker's userland proxy and Pontoon, from three
// clients, plus how each scales with the number of published ports. It
// builds its own namespaces and removes them again; nothing touches the
// host's own interfaces, routes, firewall or root cgroup.
//
// The same binary is the load tool: the bench runs it inside the
// namespaces as server ("serve") and client ("client").
package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/loader"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pontoon-bench:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	o := options{}
	var fillerAddr string
	var noScale, noBulk bool
	cmd := &cobra.Command{
		Use:   "pontoon-bench",
		Short: "Measure Pontoon against direct, iptables DNAT and docker-proxy in throwaway namespaces",
		Long: `Measure Pontoon against direct, iptables DNAT and docker-proxy in throwaway namespaces.

Full run (about 12 minutes on 2 cores): every datapath, three clients, four measures, 12 rounds
of 0.6 s runs; bulk transfers through published ports, masquerade and hairpin, 14 rounds of
128 MiB, each bounded at 30 s; rule scaling at N = 1, 1k, 10k, 60k. --quick (about 3 minutes)
does 4 rounds of 0.25 s, 3 bulk rounds of 64 MiB bounded at 10 s, and N = 1, 1k. Last, the
repository's Go benchmarks of the per-packet cost and the control plane run from the source tree
(go test -bench: about 2 minutes, one with --quick; --no-micro skips them). Writes a markdown
table and JSON (see --md, --json) and prints the table.
Needs root; builds its own namespaces and removes them, also when interrupted.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			applyPreset(cmd, &o)
			addr, err := netip.ParseAddr(fillerAddr)
			if err != nil || !addr.Is4() {
				return fmt.Errorf("--filler-addr %q: give an IPv4 address", fillerAddr)
			}
			o.fillerAddr = addr
			if noScale {
				o.scaleNs = nil
			}
			if noBulk {
				o.bulkRuns = 0
			}
			if o.bulkMiB < 1 {
				return fmt.Errorf("--bulk-mib %d: give at least 1", o.bulkMiB)
			}
			if _, err := selectBulkRows(o.bulkRows); err != nil {
				return err
			}
			for _, n := range o.scaleNs {
				if n < 1 || n > len(fillerPorts(65535))+1 {
					return fmt.Errorf("--scale %d: give port counts from 1 to %d", n, len(fillerPorts(65535))+1)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := runBench(ctx, o)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted; everything the bench set up is removed")
				}
				return err
			}
			if err := writeOutputs(res, o.mdPath, o.jsonPath); err != nil {
				return err
			}
			if len(res.Failures) > 0 {
				return fmt.Errorf("%d measurements failed (listed under Failures)", len(res.Failures))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.quick, "quick", false, "a smoke run of about 3 minutes (CI): fewer, shorter runs, smaller bulk transfers and N = 1, 1000")
	f.IntVar(&o.runs, "runs", 12, "rounds (one run of every datapath each) per cell; tables show medians and min-max")
	f.DurationVar(&o.duration, "duration", 600*time.Millisecond, "length of one run")
	f.IntSliceVar(&o.scaleNs, "scale", []int{1, 1000, 10000, 60000}, "published-port counts for rule scaling")
	f.BoolVar(&noScale, "no-scale", false, "skip rule scaling")
	f.BoolVar(&o.noMatrix, "no-matrix", false, "skip the data path matrix (clients × measures)")
	f.BoolVar(&o.noMicro, "no-micro", false, "skip the repository's Go benchmarks (per packet and control plane; they need the source tree and the go tool)")
	f.IntVar(&o.scaleRuns, "scale-runs", 3, "installs (and iptables/docker-proxy add/delete timings) per N")
	f.StringVar(&fillerAddr, "filler-addr", hostIP.String(), "host address the scaling fillers are published on; 0.0.0.0 for all (hits a Pontoon reply-DNAT bug at 60k)")
	f.IntVar(&o.proxyMaxN, "docker-proxy-max-n", 1000, "largest N to start docker-proxy processes for")
	f.StringSliceVar(&o.datapaths, "datapaths", allDatapaths, "datapaths to measure (direct is the reference for ratios; pontoon-stack, Pontoon with --stack-forwarding, runs the bulk rows only; pontoon-xdp is Pontoon with --xdp=native, pontoon --xdp=off)")
	f.StringSliceVar(&o.clients, "clients", nil, "clients: loopback, hostip, outside, loopback6 ([::1]), outside6 (the uplink's IPv6 address) (default all)")
	f.StringSliceVar(&o.measures, "measures", nil, "measures: tcp_stream, tcp_rr, tcp_crr, udp_rr (default all)")
	f.IntVar(&o.bulkRuns, "bulk-runs", 14, "rounds of bulk transfers (one per datapath each) per bulk row")
	f.IntVar(&o.bulkMiB, "bulk-mib", 128, "MiB one bulk transfer moves")
	f.DurationVar(&o.bulkLimit, "bulk-limit", 30*time.Second, "bound on one bulk transfer; one that hits it is recorded as stalled")
	f.StringSliceVar(&o.bulkRows, "bulk", nil, "bulk rows: "+strings.Join(bulkRowIDs(), ", ")+" (default all)")
	f.BoolVar(&noBulk, "no-bulk", false, "skip the bulk-transfer rows")
	f.StringVar(&o.mdPath, "md", ".cache/bench/results.md", "markdown output; empty for none")
	f.StringVar(&o.jsonPath, "json", ".cache/bench/results.json", "JSON output; empty for none")
	f.StringVar(&o.cacheDir, "cache", ".cache/pontoon-bench", "where docker-proxy is unpacked when docker.io is not installed")
	f.StringVar(&o.proxyBin, "docker-proxy", "", "docker-proxy binary to use instead of Debian's")
	f.StringVar(&o.iptables, "iptables", "iptables", "iptables binary: iptables, iptables-nft or iptables-legacy")
	f.IntVar(&childNice, "nice", -10, "nice value of every process in the worlds (clients, servers, proxies, iptables); 0 leaves it alone")
	f.BoolVar(&o.legacyTC, "legacy-tc", false, "attach Pontoon's uplink programs with clsact+cls_bpf instead of TCX")

	cmd.AddCommand(cleanupCmd(), serveCmd(), clientCmd(), attachCmd(), detachCmd(), netnsCookieCmd())
	return cmd
}

// applyPreset fills what --quick changes, unless a flag was given.
func applyPreset(cmd *cobra.Command, o *options) {
	if !o.quick {
		return
	}
	set := func(name string, fn func()) {
		if !cmd.Flags().Changed(name) {
			fn()
		}
	}
	set("runs", func() { o.runs = 4 })
	set("duration", func() { o.duration = 250 * time.Millisecond })
	set("scale", func() { o.scaleNs = []int{1, 1000} })
	set("scale-runs", func() { o.scaleRuns = 2 })
	set("bulk-runs", func() { o.bulkRuns = 3 })
	set("bulk-mib", func() { o.bulkMiB = 64 })
	set("bulk-limit", func() { o.bulkLimit = 10 * time.Second })
}

func cleanupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Remove what killed bench runs left behind (runs in progress are left alone)",
		Long: `Remove the namespaces, pins and cgroups of bench runs that were killed outright.
Every run does this when it starts; runs still in progress hold a lock and are never touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cleanStale(cmd.Context())
		},
	}
}

func serveCmd() *cobra.Command {
	var l listeners
	var readyFD int
	cmd := &cobra.Command{
		Use:    "serve",
		Short:  "the load tool's server (runs inside a container namespace)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return serve(l, readyFD)
		},
	}
	cmd.Flags().StringVar(&l.echo, "tcp-echo", ":80", "TCP echo address; empty for none")
	cmd.Flags().StringVar(&l.sink, "tcp-sink", ":5201", "TCP sink address; empty for none")
	cmd.Flags().StringVar(&l.udp, "udp-echo", ":53", "UDP echo address; empty for none")
	cmd.Flags().StringVar(&l.bulk, "tcp-bulk", ":5202", "TCP bulk-transfer address; empty for none")
	cmd.Flags().IntVar(&readyFD, "ready-fd", -1, "write readiness to this fd, as docker-proxy does")
	return cmd
}

func clientCmd() *cobra.Command {
	var kind, addr string
	var d time.Duration
	var size int64
	cmd := &cobra.Command{
		Use:    "client",
		Short:  "the load tool's client: one measure, result as JSON",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			r, err := runClient(kind, addr, d, size)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(r)
		},
	}
	cmd.Flags().StringVar(&kind, "measure", "rr", "stream, rr, crr, udp-rr, bulk-upload or bulk-download")
	cmd.Flags().StringVar(&addr, "addr", "", "address to dial")
	cmd.Flags().DurationVar(&d, "duration", time.Second, "how long to measure; for bulk transfers, the bound on one transfer")
	cmd.Flags().Int64Var(&size, "bytes", 256<<20, "bytes one bulk transfer moves")
	return cmd
}

func attachCmd() *cobra.Command {
	var o attachOptions
	var endpoints, endpoints6 map[string]string
	var xdp string
	var cookies []string
	cmd := &cobra.Command{
		Use:    "attach",
		Short:  "load and attach Pontoon's datapath in the current namespace",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			mode, err := loader.ParseXDPMode(xdp)
			if err != nil {
				return err
			}
			o.xdp = mode
			if o.endpoints, err = parseEndpoints("--endpoint", endpoints, false); err != nil {
				return err
			}
			if o.endpoints6, err = parseEndpoints("--endpoint6", endpoints6, true); err != nil {
				return err
			}
			for _, c := range cookies {
				v, err := strconv.ParseUint(c, 10, 64)
				if err != nil {
					return fmt.Errorf("--netns-cookie %q: %w", c, err)
				}
				o.netnsCookies = append(o.netnsCookies, v)
			}
			tcMode, err := attachDatapath(o)
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(tcMode)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.pinDir, "pin-dir", "", "bpffs directory for the pins")
	f.StringVar(&o.uplink, "uplink", "", "uplink interface")
	f.StringVar(&o.bridge, "bridge", "", "bridge interface")
	f.StringVar(&o.cgroup, "cgroup", "", "cgroup v2 directory for the socket hooks")
	f.BoolVar(&o.legacyTC, "legacy-tc", false, "attach with clsact+cls_bpf")
	f.BoolVar(&o.stackForwarding, "stack-forwarding", false, "leave translated packets to the kernel's forward path")
	f.StringVar(&xdp, "xdp", "off", "uplink XDP program: off, native, generic")
	f.StringToStringVar(&endpoints, "endpoint", nil, "a container's host-side veth and address, veth=addr (repeatable)")
	f.StringToStringVar(&endpoints6, "endpoint6", nil, "a container's host-side veth and IPv6 address, veth=addr (repeatable)")
	f.StringSliceVar(&cookies, "netns-cookie", nil, "a container namespace's cookie (repeatable)")
	return cmd
}

// parseEndpoints reads veth=addr flags whose addresses are all IPv6 or
// all IPv4.
func parseEndpoints(flag string, given map[string]string, ipv6 bool) (map[string]netip.Addr, error) {
	family := "IPv4"
	if ipv6 {
		family = "IPv6"
	}
	out := map[string]netip.Addr{}
	for ifname, s := range given {
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Is6() != ipv6 {
			return nil, fmt.Errorf("%s %s=%s: give a veth and an %s address", flag, ifname, s, family)
		}
		out[ifname] = addr
	}
	return out, nil
}

func detachCmd() *cobra.Command {
	var pinDir string
	cmd := &cobra.Command{
		Use:    "detach",
		Short:  "remove a datapath's attachments and pins (in the namespace that owns its interfaces)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if pinDir == "" {
				return fmt.Errorf("--pin-dir is required: refusing to clean up the default datapath")
			}
			return loader.Cleanup(pinDir)
		},
	}
	cmd.Flags().StringVar(&pinDir, "pin-dir", "", "bpffs directory of the pins")
	return cmd
}

func netnsCookieCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "netns-cookie",
		Short:  "print the current network namespace's cookie",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cookie, err := loader.NetnsCookie()
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(cookie)
		},
	}
}
