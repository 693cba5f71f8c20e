package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
)

func newMonitor(o *opts) *cobra.Command {
	var (
		endpoint string
		drops    bool
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Show the datapath's events live: new flows, flows that end, drops with their reason",
		Long: `Show the datapath's events as they happen, like tcpdump for verdicts:
flows to published ports (IPv4 and IPv6) as they start and as they end,
masqueraded flows as they start, and every dropped packet with the reason
'pontoon status' counts it under. A TCP flow ends when the datapath sees
its FIN or RST; UDP and ICMP flows, and TCP flows that go quiet, end
(idle) when garbage collection takes them.

The datapath writes events only while a monitor runs, at most 1,000 per
CPU and second; what it holds back is reported as lost. With -o json,
each event is one JSON object on a line of its own; the first line is
{"type":"start"} once events flow.`,
		Args: exactArgs(0, "no arguments (--endpoint picks one endpoint)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(os.Stdout)
			return o.client().Monitor(ctx, endpoint, drops, func(m control.MonitorMessage) error {
				if o.output == "json" {
					return enc.Encode(m)
				}
				if m.Type == control.MonitorStart {
					_, err := fmt.Fprintln(os.Stderr, m)
					return err
				}
				_, err := fmt.Fprintln(os.Stdout, m)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only events to or from this endpoint")
	cmd.Flags().BoolVar(&drops, "drops", false, "only dropped packets")
	return cmd
}
