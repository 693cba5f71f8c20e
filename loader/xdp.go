package loader

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/pontoon-net/pontoon/bpf"
)

// XDPMode is how the uplink XDP program is attached, or asked to be.
type XDPMode string

const (
	// XDPOff attaches no XDP program (and removes ours).
	XDPOff XDPMode = "off"
	// XDPAuto takes native XDP where the driver has it, generic otherwise.
	XDPAuto XDPMode = "auto"
	// XDPNative runs the program in the driver, before any skb exists.
	XDPNative XDPMode = "native"
	// XDPGeneric runs it on the skb, where native XDP is missing.
	XDPGeneric XDPMode = "generic"
)

// ParseXDPMode reads a --xdp value.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPOff, XDPAuto, XDPNative, XDPGeneric:
		return m, nil
	}
	return "", fmt.Errorf("xdp mode %q: give auto, native, generic or off", s)
}

// loadXDP loads the uplink XDP program: the full build, or where this
// kernel's verifier refuses it (6.1 fails on the walk of a SYN's TCP
// options), the build that leaves SYNs with options to tc.
func loadXDP(opts *ebpf.CollectionOptions) (*ebpf.Program, error) {
	full, err := bpf.LoadForKernel(bpf.LoadXdpUplink)
	if err != nil {
		return nil, fmt.Errorf("read xdp object: %w", err)
	}
	var objs bpf.XdpUplinkPrograms
	fullErr := full.LoadAndAssign(&objs, opts)
	if fullErr == nil {
		return objs.UplinkXdp, nil
	}
	fallback, err := bpf.LoadForKernel(bpf.LoadXdpUplinkSynoptsToTc)
	if err != nil {
		return nil, fmt.Errorf("read xdp object: %w", err)
	}
	var objs2 bpf.XdpUplinkSynoptsToTcPrograms
	if err := fallback.LoadAndAssign(&objs2, opts); err != nil {
		return nil, fmt.Errorf("load xdp program: %w", verifierDetail(errors.Join(fullErr, err)))
	}
	return objs2.UplinkXdp, nil
}

// xdpProgram loads the uplink XDP program once, on first use.
func (d *Datapath) xdpProgram() (*ebpf.Program, error) {
	d.xdpOnce.Do(func() {
		d.xdp, d.xdpErr = loadXDP(&ebpf.CollectionOptions{MapReplacements: d.Maps.replacements()})
	})
	return d.xdp, d.xdpErr
}

// xdpHook names the XDP pins: links/xdp_uplink_IFINDEX.
const xdpHook = "uplink"

func (d *Datapath) xdpLinkPin(ifindex int) string {
	return filepath.Join(d.pinDir, linksDir, "xdp_"+xdpHook+"_"+strconv.Itoa(ifindex))
}

// AttachUplinkXDP puts the uplink XDP program on l in mode (auto: native,
// else generic), or swaps the program of the link already pinned there in
// place. It reports the mode the program runs in. Devices without an
// Ethernet header get none: the program parses Ethernet.
func (d *Datapath) AttachUplinkXDP(l netlink.Link, mode XDPMode) (XDPMode, error) {
	ifindex, ifname := l.Attrs().Index, l.Attrs().Name
	if mode == XDPOff {
		return XDPOff, d.DetachUplinkXDP(l)
	}
	if headerOf(l) != ethernetHeader {
		return XDPOff, fmt.Errorf("attach xdp to %s: the device has no Ethernet header: start the agent with --xdp=off", ifname)
	}
	prog, err := d.xdpProgram()
	if err != nil {
		return XDPOff, fmt.Errorf("attach xdp to %s: this kernel refused the program (%v): start the agent with --xdp=off", ifname, err)
	}
	pin := d.xdpLinkPin(ifindex)
	if cur := xdpAttachedMode(ifindex); cur != XDPOff && (mode == XDPAuto || mode == cur) {
		adopted, err := d.updatePinnedLink(pin, prog)
		if err != nil {
			return "", fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
		if adopted {
			return cur, nil
		}
	}
	// Another mode asked for, or no link of ours: start afresh.
	if _, err := d.unpinLink(pin); err != nil {
		return "", err
	}
	for _, try := range xdpTries(mode) {
		var lk link.Link
		lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: xdpFlags(try)})
		if err != nil {
			continue
		}
		if err := lk.Pin(pin); err != nil {
			lk.Close()
			return "", fmt.Errorf("pin xdp link of %s: %w", ifname, err)
		}
		d.holdLink(pin, lk)
		return try, nil
	}
	return "", fmt.Errorf("attach xdp (%s) to %s: %w", mode, ifname, err)
}

func xdpTries(mode XDPMode) []XDPMode {
	if mode == XDPAuto {
		return []XDPMode{XDPNative, XDPGeneric}
	}
	return []XDPMode{mode}
}

func xdpFlags(mode XDPMode) link.XDPAttachFlags {
	if mode == XDPGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

// xdpAttachedMode asks the kernel how an XDP program runs on ifindex, if
// one does.
func xdpAttachedMode(ifindex int) XDPMode {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return XDPOff
	}
	return xdpModeOf(l)
}

func xdpModeOf(l netlink.Link) XDPMode {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return XDPOff
	}
	switch x.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return XDPNative
	case nl.XDP_ATTACHED_SKB:
		return XDPGeneric
	}
	return XDPOff
}

// UplinkXDPMode reports how our XDP program runs on l: off when it has
// no live link of ours.
func (d *Datapath) UplinkXDPMode(l netlink.Link) (XDPMode, error) {
	ifindex := l.Attrs().Index
	live, err := d.linkLive(d.xdpLinkPin(ifindex), func(info *link.Info) bool {
		x := info.XDP()
		return x != nil && x.Ifindex == uint32(ifindex)
	})
	if err != nil || !live {
		return XDPOff, err
	}
	return xdpAttachedMode(ifindex), nil
}

// DetachUplinkXDP removes our XDP program from l; a foreign one stays.
func (d *Datapath) DetachUplinkXDP(l netlink.Link) error {
	if _, err := d.unpinLink(d.xdpLinkPin(l.Attrs().Index)); err != nil {
		return fmt.Errorf("detach xdp from %s: %w", l.Attrs().Name, err)
	}
	return nil
}
