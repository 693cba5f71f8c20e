package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader"
)

func newCleanup() *cobra.Command {
	var stateDir, pinDir string
	var purge bool
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove Pontoon's pins, attachments, bridges and veths (stop the agent first)",
		Long: `Remove what the agent put in the kernel of the network namespace this runs
in (run it in the agent's): the bridges and veths it provably made (their
alias says pontoon:net:NETWORK or pontoon:ep:ENDPOINT, and their kind and name
are the ones the agent gives them; anything else is left and listed), the
gateway addresses it put on adopted bridges, the pins a datapath makes and
their attachments (any other pin under --bpffs is left and listed). It puts
back the net.ipv4.ip_forward value the agent found. --purge also deletes the
state file. Refused, changing nothing, while an agent answers on --socket,
runs in this network namespace, or holds the state directory, the pin
directory or the state file, whatever --state-dir says.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			// --socket is the root's persistent flag (and PONTOON_SOCKET).
			rep, err := control.Cleanup(stateDir, pinDir, cmd.Flag("socket").Value.String(), purge)
			if err != nil {
				return err
			}
			fmt.Printf("removed pontoon's interfaces (%d), pins and attachments\n", len(rep.Deleted))
			for _, k := range rep.Kept {
				fmt.Println("left", k, "- not provably pontoon's; delete it yourself if it is")
			}
			for _, p := range rep.ForeignPins {
				fmt.Printf("left %s in %s - not a pin pontoon makes; remove it yourself if it is\n", p, pinDir)
			}
			if rep.IPForward != "" {
				fmt.Println("restored net.ipv4.ip_forward to", rep.IPForward)
			}
			if rep.IPv6Forward != "" {
				fmt.Println("restored net.ipv6.conf.all.forwarding to", rep.IPv6Forward)
			}
			for _, n := range rep.Notes {
				fmt.Println(n)
			}
			if purge {
				fmt.Println("removed the state file", control.StatePath(stateDir))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", control.DefaultStateDir, "directory of the state file")
	cmd.Flags().StringVar(&pinDir, "bpffs", loader.DefaultPinDir, "bpffs directory of the pins")
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the state file")
	return cmd
}
