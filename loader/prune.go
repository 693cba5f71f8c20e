package loader

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
)

// PruneGone removes the pins of tc attachments whose interface no longer
// exists (a deleted veth or bridge takes its programs with it, but not the
// pins naming them). It returns how many went.
func (d *Datapath) PruneGone() (int, error) {
	// One dump rather than a lookup per pin: a host may have thousands.
	// A dump interrupted by interface changes may miss some, whose pins
	// would go: ask again until one is whole.
	links, err := RetryDump(netlink.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list interfaces: %w", err)
	}
	alive := make(map[int]bool, len(links))
	for _, l := range links {
		alive[l.Attrs().Index] = true
	}
	d.dropHeldGone(alive)
	n := 0
	for _, sub := range []string{linksDir, progsDir} {
		entries, err := os.ReadDir(filepath.Join(d.pinDir, sub))
		if err != nil {
			return n, err
		}
		for _, e := range entries {
			kind, _, ifindex, ok := parsePinName(e.Name())
			if !ok || (kind != "tcx" && kind != "tc" && kind != "xdp") {
				continue
			}
			// An interface made since the dump is asked about again.
			if alive[ifindex] {
				continue
			}
			if _, err := netlink.LinkByIndex(ifindex); err == nil {
				continue
			}
			pin := filepath.Join(d.pinDir, sub, e.Name())
			if kind == "tcx" || kind == "xdp" {
				_, err = d.unpinLink(pin)
			} else {
				err = os.Remove(pin)
			}
			if err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
