package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/bpf"
)

// TCMode is how a program is attached to an interface.
type TCMode string

const (
	// TCX uses BPF links on the tcx hooks (kernel >= 6.6).
	TCX TCMode = "tcx"
	// LegacyTC uses a clsact qdisc with a direct-action cls_bpf filter.
	LegacyTC TCMode = "legacy-tc"
)

const (
	linksDir = "links"
	progsDir = "progs"

	// Our cls_bpf filter's place on the clsact hooks. A fixed handle and
	// priority let a new load replace it atomically with FilterReplace.
	legacyFilterHandle   = 1
	legacyFilterPriority = 0x5c
)

// tcHook is one program on one side of an interface. Its name appears in
// pin and filter names, so it must not contain '_' or '.'.
type tcHook struct {
	name   string
	attach ebpf.AttachType
	parent uint32
	// prog picks the program for the device's kind of header, which the
	// uplink programs are built separately for.
	prog func(d *Datapath, h linkHeader) (*ebpf.Program, error)
}

// linkHeader is what a device's packets start with at tc.
type linkHeader int

const (
	ethernetHeader linkHeader = iota
	ipHeader                  // WireGuard, tun; ipip from Linux 5.14
	ipipHeader                // ipip: its own program, for kernels before 5.14
)

var (
	uplinkHooks = []tcHook{
		{"ingress", ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS, func(d *Datapath, h linkHeader) (*ebpf.Program, error) {
			switch h {
			case ipHeader:
				return d.uplinkProgram(&d.tc.UplinkIngressL3, bpf.TcUplinkProgUplinkIngressL3)
			case ipipHeader:
				return d.uplinkProgram(&d.tc.UplinkIngressIpip, bpf.TcUplinkProgUplinkIngressIpip)
			}
			return d.tc.UplinkIngress, nil
		}},
		{"egress", ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS, func(d *Datapath, h linkHeader) (*ebpf.Program, error) {
			if h != ethernetHeader {
				return d.uplinkProgram(&d.tc.UplinkEgressL3, bpf.TcUplinkProgUplinkEgressL3)
			}
			return d.tc.UplinkEgress, nil
		}},
	}
	bridgeHooks = []tcHook{
		{"bridge-ingress", ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS, func(d *Datapath, _ linkHeader) (*ebpf.Program, error) {
			return d.bridge.BridgeIngress, nil
		}},
	}
	endpointHooks = []tcHook{
		{"endpoint-ingress", ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS, func(d *Datapath, _ linkHeader) (*ebpf.Program, error) {
			return d.endpoint.EndpointIngress, nil
		}},
	}
	allTCHooks = append(append(append([]tcHook{}, uplinkHooks...), bridgeHooks...), endpointHooks...)
)

// tcxLinkPin and legacyProgPin name pins by interface index: names can
// change under us, indexes cannot.
func (d *Datapath) tcxLinkPin(dir tcHook, ifindex int) string {
	return filepath.Join(d.pinDir, linksDir, fmt.Sprintf("tcx_%s_%d", dir.name, ifindex))
}

func (d *Datapath) legacyProgPin(dir tcHook, ifindex int) string {
	return filepath.Join(d.pinDir, progsDir, fmt.Sprintf("tc_%s_%d", dir.name, ifindex))
}

// AttachUplink attaches the uplink programs to ifname's ingress and egress,
// or replaces the programs already there. It reports the mode it used.
func (d *Datapath) AttachUplink(ifname string) (TCMode, error) {
	return d.attachTC(ifname, uplinkHooks)
}

// AttachBridge attaches the bridge program to the ingress of a Pontoon
// bridge device: what its containers send to the host's IP layer.
func (d *Datapath) AttachBridge(ifname string) (TCMode, error) {
	return d.attachTC(ifname, bridgeHooks)
}

// AttachEndpoint attaches the endpoint program to the host side of a
// container's veth.
func (d *Datapath) AttachEndpoint(ifname string) (TCMode, error) {
	return d.attachTC(ifname, endpointHooks)
}

// AttachBridgeLink is AttachBridge for an interface already looked up:
// a sync of a thousand bridges lists the interfaces once rather than
// asking for each by name.
func (d *Datapath) AttachBridgeLink(l netlink.Link) (TCMode, error) {
	return d.attachLink(l, bridgeHooks)
}

func (d *Datapath) attachTC(ifname string, hooks []tcHook) (TCMode, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return "", fmt.Errorf("find interface %s: %w", ifname, err)
	}
	return d.attachLink(l, hooks)
}

func (d *Datapath) attachLink(l netlink.Link, hooks []tcHook) (TCMode, error) {
	ifname, ifindex := l.Attrs().Name, l.Attrs().Index
	header := headerOf(l)

	mode := LegacyTC
	if !d.forceTC {
		mode = TCX
	}
	for _, dir := range hooks {
		prog, err := dir.prog(d, header)
		if err != nil {
			return "", fmt.Errorf("attach %s to %s: %w", dir.name, ifname, err)
		}
		if mode == TCX {
			err = d.attachTCX(dir, ifindex, prog)
			if errors.Is(err, ebpf.ErrNotSupported) {
				mode = LegacyTC
			}
		}
		if mode == LegacyTC {
			err = d.attachLegacy(dir, l, prog)
		}
		if err != nil {
			return "", fmt.Errorf("attach %s to %s: %w", dir.name, ifname, err)
		}
	}
	return mode, nil
}

// headerOf tells devices whose packets carry an Ethernet header at tc from
// those whose packets start at the IP header, and ipip devices, whose
// ingress shows the outer headers first before Linux 5.14.
func headerOf(l netlink.Link) linkHeader {
	switch {
	case l.Attrs().EncapType == "ether" || l.Attrs().EncapType == "loopback":
		return ethernetHeader
	case l.Type() == "ipip":
		return ipipHeader
	}
	return ipHeader
}

func (d *Datapath) attachTCX(dir tcHook, ifindex int, prog *ebpf.Program) error {
	pin := d.tcxLinkPin(dir, ifindex)
	if adopted, err := d.updatePinnedLink(pin, prog); err != nil || adopted {
		return err
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: dir.attach})
	if err != nil {
		return err
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin tcx link: %w", err)
	}
	d.holdLink(pin, l)
	// Switching from the legacy path: only drop the old filter once the
	// new link carries traffic.
	return d.detachLegacy(dir, ifindex)
}

func (d *Datapath) attachLegacy(dir tcHook, l netlink.Link, prog *ebpf.Program) error {
	ifindex := l.Attrs().Index
	if err := ensureClsact(l); err != nil {
		return err
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    dir.parent,
			Handle:    legacyFilterHandle,
			Priority:  legacyFilterPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         legacyFilterName(dir),
		DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return fmt.Errorf("replace cls_bpf filter: %w", err)
	}
	// The filter holds the program; the pin records that the filter is
	// ours, so cleanup can find it after this process is gone.
	pin := d.legacyProgPin(dir, ifindex)
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace program pin: %w", err)
	}
	// Pin a clone: the program object remembers one pin path, and
	// pinning it again would move that pin (another interface's) or, for
	// the same path, do nothing after the Remove above.
	pinned, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("clone program to pin: %w", err)
	}
	defer pinned.Close()
	if err := pinned.Pin(pin); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	_, err = d.unpinLink(d.tcxLinkPin(dir, ifindex))
	return err
}

func legacyFilterName(dir tcHook) string { return "pontoon_" + dir.name }

func ensureClsact(l netlink.Link) error {
	qdiscs, err := netlink.QdiscList(l)
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			return nil
		}
	}
	clsact := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(clsact); err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return nil
}

// DetachUplink removes the uplink programs from ifname in either mode.
func (d *Datapath) DetachUplink(ifname string) error {
	return d.detachTC(ifname, uplinkHooks)
}

// DetachBridge removes the bridge program from ifname in either mode.
func (d *Datapath) DetachBridge(ifname string) error {
	return d.detachTC(ifname, bridgeHooks)
}

// DetachEndpoint removes the endpoint program from a veth.
func (d *Datapath) DetachEndpoint(ifname string) error {
	return d.detachTC(ifname, endpointHooks)
}

func (d *Datapath) detachTC(ifname string, hooks []tcHook) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", ifname, err)
	}
	for _, dir := range hooks {
		if _, err := d.unpinLink(d.tcxLinkPin(dir, l.Attrs().Index)); err != nil {
			return err
		}
		if err := d.detachLegacy(dir, l.Attrs().Index); err != nil {
			return err
		}
	}
	return nil
}

// unpinLink detaches a pinned link and removes its pin. Dropping the last
// reference would detach it too, but only later, from a kernel work queue;
// an explicit detach makes "detached" mean detached when this returns.
func unpinLink(pin string) (bool, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	defer l.Close()
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return false, fmt.Errorf("detach link %s: %w", pin, err)
	}
	if err := l.Unpin(); err != nil {
		return false, fmt.Errorf("unpin link %s: %w", pin, err)
	}
	return true, nil
}

func (d *Datapath) detachLegacy(dir tcHook, ifindex int) error {
	pin := d.legacyProgPin(dir, ifindex)
	if _, err := os.Stat(pin); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := deleteLegacyFilter(dir, ifindex); err != nil {
		return err
	}
	if err := os.Remove(pin); err != nil {
		return fmt.Errorf("remove program pin: %w", err)
	}
	return nil
}

// deleteLegacyFilter removes our filter, and only ours: the name check
// protects a foreign filter that took our handle and priority.
func deleteLegacyFilter(dir tcHook, ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		// The interface is gone and its filters with it.
		return nil
	}
	filters, err := netlink.FilterList(l, dir.parent)
	if err != nil {
		return fmt.Errorf("list filters on %s: %w", l.Attrs().Name, err)
	}
	for _, f := range filters {
		bf, ok := ourLegacyFilter(f, dir)
		if !ok {
			continue
		}
		if err := netlink.FilterDel(bf); err != nil {
			return fmt.Errorf("delete filter on %s: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

// ourLegacyFilter says whether f is our cls_bpf filter for dir: the name
// check protects a foreign filter that took our handle and priority.
func ourLegacyFilter(f netlink.Filter, dir tcHook) (*netlink.BpfFilter, bool) {
	bf, ok := f.(*netlink.BpfFilter)
	ok = ok && bf.Handle == legacyFilterHandle && bf.Priority == legacyFilterPriority &&
		strings.HasPrefix(bf.Name, legacyFilterName(dir))
	return bf, ok
}

// parsePinName splits "tcx_ingress_7" into its parts.
func parsePinName(name string) (kind, dir string, ifindex int, ok bool) {
	parts := strings.Split(name, "_")
	if len(parts) != 3 {
		return "", "", 0, false
	}
	idx, err := strconv.Atoi(parts[2])
	if err != nil {
		return "", "", 0, false
	}
	return parts[0], parts[1], idx, true
}
