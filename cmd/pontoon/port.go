package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/ipam"
)

func newPort(o *opts) *cobra.Command {
	cmd := &cobra.Command{Use: "port", Short: "Publish endpoint ports on the host"}
	cmd.AddCommand(newPortPublish(o), newPortLs(o), newPortInspect(o), newPortUnpublish(o))
	return cmd
}

func printMappings(o *opts, ms []*control.PortMapping) error {
	return o.show(ms, func(w io.Writer) {
		for _, l := range control.DockerLines(ms) {
			fmt.Fprintln(w, l)
		}
	})
}

func newPortPublish(o *opts) *cobra.Command {
	var allowFrom []string
	cmd := &cobra.Command{
		Use:   "publish ENDPOINT SPEC...",
		Short: "Publish ports: SPEC is [hostIP:][hostPort[-end]:]containerPort[-end][/tcp|udp]",
		Long: `Publish ports with Docker's -p grammar:
  [hostIP:][hostPort[-end]:]containerPort[-end][/tcp|udp]
A missing host port is allocated from the dynamic range. All specs are one
request and one batch of map updates: all of them are published, or none.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return fmt.Errorf("%s wants an endpoint and at least one port spec, such as 8080:80; see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ms, err := o.client().Publish(control.PublishRequest{Endpoint: args[0], Specs: args[1:], AllowFrom: allowFrom})
			if err != nil {
				return err
			}
			return printMappings(o, ms)
		},
	}
	cmd.Flags().StringArrayVar(&allowFrom, "allow-from", nil, "accept clients from outside only from this IPv4 or IPv6 CIDR (or address), repeatable, families mixed; the host's own clients are not filtered (default: any source)")
	return cmd
}

func newPortLs(o *opts) *cobra.Command {
	var (
		q        control.PortQuery
		hostPort int
	)
	cmd := &cobra.Command{
		Use: "ls [ENDPOINT]", Aliases: []string{"list"}, Short: "List published ports",
		Long: `List published ports, filtered by the agent. With --limit the agent sends
one page at a time: the command prints the flag that gets the next page.`,
		Args: maxArgs(1, "one endpoint"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if q.Endpoint != "" && q.Endpoint != args[0] {
					return fmt.Errorf("endpoint %s and --endpoint %s disagree: give one of them", args[0], q.Endpoint)
				}
				q.Endpoint = args[0]
			}
			if hostPort < 0 || hostPort > 65535 || (cmd.Flags().Changed("host-port") && hostPort == 0) {
				return fmt.Errorf("invalid --host-port %d: give a port of 1-65535", hostPort)
			}
			q.HostPort = uint16(hostPort)
			if q.Limit < 0 || (cmd.Flags().Changed("limit") && q.Limit == 0) {
				return fmt.Errorf("invalid --limit %d: give how many mappings a page holds, 1 or more", q.Limit)
			}
			page, err := o.client().PortsPage(q)
			if err != nil {
				return err
			}
			ms := page.Mappings
			if page.Next != "" {
				fmt.Fprintf(os.Stderr, "more mappings follow: run it again with --after %s\n", page.Next)
			}
			if o.output == "json" && (q.Limit > 0 || q.After != "") {
				return o.show(page, nil)
			}
			if o.output == "json" {
				return printMappings(o, ms)
			}
			// Docker's lines, then the mapping's traffic; a range's
			// lines share one counter, shown on its first line. The
			// traffic is no column of its own: pages of --limit line up
			// as the whole list does.
			return o.show(ms, func(w io.Writer) {
				for _, m := range ms {
					for i, l := range control.DockerLines([]*control.PortMapping{m}) {
						if q.Endpoint == "" {
							fmt.Fprintf(w, "%s\t", mappingOwner(m))
						}
						if i == 0 {
							l += "  " + trafficText(m)
						}
						fmt.Fprintln(w, l)
					}
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Endpoint, "endpoint", "", "only this endpoint's mappings (the same as the ENDPOINT argument)")
	f.StringVar(&q.Proto, "proto", "", "only tcp or only udp mappings")
	f.IntVar(&hostPort, "host-port", 0, "only mappings whose host ports include this one")
	f.IntVar(&q.Limit, "limit", 0, "at most this many mappings, then the flag that gets the next page (default: all)")
	f.StringVar(&q.After, "after", "", "the page after this token, as printed by a --limit run")
	return cmd
}

func newPortUnpublish(o *opts) *cobra.Command {
	return &cobra.Command{
		Use:   "unpublish ENDPOINT SPEC",
		Short: "Unpublish the endpoint's ports matching SPEC (container ports, and host IP/ports when given); the rest of a range stays published",
		Args:  exactArgs(2, "an endpoint and a port spec"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ms, err := o.client().Unpublish(control.UnpublishRequest{Endpoint: args[0], Spec: args[1]})
			if err != nil {
				return err
			}
			return printMappings(o, ms)
		},
	}
}

// trafficText is a mapping's counters, in and out, with its binding id.
func trafficText(m *control.PortMapping) string {
	t := m.Traffic
	if t == nil {
		return fmt.Sprintf("(binding %d, no counters)", m.ID)
	}
	return fmt.Sprintf("(binding %d: in %d pkts %s, out %d pkts %s)", m.ID, t.PacketsIn, bytesSize(t.BytesIn), t.PacketsOut, bytesSize(t.BytesOut))
}

// bytesSize is n in B, KiB, MiB... with one decimal past bytes.
func bytesSize(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB", "PiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

func newPortInspect(o *opts) *cobra.Command {
	var (
		q        control.PortQuery
		hostPort int
	)
	cmd := &cobra.Command{
		Use:   "inspect [BINDING_ID]",
		Short: "Show a mapping and what it carried: by binding id, or by --host-port",
		Long: `Show one published mapping: endpoint, protocol, host address and ports,
container address and ports, binding id, and the packets and bytes it
carried in (to the container) and out (its replies). Name it by its
binding id (BINDING in 'pontoon ct ls', binding_id in 'port ls -o json'),
or by --host-port with --proto when TCP and UDP share the port.
Counters survive agent restarts and upgrades of the datapath; clients the
socket hooks connect straight to the container (127.0.0.1:P, hostIP:P
from the host) send no packet through a translation and are not counted.`,
		Args: maxArgs(1, "one binding id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 && cmd.Flags().Changed("host-port"):
				return fmt.Errorf("give a binding id or --host-port, not both")
			case len(args) == 1:
				id, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || id == 0 {
					return fmt.Errorf("invalid binding id %q: give the number 'pontoon port ls -o json' shows as binding_id", args[0])
				}
				q.BindingID = uint32(id)
			case !cmd.Flags().Changed("host-port"):
				return fmt.Errorf("%s wants a binding id or --host-port; see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			case hostPort < 1 || hostPort > 65535:
				return fmt.Errorf("invalid --host-port %d: give a port of 1-65535", hostPort)
			default:
				q.HostPort = uint16(hostPort)
			}
			page, err := o.client().PortsPage(q)
			if err != nil {
				return err
			}
			ms := page.Mappings
			if len(ms) == 0 {
				if q.BindingID != 0 {
					return fmt.Errorf("no mapping has binding id %d: list them with 'pontoon port ls -o json'", q.BindingID)
				}
				return fmt.Errorf("no mapping publishes host port %d%s: list them with 'pontoon port ls'", q.HostPort, protoSuffix(q.Proto))
			}
			return o.show(ms, func(w io.Writer) {
				for i, m := range ms {
					if i > 0 {
						fmt.Fprintln(w)
					}
					printMapping(w, m)
				}
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&hostPort, "host-port", 0, "the mapping whose host ports include this one")
	f.StringVar(&q.Proto, "proto", "", "with --host-port: only tcp or only udp")
	return cmd
}

func protoSuffix(proto string) string {
	if proto == "" {
		return ""
	}
	return "/" + proto
}

func printMapping(w io.Writer, m *control.PortMapping) {
	row(w, "endpoint:", mappingOwner(m))
	row(w, "binding id:", m.ID)
	row(w, "protocol:", m.Proto)
	row(w, "host:", portRange(m.HostIP, m.Host))
	if m.Backend6.IsValid() {
		row(w, "host (IPv6):", portRange(netip.IPv6Unspecified(), m.Host))
	}
	row(w, "container:", portRange(m.Backend, m.Container))
	if m.Backend6.IsValid() {
		row(w, "container (IPv6):", portRange(m.Backend6, m.Container))
	}
	if t := m.Traffic; t != nil {
		row(w, "in:", fmt.Sprintf("%d packets, %d bytes", t.PacketsIn, t.BytesIn))
		row(w, "out:", fmt.Sprintf("%d packets, %d bytes", t.PacketsOut, t.BytesOut))
	} else {
		row(w, "traffic:", "no counters (the agent could not give this mapping any; see its log)")
	}
}

func portRange(a netip.Addr, r ipam.PortRange) string {
	s := netip.AddrPortFrom(a, r.First).String()
	if r.Last != r.First {
		s += "-" + strconv.Itoa(int(r.Last))
	}
	return s
}

// mappingOwner names a mapping's endpoint and, for an engine's endpoint,
// its container: "docker-3f2a1b0c9d8e (web)".
func mappingOwner(m *control.PortMapping) string {
	switch {
	case m.ContainerName != "":
		return m.Endpoint + " (" + m.ContainerName + ")"
	case m.ContainerID != "":
		return m.Endpoint + " (container " + m.ContainerID[:min(12, len(m.ContainerID))] + ")"
	}
	return m.Endpoint
}
