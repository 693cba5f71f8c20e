package main

import (
	"fmt"
	"io"

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
	return &cobra.Command{
		Use: "ls [ENDPOINT]", Aliases: []string{"list"}, Short: "List published ports",
		Args: maxArgs(1, "one endpoint"),
		RunE: func(cmd *cobra.Command, args []string) error {
			endpoint := ""
			if len(args) == 1 {
				endpoint = args[0]
			}
			ms, err := o.client().Ports(endpoint)
			if err != nil {
				return err
			}
			if endpoint != "" || o.output == "json" {
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
