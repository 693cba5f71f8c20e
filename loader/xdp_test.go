package loader_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestXDPAttachAdoptSwitchCleanup checks the kernel's view of the uplink
// XDP program: auto takes native on a veth, a second load adopts the
// pinned link (same link, new program), a forced mode replaces it, off
// and Cleanup leave nothing, and a device without an Ethernet header is
// refused.
func TestXDPAttachAdoptSwitchCleanup(t *testing.T) {
	testenv.RequirePrivileges(t)
	id := testenv.UniqueID(t)
	ns := testenv.NewNetns(t, "pxl"+id)
	uplink := "pxu" + id
	testenv.Veth(t, ns, uplink, ns, "pxp"+id)
	pins := testenv.PinDir(t)

	// attach loads a datapath on the pins, attaches in mode and reports
	// the mode it got and the kernel's view afterwards.
	attach := func(mode loader.XDPMode) (got loader.XDPMode, kernel loader.XDPMode, progID uint32) {
		t.Helper()
		if err := ns.Do(func() error {
			d, err := loader.Load(loader.Options{PinDir: pins})
			if err != nil {
				return err
			}
			defer d.Close()
			l, err := netlink.LinkByName(uplink)
			if err != nil {
				return err
			}
			if got, err = d.AttachUplinkXDP(l, mode); err != nil {
				return err
			}
			if l, err = netlink.LinkByName(uplink); err != nil {
				return err
			}
			if kernel, err = d.UplinkXDPMode(l); err != nil {
				return err
			}
			if l.Attrs().Xdp != nil {
				progID = l.Attrs().Xdp.ProgId
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got, kernel, progID
	}
	pin := filepath.Join(pins, "links", "xdp_uplink_")

	got, kernel, first := attach(loader.XDPAuto)
	if got != loader.XDPNative || kernel != loader.XDPNative || first == 0 {
		t.Fatalf("auto on a veth: got %s, kernel says %s (prog %d), want native", got, kernel, first)
	}
	got, kernel, second := attach(loader.XDPAuto)
	if got != loader.XDPNative || kernel != loader.XDPNative || second == first || second == 0 {
		t.Errorf("second load: got %s, kernel %s, prog %d after %d: want the pinned link adopted with the new program", got, kernel, second, first)
	}
	got, kernel, _ = attach(loader.XDPGeneric)
	if got != loader.XDPGeneric || kernel != loader.XDPGeneric {
		t.Errorf("forced generic: got %s, kernel %s", got, kernel)
	}
	// Interface names are the namespace's.
	var atts []loader.Attachment
	if err := ns.Do(func() (err error) {
		atts, err = loader.ListAttachments(pins)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var xdp []loader.Attachment
	for _, a := range atts {
		if a.Kind == "xdp-generic" || a.Kind == "xdp-native" || a.Kind == "xdp" {
			xdp = append(xdp, a)
		}
	}
	if len(xdp) != 1 || xdp[0].Kind != "xdp-generic" || xdp[0].Target != uplink {
		t.Errorf("attachments %+v, want one xdp-generic on %s", xdp, uplink)
	}
	got, kernel, progID := attach(loader.XDPOff)
	if got != loader.XDPOff || kernel != loader.XDPOff || progID != 0 {
		t.Errorf("off: got %s, kernel %s, prog %d still attached", got, kernel, progID)
	}
	matches, _ := filepath.Glob(pin + "*")
	if len(matches) != 0 {
		t.Errorf("off left pins %v", matches)
	}

	attach(loader.XDPNative)
	if err := ns.Do(func() error { return loader.Cleanup(pins) }); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(uplink)
		if err != nil {
			return err
		}
		if l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			t.Errorf("cleanup left XDP program %d on %s", l.Attrs().Xdp.ProgId, uplink)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Errorf("cleanup left the pin directory: %v", err)
	}
}

// TestXDPRefusesL3Device: the program parses Ethernet; a device whose
// packets start at the IP header gets a refusal naming the way out.
func TestXDPRefusesL3Device(t *testing.T) {
	testenv.RequirePrivileges(t)
	id := testenv.UniqueID(t)
	ns := testenv.NewNetns(t, "pxt"+id)
	pins := testenv.PinDir(t)
	if err := ns.Do(func() error {
		tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "pxn" + id}, Mode: netlink.TUNTAP_MODE_TUN}
		if err := netlink.LinkAdd(tun); err != nil {
			return err
		}
		l, err := netlink.LinkByName("pxn" + id)
		if err != nil {
			return err
		}
		d, err := loader.Load(loader.Options{PinDir: pins})
		if err != nil {
			return err
		}
		defer d.Close()
		defer loader.Cleanup(pins)
		if _, err := d.AttachUplinkXDP(l, loader.XDPNative); err == nil {
			t.Errorf("native xdp on a tun device was accepted")
		}
		return nil
	}); errors.Is(err, os.ErrNotExist) {
		t.Skip("making a tun device needs /dev/net/tun (the tun module)")
	} else if err != nil {
		t.Fatal(err)
	}
}
