package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader"
)

func newState() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Repair the agent's state file (stop the agent first)",
		Args:  exactArgs(0, "a subcommand; see 'pontoon state --help'"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fmt.Errorf("pontoon state wants a subcommand: rebuild; see 'pontoon state --help'")
		},
	}
	var stateDir, pinDir string
	var force bool
	rebuild := &cobra.Command{
		Use:   "rebuild",
		Short: "Write a new state file from the interfaces and pinned maps",
		Long: `Write a new state file from what the kernel of the network namespace this
runs in (run it in the agent's) still holds, for when the agent refuses to
start on a damaged or missing one: networks from the bridges labelled
pontoon:net:NAME and the pinned networks map, endpoints from the veths
labelled pontoon:ep:NAME, their peer's namespace and the pinned endpoints map,
port mappings from the pinned bindings map. The old file is moved aside to
pontoon.db.corrupt-TIME, never deleted. It prints what it rebuilt and what it
could not. Refused while an agent holds the state file, and, without --force,
when the file is whole.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := control.Rebuild(stateDir, pinDir, force)
			if err != nil {
				return err
			}
			if rep.MovedAside != "" {
				fmt.Println("moved the old state file aside to", rep.MovedAside)
			}
			fmt.Printf("rebuilt %s: %d networks, %d endpoints, %d port mappings\n", rep.Path, len(rep.Networks), len(rep.Endpoints), len(rep.Mappings))
			for _, n := range rep.Networks {
				fmt.Println("network", n)
			}
			for _, e := range rep.Endpoints {
				fmt.Println("endpoint", e)
			}
			for _, m := range rep.Mappings {
				fmt.Println("port", m)
			}
			for _, l := range rep.Lost {
				fmt.Println("not rebuilt:", l)
			}
			fmt.Println("start the agent: it takes these records as the truth")
			return nil
		},
	}
	rebuild.Flags().StringVar(&stateDir, "state-dir", control.DefaultStateDir, "directory of the state file")
	rebuild.Flags().StringVar(&pinDir, "bpffs", loader.DefaultPinDir, "bpffs directory of the pins")
	rebuild.Flags().BoolVar(&force, "force", false, "replace a state file that is whole too")
	cmd.AddCommand(rebuild)
	return cmd
}
