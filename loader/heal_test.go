package loader_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestRepinAndReattach: in both tc modes, one program on two interfaces
// keeps a pin for each (attaching again included); after rm -rf of the
// pin directory the checks say detached, RepinMaps pins the same maps
// (an entry written before is still there) and attaching again makes the
// checks say attached. A cgroup link detached under its pin reads as
// detached until attached again.
func TestRepinAndReattach(t *testing.T) {
	for _, mode := range []loader.TCMode{loader.TCX, loader.LegacyTC} {
		t.Run(string(mode), func(t *testing.T) { testRepinAndReattach(t, mode) })
	}
}

func testRepinAndReattach(t *testing.T, mode loader.TCMode) {
	testenv.RequirePrivileges(t)
	id := testenv.UniqueID(t)
	ns := testenv.NewNetns(t, "ptr"+id)
	a, b := "pta"+id, "ptb"+id
	testenv.Veth(t, ns, a, ns, b)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)

	err := ns.Do(func() error {
		d, err := loader.Load(loader.Options{PinDir: pins, ForceLegacyTC: mode == loader.LegacyTC})
		if err != nil {
			return err
		}
		defer d.Close()
		expect := func(when string, want bool) {
			t.Helper()
			for _, ifname := range []string{a, b} {
				// Errorf, not Fatal: this runs on the namespace's
				// goroutine, which Fatal would end without an answer.
				l, err := netlink.LinkByName(ifname)
				if err != nil {
					t.Errorf("%s: %v", when, err)
					continue
				}
				if got, err := d.EndpointAttached(l); err != nil || got != want {
					t.Errorf("%s: EndpointAttached(%s) = %v, %v; want %v", when, ifname, got, err, want)
				}
			}
		}
		for _, ifname := range []string{a, b, a} {
			if _, err := d.AttachEndpoint(ifname); err != nil {
				return err
			}
		}
		expect("attached to both", true)
		if err := d.AttachCgroup(cgroup); err != nil {
			return err
		}
		binding := maps.Binding{Proto: maps.TCP, Host: netip.MustParseAddrPort("0.0.0.0:7777"), Backend: netip.MustParseAddrPort("10.77.0.9:80"), ID: 7}
		if err := maps.NewBindings(d.Maps.Bindings).Put(binding); err != nil {
			return err
		}

		if err := os.RemoveAll(pins); err != nil {
			return err
		}
		expect("pins removed", false)
		repinned, err := d.RepinMaps()
		if err != nil {
			return err
		}
		if !slices.Contains(repinned, "bindings") || len(repinned) < 10 {
			t.Errorf("RepinMaps pinned %v, want every map", repinned)
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pins, "bindings"), nil)
		if err != nil {
			return err
		}
		all, err := maps.NewBindings(m).All()
		m.Close()
		if err != nil {
			return err
		}
		if len(all) != 1 || all[0].String() != binding.String() {
			t.Errorf("bindings after re-pinning: %v, want %s", all, binding)
		}
		if again, err := d.RepinMaps(); err != nil || len(again) != 0 {
			t.Errorf("RepinMaps with every pin there: %v, %v; want nothing to do", again, err)
		}
		for _, ifname := range []string{a, b} {
			if _, err := d.AttachEndpoint(ifname); err != nil {
				return err
			}
		}
		expect("attached again", true)

		if ok, err := d.CgroupAttached(cgroup); err != nil || ok {
			t.Errorf("CgroupAttached with its pins removed = %v, %v; want false", ok, err)
		}
		if err := d.AttachCgroup(cgroup); err != nil {
			return err
		}
		if ok, err := d.CgroupAttached(cgroup); err != nil || !ok {
			t.Errorf("CgroupAttached after attaching = %v, %v; want true", ok, err)
		}
		cg, err := filepath.Glob(filepath.Join(pins, "links", "cg_connect4_*"))
		if err != nil || len(cg) != 1 {
			return fmt.Errorf("connect4 link pin: %v %v", cg, err)
		}
		l, err := link.LoadPinnedLink(cg[0], nil)
		if err != nil {
			return err
		}
		err = l.Detach()
		l.Close()
		if err != nil {
			return err
		}
		if ok, err := d.CgroupAttached(cgroup); err != nil || ok {
			t.Errorf("CgroupAttached with a link detached = %v, %v; want false", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
