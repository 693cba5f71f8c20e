// Command pontoon is the Pontoon node agent and its CLI.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
)

// opts are the flags every client command takes.
type opts struct {
	socket string
	output string
}

func (o *opts) client() *control.Client { return control.NewClient(o.socket) }

// The process's first thread stays with main's goroutine, so none other
// ever runs on it: it stays in the agent's namespace even should a thread
// be lost inside a container's, and /proc/PID/ns/net, which names the
// first thread's namespace, keeps naming the agent's.
func init() { runtime.LockOSThread() }

func main() {
	if err := newRoot().Execute(); err != nil {
		// One line, as the agent wrote it.
		fmt.Fprintln(os.Stderr, "pontoon: "+strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	o := &opts{}
	root := &cobra.Command{
		Use:           "pontoon",
		Short:         "Container bridge networking in BPF, without iptables or proxies",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if o.output != "text" && o.output != "json" {
				return fmt.Errorf("unknown output format %q: use -o text or -o json", o.output)
			}
			return nil
		},
	}
	socket := control.DefaultSocket
	if env := os.Getenv("PONTOON_SOCKET"); env != "" {
		socket = env
	}
	root.PersistentFlags().StringVar(&o.socket, "socket", socket, "agent API socket (env PONTOON_SOCKET)")
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%v; see '%s --help'", err, cmd.CommandPath())
	})
	root.AddCommand(newAgent(o), newNetwork(o), newEndpoint(o), newPort(o), newStatus(o), newCT(o), newMonitor(o), newCleanup(), newState())
	return root
}

// exactArgs is cobra.ExactArgs with a message that names the arguments.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s wants %s, got %d arguments; see '%s --help'", cmd.CommandPath(), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func maxArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return fmt.Errorf("%s takes at most %s, got %d arguments; see '%s --help'", cmd.CommandPath(), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}
