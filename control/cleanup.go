package control

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
)

// Cleanup removes everything an agent put in the kernel: the interfaces
// it labelled, gateway addresses it added to adopted bridges, and every
// pin and attachment. With purge the state file goes too; without it a
// later agent rebuilds the same networks from it. The agent must be
// stopped: its lock on the state file says whether it is.
func Cleanup(stateDir, pinDir string, purge bool) error {
	path := StatePath(stateDir)
	if _, err := os.Stat(path); err == nil {
		store, err := ipam.OpenBolt(path)
		if err != nil {
			return fmt.Errorf("the agent still runs (%v): stop it first with 'systemctl stop pontoon'", err)
		}
		st, err := loadState(store)
		if err == nil {
			for _, n := range st.networks {
				if n.Adopted {
					if err := removeBridge(n); err != nil {
						store.Close()
						return err
					}
				}
			}
		}
		store.Close()
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	// Veths first: deleting a bridge leaves its ports, deleting a veth
	// takes its peer in the container away too.
	for _, prefix := range []string{vethAlias, bridgeAlias} {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Alias, prefix) {
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("delete %s: %w", l.Attrs().Name, err)
				}
			}
		}
	}
	if err := loader.Cleanup(pinDir); err != nil {
		return err
	}
	if purge {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove state file: %w", err)
		}
	}
	return nil
}
