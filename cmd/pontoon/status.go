package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/maps"
)

func newStatus(o *opts) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent, the kernel features in use, attachments and counts",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.client().Status()
			if err != nil {
				return err
			}
			return o.show(s, func(w io.Writer) {
				agent := fmt.Sprintf("running, pid %d", s.PID)
				if s.Health != "ok" {
					agent += ", " + s.Health
				}
				if len(s.Degraded) > 0 {
					agent += ", degraded"
				}
				row(w, "agent:", agent)
				// What the agent could not restore comes first: it is
				// why the rest may not hold.
				for _, d := range s.Degraded {
					row(w, "degraded:", d)
				}
				row(w, "socket:", s.Socket)
				row(w, "state:", s.StateFile)
				row(w, "last good state:", s.StateBackup)
				row(w, "pins:", s.PinDir)
				row(w, "tc attach mode:", s.TCMode)
				for _, f := range s.KernelFeatures {
					row(w, "kernel feature:", f.String())
				}
				row(w, "socket hooks on:", s.Cgroup)
				for _, u := range s.Uplinks {
					masq := "masquerades as " + u.Addr.String()
					if !u.Addr.IsValid() {
						masq = "no IPv4 address: drops masqueraded flows"
					}
					if u.Addr6.IsValid() {
						masq += ", IPv6 as " + u.Addr6.String()
					}
					xdp := "xdp " + u.XDP
					if u.XDP == "" {
						xdp = "xdp off"
					}
					row(w, "uplink:", u.Name+" ("+u.Mode+", "+xdp+", "+masq+")")
					if u.Warning != "" {
						row(w, "  warning:", u.Warning)
					}
				}
				for _, a := range s.Attachments {
					row(w, "attachment:", a.Kind+" "+a.Hook+" on "+a.Target)
				}
				row(w, "networks:", s.Networks)
				row(w, "endpoints:", s.Endpoints)
				row(w, "port mappings:", s.Mappings)
				row(w, "bindings in map:", s.Bindings)
				row(w, "conntrack entries:", fmt.Sprintf("%d (%d unanswered, in ct_new)", s.CTEntries, s.CTNew))
				row(w, "host addresses:", s.HostAddrs)
				row(w, "dynamic ports:", s.DynamicPorts)
				row(w, "masquerade ports:", s.SNATPorts)
				printCounters(w, s.Counters)
			})
		},
	}
}

// printCounters shows the datapath counters that moved, by name: drops
// first (and "drops: none" when there are none, so their absence shows),
// then passes to the stack, then the rest.
func printCounters(w io.Writer, counters map[string]maps.Counter) {
	names := make([]string, 0, len(counters))
	for n, c := range counters {
		if c.Packets > 0 {
			names = append(names, n)
		}
	}
	order := map[string]int{"drop": 0, "pass": 1, "other": 2}
	sort.Slice(names, func(i, j int) bool {
		vi, vj := order[control.StatVerdict(names[i])], order[control.StatVerdict(names[j])]
		return vi < vj || vi == vj && names[i] < names[j]
	})
	if len(names) == 0 || control.StatVerdict(names[0]) != "drop" {
		row(w, "drops:", "none")
	}
	for _, n := range names {
		label := "counter"
		if v := control.StatVerdict(n); v != "other" {
			label = v
		}
		c := counters[n]
		row(w, label+" "+n+":", fmt.Sprintf("%d packets, %d bytes", c.Packets, c.Bytes))
	}
}
