package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
)

func newCT(o *opts) *cobra.Command {
	cmd := &cobra.Command{Use: "ct", Aliases: []string{"conntrack"}, Short: "List or flush tracked flows (published ports and masquerade)"}
	cmd.AddCommand(newCTLs(o), newCTFlush(o))
	return cmd
}

func newCTLs(o *opts) *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List tracked flows, like conntrack -L",
		Long: `List tracked flows: connections to published ports (client, the host
address and port it dialled, the backend it reached, the binding) and
masqueraded flows of containers (container, the address and port it left
with, the server). AGE is since the flow's first packet (">=" for a flow
carried over from a build that kept no start time: counted from its last
packet before the upgrade); IDLE is since the flow's last packet; EXPIRES is when
garbage collection takes it if it stays idle.`,
		Args: exactArgs(0, "no arguments (--endpoint picks one endpoint)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := o.client().Conntrack(endpoint)
			if err != nil {
				return err
			}
			return o.show(l, func(w io.Writer) { printConntrack(w, l) })
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only flows to or from this endpoint")
	return cmd
}

func printConntrack(w io.Writer, l *control.ConntrackList) {
	if len(l.Flows) == 0 && len(l.SNAT) == 0 {
		fmt.Fprintln(w, "no tracked flows")
		return
	}
	if len(l.Flows) > 0 {
		row(w, "PROTO", "STATE", "CLIENT", "DIALLED", "BACKEND", "BINDING", "AGE", "IDLE", "EXPIRES", "TABLE")
		for _, f := range l.Flows {
			row(w, f.Proto, orDash(f.State), f.Client, f.Dialled, f.Backend, f.BindingID, f.AgeString(), seconds(f.Idle), seconds(f.ExpiresIn), f.Table)
		}
	}
	if len(l.SNAT) > 0 {
		if len(l.Flows) > 0 {
			fmt.Fprintln(w)
		}
		row(w, "PROTO", "STATE", "CONTAINER", "TRANSLATED", "SERVER", "IDLE", "EXPIRES", "NOTE")
		for _, f := range l.SNAT {
			row(w, f.Proto, orDash(f.State), f.Container, f.Translated, f.Server, seconds(f.Idle), seconds(f.ExpiresIn), orDash(f.Half))
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func seconds(d time.Duration) string { return d.Round(time.Second).String() }

func newCTFlush(o *opts) *cobra.Command {
	var binding uint32
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Forget tracked flows: one binding's, or all",
		Long: `Forget tracked flows. With --binding, the connections to that published
binding (its id is binding_id in 'pontoon port ls -o json'); without, every
flow of ct, ct_new and snat. Flushing breaks the TCP connections it
forgets: only a SYN opens a flow to a published port, and a masqueraded
flow's next packet takes a new source port.`,
		Args: exactArgs(0, "no arguments (--binding picks one binding)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req control.ConntrackFlush
			if cmd.Flags().Changed("binding") {
				req.BindingID = &binding
			}
			n, err := o.client().FlushConntrack(req)
			if err != nil {
				return err
			}
			return o.show(n, func(w io.Writer) {
				fmt.Fprintf(w, "deleted %d conntrack and %d snat entries\n", n.Conntrack, n.SNAT)
			})
		},
	}
	cmd.Flags().Uint32Var(&binding, "binding", 0, "only the flows of this binding id")
	return cmd
}
