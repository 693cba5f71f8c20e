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
		Short: "Remove every pin, attachment, bridge and veth (stop the agent first)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := control.Cleanup(stateDir, pinDir, purge); err != nil {
				return err
			}
			fmt.Println("removed pontoon's interfaces, pins and attachments")
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
