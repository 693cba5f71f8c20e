package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Attachment is one program attached by a datapath, as its pins record it.
type Attachment struct {
	// Kind is "tcx", "legacy-tc", "xdp-native", "xdp-generic" or "cgroup".
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
			case "xdp":
				a.Kind = "xdp"
				a.Target = "ifindex " + strconv.Itoa(id)
				if l, err := netlink.LinkByIndex(id); err == nil {
					a.Target = l.Attrs().Name
					a.Kind = "xdp-" + string(xdpModeOf(l))
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

// UplinkAttached reports whether the uplink programs are on l as this
// datapath's pins say: a live tcx link, or our legacy filter. A pin
// removed by hand, a link detached (bpftool link detach) or a filter
// deleted all read as not attached, so the caller attaches again. The
// caller passes the link it listed, so checking many interfaces costs no
// lookup each.
func (d *Datapath) UplinkAttached(l netlink.Link) (bool, error) {
	return d.tcAttached(l, uplinkHooks)
}

// BridgeAttached is UplinkAttached for a network's bridge.
func (d *Datapath) BridgeAttached(l netlink.Link) (bool, error) {
	return d.tcAttached(l, bridgeHooks)
}

// EndpointAttached is UplinkAttached for an endpoint's host-side veth.
func (d *Datapath) EndpointAttached(l netlink.Link) (bool, error) {
	return d.tcAttached(l, endpointHooks)
}

func (d *Datapath) tcAttached(l netlink.Link, hooks []tcHook) (bool, error) {
	ifindex := l.Attrs().Index
	for _, dir := range hooks {
		live, err := d.linkLive(d.tcxLinkPin(dir, ifindex), func(info *link.Info) bool {
			tcx := info.TCX()
			return tcx != nil && tcx.Ifindex == uint32(ifindex)
		})
		if err != nil {
			return false, err
		}
		if live {
			continue
		}
		if _, err := os.Stat(d.legacyProgPin(dir, ifindex)); err != nil {
			return false, nil
		}
		if ok, err := hasLegacyFilter(dir, l); !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// CgroupAttached reports whether every socket hook's pinned link is on
// the cgroup at path.
func (d *Datapath) CgroupAttached(path string) (bool, error) {
	id, err := cgroupID(path)
	if err != nil {
		return false, err
	}
	for _, hook := range sockHooks {
		if hook.prog(d) == nil {
			continue // not loaded on this kernel
		}
		live, err := d.linkLive(d.cgroupLinkPin(hook, id), func(info *link.Info) bool {
			cg := info.Cgroup()
			return cg != nil && cg.CgroupId == id
		})
		if !live || err != nil {
			return false, err
		}
	}
	return true, nil
}

// linkLive asks the kernel whether the link pinned at pin (the one held,
// or else the pinned one) is still on its target; a missing pin is not
// live.
func (d *Datapath) linkLive(pin string, onTarget func(*link.Info) bool) (bool, error) {
	if _, err := os.Stat(pin); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("check link pin %s: %w", pin, err)
	}
	l := d.heldLink(pin)
	if l == nil {
		pinned, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return false, fmt.Errorf("open pinned link %s: %w", pin, err)
		}
		defer pinned.Close()
		l = pinned
	}
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("read pinned link %s: %w", pin, err)
	}
	return onTarget(info), nil
}

// hasLegacyFilter finds our cls_bpf filter for dir on l.
func hasLegacyFilter(dir tcHook, l netlink.Link) (bool, error) {
	filters, err := netlink.FilterList(l, dir.parent)
	if err != nil {
		return false, fmt.Errorf("list filters on %s: %w", l.Attrs().Name, err)
	}
	for _, f := range filters {
		if _, ok := ourLegacyFilter(f, dir); ok {
			return true, nil
		}
	}
	return false, nil
}

// Links stay open in the datapath as well as pinned: a pin removed by
// hand (rm -rf of the pin directory) then detaches nothing, and the next
// attach pins the same link again.

// holdLink keeps l, attached and pinned at pin, open until the datapath
// is closed or the link detached.
func (d *Datapath) holdLink(pin string, l link.Link) {
	d.linksMu.Lock()
	defer d.linksMu.Unlock()
	if old := d.links[pin]; old != nil && old != l {
		old.Close()
	}
	d.links[pin] = l
}

// dropLink detaches and closes the link held for pin, if any.
func (d *Datapath) dropLink(pin string) {
	d.linksMu.Lock()
	defer d.linksMu.Unlock()
	if l := d.links[pin]; l != nil {
		l.Detach()
		l.Close()
		delete(d.links, pin)
	}
}

func (d *Datapath) heldLink(pin string) link.Link {
	d.linksMu.Lock()
	defer d.linksMu.Unlock()
	return d.links[pin]
}

// releaseLinks closes the links held; their pins keep them attached.
func (d *Datapath) releaseLinks() {
	d.linksMu.Lock()
	defer d.linksMu.Unlock()
	for pin, l := range d.links {
		l.Close()
		delete(d.links, pin)
	}
}

// unpinLink detaches the link at pin, held or pinned, and removes the pin.
func (d *Datapath) unpinLink(pin string) (bool, error) {
	held := d.heldLink(pin) != nil
	d.dropLink(pin)
	unpinned, err := unpinLink(pin)
	return held || unpinned, err
}

// updatePinnedLink swaps the program of the link held or pinned at pin in
// place, which the kernel does atomically, and pins it again if its pin
// was removed. A link that lost its target (the interface went away, or
// it was detached by hand) is dropped with its pin so the caller attaches
// afresh.
func (d *Datapath) updatePinnedLink(pin string, prog *ebpf.Program) (bool, error) {
	l := d.heldLink(pin)
	if l == nil {
		loaded, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("open pinned link %s: %w", pin, err)
		}
		l = loaded
	}
	if err := l.Update(prog); err != nil {
		if d.heldLink(pin) == l {
			d.dropLink(pin)
		} else {
			l.Close()
		}
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("remove stale link pin %s: %w", pin, err)
		}
		return false, nil
	}
	if _, err := os.Stat(pin); errors.Is(err, os.ErrNotExist) {
		// Pin is a no-op for the path the link remembers: forget it.
		if err := l.Unpin(); err != nil {
			return false, fmt.Errorf("forget removed pin %s: %w", pin, err)
		}
		if err := l.Pin(pin); err != nil {
			return false, fmt.Errorf("pin link %s again: %w", pin, err)
		}
	}
	d.holdLink(pin, l)
	return true, nil
}

// dropHeldGone closes held tc links whose interface is gone, pin or no
// pin: one whose pin was removed by hand is not among those PruneGone
// finds.
func (d *Datapath) dropHeldGone(alive map[int]bool) {
	d.linksMu.Lock()
	defer d.linksMu.Unlock()
	for pin, l := range d.links {
		kind, _, ifindex, ok := parsePinName(filepath.Base(pin))
		if !ok || (kind != "tcx" && kind != "xdp") {
			continue
		}
		if alive[ifindex] {
			continue
		}
		l.Close()
		delete(d.links, pin)
	}
}
