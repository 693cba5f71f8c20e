package loader_test

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestAttachAdoptSwitchCleanup checks the kernel's own view, not the pins:
// attaching twice or switching mode leaves exactly one program per hook,
// and Cleanup leaves none and no pins.
func TestAttachAdoptSwitchCleanup(t *testing.T) {
	testenv.RequirePrivileges(t)
	id := testenv.UniqueID(t)
	ns := testenv.NewNetns(t, "ptl"+id)
	uplink := "ptx" + id
	testenv.Veth(t, ns, uplink, ns, "pty"+id)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	// The bind hooks need Linux 5.18 (TestKernelFeatures).
	bindHooks, cgroupHooks := testenv.KernelAtLeast(t, 5, 18), 10
	if !bindHooks {
		cgroupHooks = 8
	}

	load := func(mode loader.TCMode) {
		t.Helper()
		if err := ns.Do(func() error {
			d, err := loader.Load(loader.Options{PinDir: pins, ForceLegacyTC: mode == loader.LegacyTC})
			if err != nil {
				return err
			}
			defer d.Close()
			got, err := d.AttachUplink(uplink)
			if err != nil {
				return err
			}
			if mode == loader.LegacyTC && got != loader.LegacyTC {
				t.Errorf("forced legacy tc, got %s", got)
			}
			return d.AttachCgroup(cgroup)
		}); err != nil {
			t.Fatal(err)
		}
	}
	expectAttached := func(want int) {
		t.Helper()
		if err := ns.Do(func() error {
			for _, dir := range []struct {
				attach ebpf.AttachType
				parent uint32
			}{{ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS}, {ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS}} {
				if got := tcPrograms(t, uplink, dir.attach, dir.parent); got != want {
					t.Errorf("%d programs on %s %v, want %d", got, uplink, dir.attach, want)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, attach := range []ebpf.AttachType{
			ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupUDP4Sendmsg,
			ebpf.AttachCGroupUDP4Recvmsg, ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind,
			ebpf.AttachCGroupInet6Connect, ebpf.AttachCGroupUDP6Recvmsg, ebpf.AttachCgroupInet6GetPeername,
		} {
			want := want
			if (attach == ebpf.AttachCGroupInet4Bind || attach == ebpf.AttachCGroupInet6Bind) && !bindHooks {
				want = 0
			}
			if got := cgroupPrograms(t, cgroup, attach); got != want {
				t.Errorf("%d programs on cgroup %v, want %d", got, attach, want)
			}
		}
	}

	load(loader.TCX)
	load(loader.TCX) // adopts the pins instead of attaching a second time
	expectAttached(1)
	load(loader.LegacyTC) // switching mode replaces, never doubles
	expectAttached(1)
	if err := ns.Do(func() error {
		atts, err := loader.ListAttachments(pins)
		if err != nil {
			return err
		}
		if wantAtts := 2 + cgroupHooks; len(atts) != wantAtts {
			t.Errorf("pins list %d attachments, want 2 tc and %d cgroup: %+v", len(atts), cgroupHooks, atts)
		}
		return loader.Cleanup(pins)
	}); err != nil {
		t.Fatal(err)
	}
	expectAttached(0)
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory still there after cleanup: %v", err)
	}
}

func tcPrograms(t *testing.T, ifname string, attach ebpf.AttachType, parent uint32) int {
	t.Helper()
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: attach})
	if err == nil {
		n += len(res.Programs)
	} else if testenv.KernelAtLeast(t, 6, 6) {
		t.Fatalf("query tcx programs: %v", err)
	}
	filters, err := netlink.FilterList(l, parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range filters {
		if _, ok := f.(*netlink.BpfFilter); ok {
			n++
		}
	}
	return n
}

func cgroupPrograms(t *testing.T, path string, attach ebpf.AttachType) int {
	t.Helper()
	dir, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(dir.Fd()), Attach: attach})
	if err != nil {
		t.Fatalf("query cgroup programs: %v", err)
	}
	return len(res.Programs)
}
