package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
)

func newNetwork(o *opts) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Create, list, inspect and remove networks"}
	cmd.AddCommand(newNetworkCreate(o), newNetworkLs(o), newNetworkInspect(o), newNetworkRm(o))
	return cmd
}

func newNetworkCreate(o *opts) *cobra.Command {
	var req control.NetworkCreate
	var icc, masq bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a network: a bridge with a subnet",
		Long: `Create a network: a bridge with a subnet. Without --subnet a free private range
is picked that overlaps no route, address or nameserver of the host. --bridge
names the bridge; naming an existing bridge adopts it.

As with docker network create, --subnet, --gateway, --ip-range and
--aux-address may be repeated: each gateway, range and auxiliary address
belongs to the subnet that holds it. Endpoints get the next free address
of the first subnet with room, from its --ip-range when it has one (a
static --ip may lie anywhere in a subnet); --aux-address name=IP reserves
an address that is never handed out.

By default the outside reaches containers only through published ports and
replies to flows they opened, and their outgoing traffic is masqueraded.
--routed lets other hosts reach the containers by their own addresses, on
any port (Docker's routed gateway mode; give them a route to the subnet via
this host). It implies no masquerade: the containers' own addresses leave
the host too, so --routed with --masquerade=true is refused.

--ipv6 makes the network dual-stack: an IPv6 subnet besides the IPv4 one
(--subnet6, or a unique local /64 picked like an IPv4 subnet), whose gateway
the bridge carries; every endpoint gets an address of each family. An IPv6
--subnet or --subnet6 implies --ipv6, and an IPv4 subnet is picked when none
is given. Published ports take both families. --masquerade6 translates
outgoing IPv6 (NAT66: the uplink's IPv6 address, off by default as with
Docker). Without it, --masquerade (the default) keeps IPv6 within the
host; with --masquerade=false or --routed, IPv6 is as IPv4 is then: the
containers' own addresses leave if the host forwards IPv6. --masquerade
is IPv4's alone otherwise, so --masquerade=false --masquerade6
translates IPv6 only.`,
		Args: exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if cmd.Flags().Changed("icc") {
				req.ICC = &icc
			}
			if cmd.Flags().Changed("masquerade") {
				if masq && req.Routed {
					return fmt.Errorf("--routed and --masquerade=true exclude each other: a routed network's containers are reached, and reach out, by their own addresses; leave out --masquerade")
				}
				req.Masquerade = &masq
			}
			n, err := o.client().CreateNetwork(req)
			if err != nil {
				return err
			}
			return o.show(n, func(w io.Writer) {
				for _, sub := range networkSubnets(&n.Network) {
					fmt.Fprintf(w, "%s %s gateway %s bridge %s\n", n.Name, sub.Subnet, sub.Gateway, n.Bridge)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Subnets, "subnet", nil, "subnet CIDR, such as 10.88.0.0/16 (default: a free private range); repeat for several")
	f.StringArrayVar(&req.Gateways, "gateway", nil, "gateway address inside a subnet (default: its first address); one per subnet")
	f.StringArrayVar(&req.IPRanges, "ip-range", nil, "allocate dynamic addresses only from this CIDR inside a subnet; one per subnet")
	f.StringArrayVar(&req.AuxAddresses, "aux-address", nil, "name=IP: reserve an address of a subnet, never handed out; repeatable")
	f.StringVar(&req.Bridge, "bridge", "", "bridge interface name; an existing bridge is adopted")
	f.IntVar(&req.MTU, "mtu", 0, "MTU of the bridge and the endpoints (default 1500)")
	f.BoolVar(&icc, "icc", true, "allow direct traffic between endpoints of the network (false: only through published ports)")
	f.BoolVar(&masq, "masquerade", true, "give outgoing traffic the uplink's address (default false with --routed)")
	f.BoolVar(&req.Routed, "routed", false, "let the outside reach endpoints by their own addresses, any port, without masquerade (Docker's routed gateway mode)")
	f.BoolVar(&req.IPv6, "ipv6", false, "give the network an IPv6 subnet too (default: a unique local /64); endpoints get both families")
	f.StringVar(&req.Subnet6, "subnet6", "", "IPv6 subnet, a /64 to /120, such as fd00:1::/64 (implies --ipv6)")
	f.StringVar(&req.Gateway6, "gateway6", "", "IPv6 gateway inside --subnet6 (default: its first address after the subnet-router anycast one)")
	f.BoolVar(&req.Masquerade6, "masquerade6", false, "give outgoing IPv6 the uplink's IPv6 address (NAT66); needs an IPv6 subnet, excludes --routed")
	f.BoolVar(&req.Force, "force", false, "accept a subnet that overlaps a route of the host (one that is not an interface's own subnet)")
	return cmd
}

func newNetworkLs(o *opts) *cobra.Command {
	return &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List networks",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := o.client().Networks()
			if err != nil {
				return err
			}
			return o.show(ns, func(w io.Writer) {
				row(w, "NAME", "SUBNET", "GATEWAY", "BRIDGE", "MTU", "MODE", "ENDPOINTS")
				for _, n := range ns {
					var subnets, gateways []string
					for _, sub := range networkSubnets(&n.Network) {
						subnets = append(subnets, sub.Subnet.String())
						gateways = append(gateways, sub.Gateway.String())
					}
					row(w, n.Name, strings.Join(subnets, ","), strings.Join(gateways, ","), n.Bridge, n.MTU, networkMode(&n.Network), len(n.Endpoints))
				}
			})
		},
	}
}

func newNetworkInspect(o *opts) *cobra.Command {
	return &cobra.Command{
		Use: "inspect NAME", Short: "Show a network",
		Args: exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := o.client().Network(args[0])
			if err != nil {
				return err
			}
			return o.show(n, func(w io.Writer) {
				row(w, "name:", n.Name)
				for _, sub := range networkSubnets(&n.Network) {
					row(w, "subnet:", sub.Subnet)
					row(w, "  gateway:", sub.Gateway)
					if sub.IPRange.IsValid() {
						row(w, "  ip range:", sub.IPRange)
					}
					for _, name := range slices.Sorted(maps.Keys(sub.AuxAddresses)) {
						row(w, "  aux address:", name+"="+sub.AuxAddresses[name].String())
					}
				}
				bridge := n.Bridge
				if n.Adopted {
					bridge += " (adopted)"
				}
				row(w, "bridge:", bridge)
				row(w, "mtu:", n.MTU)
				row(w, "icc:", n.ICC)
				row(w, "masquerade:", n.Masquerade)
				row(w, "masquerade6:", n.Masquerade6)
				row(w, "routed:", n.Routed)
				row(w, "ipv6:", n.IPv6)
				row(w, "endpoints:", strings.Join(n.Endpoints, " "))
				for _, note := range n.Notes {
					row(w, "note:", note)
				}
			})
		},
	}
}

func newNetworkRm(o *opts) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"remove"}, Short: "Remove a network (refused while endpoints are attached, unless --force)",
		Args: exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.client().RemoveNetwork(args[0], force); err != nil {
				return err
			}
			return o.show(map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintln(w, args[0]) })
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "detach the network's endpoints first")
	return cmd
}

// networkMode is how the outside sees a network, for `network ls`: nat
// (masquerade, only published ports reachable), nat66 (IPv6 masqueraded,
// IPv4 not), routed (reachable by container addresses) or internal (none
// of them).
func networkMode(n *control.Network) string {
	switch {
	case n.Routed:
		return "routed"
	case n.Masquerade:
		return "nat"
	case n.Masquerade6:
		return "nat66"
	}
	return "internal"
}

// networkSubnets is every subnet of n, also from an agent that reports
// only the first.
func networkSubnets(n *control.Network) []control.NetworkSubnet {
	if len(n.Subnets) > 0 {
		return n.Subnets
	}
	return []control.NetworkSubnet{{Subnet: n.Subnet, Gateway: n.Gateway}}
}
