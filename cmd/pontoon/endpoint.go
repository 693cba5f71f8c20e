package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
)

func newEndpoint(o *opts) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Attach network namespaces to networks"}
	cmd.AddCommand(newEndpointAttach(o), newEndpointLs(o), newEndpointInspect(o), newEndpointDetach(o))
	return cmd
}

func newEndpointAttach(o *opts) *cobra.Command {
	var req control.EndpointAttach
	cmd := &cobra.Command{
		Use:   "attach NETWORK NAME (--netns PATH | --pid PID)",
		Short: "Attach a network namespace: veth, eth0 inside, address, default route, MTU",
		Long: `Attach a network namespace to a network: a veth pair with one end on the
network's bridge and the other inside the namespace, with an address, the MTU
and a default route via the gateway.

A namespace may be attached to several networks, one endpoint each, as
docker network connect does: the first endpoint is eth0, later ones eth1,
eth2, ... (or --ifname). The namespace has one default route, the first
endpoint's or the one attached with --default-route; detaching its holder
moves it to another endpoint of the namespace. Publish ports per endpoint:
each network's ports go to that endpoint's address.`,
		Args: exactArgs(2, "a network and an endpoint name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Network, req.Name = args[0], args[1]
			if req.Netns != "" {
				// The agent resolves paths from its own working directory.
				abs, err := filepath.Abs(req.Netns)
				if err != nil {
					return fmt.Errorf("resolve --netns %s: %w", req.Netns, err)
				}
				req.Netns = abs
				// The agent checks again; a path this process cannot
				// open is left to it.
				if err := control.CheckNetnsFile(abs); err != nil {
					return err
				}
			}
			if req.PID < 0 {
				return fmt.Errorf("--pid %d: give the id of a process inside the namespace", req.PID)
			}
			e, err := o.client().Attach(req)
			if err != nil {
				return err
			}
			return o.show(e, func(w io.Writer) {
				fmt.Fprintf(w, "%s %s/%d via %s on %s (mac %s)\n", e.Name, e.IP, e.PrefixLen, e.Gateway, endpointIf(e), e.MAC)
				if e.IPv6.IsValid() {
					fmt.Fprintf(w, "%s %s/%d via %s on %s\n", e.Name, e.IPv6, e.PrefixLen6, e.Gateway6, endpointIf(e))
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Netns, "netns", "", "network namespace path, such as /run/netns/NAME (never the agent's own or the host's)")
	f.IntVar(&req.PID, "pid", 0, "a process whose network namespace to attach (never one in the agent's or the host's)")
	f.StringVar(&req.IP, "ip", "", "address inside a subnet of the network, also outside its --ip-range (default: the next free one)")
	f.StringVar(&req.IP6, "ip6", "", "IPv6 address inside an IPv6 subnet of a dual-stack network (default: the next free one)")
	f.StringVar(&req.MAC, "mac", "", "MAC address of the interface (default: random)")
	f.StringVar(&req.IfName, "ifname", "", "interface name inside the namespace (default: the first free of eth0, eth1, ...)")
	f.BoolVar(&req.DefaultRoute, "default-route", false, "take over the namespace's default route (the first endpoint of a namespace has it anyway)")
	return cmd
}

func newEndpointLs(o *opts) *cobra.Command {
	var network string
	cmd := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List endpoints",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			es, err := o.client().Endpoints(network)
			if err != nil {
				return err
			}
			return o.show(es, func(w io.Writer) {
				row(w, "NAME", "NETWORK", "IP", "IFNAME", "MAC", "HOST IF", "NETNS")
				for _, e := range es {
					ips := e.IP.String()
					if e.IPv6.IsValid() {
						ips += "," + e.IPv6.String()
					}
					row(w, e.Name, e.Network, ips, endpointIfName(e), e.MAC, e.HostIf, e.Netns)
				}
			})
		},
	}
	cmd.Flags().StringVar(&network, "network", "", "only endpoints of this network")
	return cmd
}

func newEndpointInspect(o *opts) *cobra.Command {
	return &cobra.Command{
		Use: "inspect NAME", Short: "Show an endpoint",
		Args: exactArgs(1, "an endpoint name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := o.client().Endpoint(args[0])
			if err != nil {
				return err
			}
			return o.show(e, func(w io.Writer) {
				row(w, "name:", e.Name)
				row(w, "network:", e.Network)
				row(w, "netns:", e.Netns)
				row(w, "address:", fmt.Sprintf("%s/%d", e.IP, e.PrefixLen))
				row(w, "gateway:", e.Gateway)
				if e.IPv6.IsValid() {
					row(w, "ipv6 address:", fmt.Sprintf("%s/%d", e.IPv6, e.PrefixLen6))
					row(w, "ipv6 gateway:", e.Gateway6)
				}
				row(w, "interface:", endpointIfName(e))
				row(w, "default route:", !e.NoDefaultRoute)
				row(w, "mac:", e.MAC)
				row(w, "mtu:", e.MTU)
				row(w, "host interface:", e.HostIf)
			})
		},
	}
}

func newEndpointDetach(o *opts) *cobra.Command {
	return &cobra.Command{
		Use: "detach NAME", Short: "Detach an endpoint and unpublish its ports",
		Args: exactArgs(1, "an endpoint name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.client().Detach(args[0]); err != nil {
				return err
			}
			return o.show(map[string]string{"detached": args[0]}, func(w io.Writer) { fmt.Fprintln(w, args[0]) })
		},
	}
}

// endpointIfName is the endpoint's interface inside its namespace; older
// agents leave it out for eth0.
func endpointIfName(e *control.Endpoint) string {
	if e.IfName == "" {
		return "eth0"
	}
	return e.IfName
}

// endpointIf names both ends for the attach line: eth1 (host ptv...).
func endpointIf(e *control.Endpoint) string {
	return fmt.Sprintf("%s (host %s)", endpointIfName(e), e.HostIf)
}
