package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/vishvananda/netlink"
)

// Attachment is one program attached by a datapath, as its pins record it.
type Attachment struct {
	// Kind is "tcx", "legacy-tc" or "cgroup".
	Kind string `json:"kind"`
	// Hook is ingress or egress for tc, the socket hook for cgroups.
	Hook string `json:"hook"`
	// Target is the interface name (or "ifindex N" once it is gone), or
	// "cgroup N" with the cgroup's id.
	Target string `json:"target"`
}

// Attachments lists what the datapath pinned under its pin directory.
func (d *Datapath) Attachments() ([]Attachment, error) {
	return ListAttachments(d.pinDir)
}

// ListAttachments reads the pins under dir without loading anything.
func ListAttachments(dir string) ([]Attachment, error) {
	var out []Attachment
	for _, sub := range []string{linksDir, progsDir} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list pins: %w", err)
		}
		for _, e := range entries {
			kind, hook, id, ok := parsePinName(e.Name())
			if !ok {
				continue
			}
			a := Attachment{Hook: hook}
			switch kind {
			case "tcx", "tc":
				a.Kind = string(TCX)
				if kind == "tc" {
					a.Kind = string(LegacyTC)
				}
				a.Target = "ifindex " + strconv.Itoa(id)
				if l, err := netlink.LinkByIndex(id); err == nil {
					a.Target = l.Attrs().Name
				}
			case "cg":
				a.Kind = "cgroup"
				a.Target = "cgroup " + strconv.Itoa(id)
			default:
				continue
			}
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Hook < out[j].Hook
	})
	return out, nil
}
