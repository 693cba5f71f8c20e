package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
)

func newPort(o *opts) *cobra.Command {
	cmd := &cobra.Command{Use: "port", Short: "Publish endpoint ports on the host"}
	cmd.AddCommand(newPortPublish(o), newPortLs(o), newPortUnpublish(o))
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
	return &cobra.Command{
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
			ms, err := o.client().Publish(control.PublishRequest{Endpoint: args[0], Specs: args[1:]})
			if err != nil {
				return err
			}
			return printMappings(o, ms)
		},
	}
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
			if q.Endpoint != "" || o.output == "json" {
				return printMappings(o, ms)
			}
			return o.show(ms, func(w io.Writer) {
				for _, m := range ms {
					for _, l := range control.DockerLines([]*control.PortMapping{m}) {
						fmt.Fprintf(w, "%s\t%s\n", m.Endpoint, l)
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
