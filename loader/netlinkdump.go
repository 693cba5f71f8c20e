package loader

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// DumpAttempts bounds RetryDump.
const DumpAttempts = 5

// RetryDump asks for a netlink dump again while the kernel flags it
// interrupted (netlink.ErrDumpInterrupted: interfaces or addresses changed
// during it, as when a CNI plugin makes veths next to the agent); such a
// dump may miss entries, and what is missing would be taken for gone.
func RetryDump[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range DumpAttempts {
		if v, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return v, err
}
