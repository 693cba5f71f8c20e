package loader_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// kernelFeatureSince is the first Linux release of each probed feature, as
// the kernel's own history has it (Debian's kernels backport none of them;
// a vendor kernel that does would fail here, and rightly say so).
var kernelFeatureSince = map[string][2]int{
	loader.FeatureTCX:             {6, 6},
	loader.FeaturePortReservation: {5, 18},
	loader.FeatureGSOMTUCheck:     {5, 12},
	loader.FeatureCoarseClock:     {5, 11},
	loader.FeatureIPIPForwarding:  {5, 14},
	loader.FeatureChecksumInPlace: {6, 2}, // and BTF, which Debian's kernels have
}

// TestKernelFeatures runs on every kernel of the VM matrix: each feature's
// status line says "available" on a kernel that has it and "unavailable,
// needs Linux X" below X, and what is switched off is really off (no bind
// hooks without reservation, legacy tc without TCX).
func TestKernelFeatures(t *testing.T) {
	testenv.RequirePrivileges(t)
	id := testenv.UniqueID(t)
	ns := testenv.NewNetns(t, "ptf"+id)
	uplink := "pfx" + id
	testenv.Veth(t, ns, uplink, ns, "pfy"+id)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)

	var feats []loader.Feature
	var mode loader.TCMode
	var attachments []loader.Attachment
	if err := ns.Do(func() error {
		d, err := loader.Load(loader.Options{PinDir: pins})
		if err != nil {
			return err
		}
		defer d.Close()
		feats = d.Features()
		if mode, err = d.AttachUplink(uplink); err != nil {
			return err
		}
		if err := d.AttachCgroup(cgroup); err != nil {
			return err
		}
		attachments, err = d.Attachments()
		return err
	}); err != nil {
		t.Fatal(err)
	}

	have := map[string]bool{}
	var names []string
	for _, f := range feats {
		names = append(names, f.Name)
		since, ok := kernelFeatureSince[f.Name]
		if !ok {
			t.Errorf("feature %q is not in this test's table: add its first kernel", f.Name)
			continue
		}
		want := testenv.KernelAtLeast(t, since[0], since[1])
		have[f.Name] = want
		line := f.String()
		switch {
		case want && line != f.Name+": available":
			t.Errorf("kernel has %s (Linux %d.%d), status says %q", f.Name, since[0], since[1], line)
		case !want && !strings.HasPrefix(line, fmt.Sprintf("%s: unavailable, needs Linux %d.%d (", f.Name, since[0], since[1])):
			t.Errorf("kernel lacks %s (Linux %d.%d), status says %q", f.Name, since[0], since[1], line)
		}
		if f.Since != fmt.Sprintf("%d.%d", since[0], since[1]) {
			t.Errorf("%s: since %s, want %d.%d", f.Name, f.Since, since[0], since[1])
		}
		if f.Without == "" {
			t.Errorf("%s: says nothing about what happens without it", f.Name)
		}
	}
	for name := range kernelFeatureSince {
		if !slices.Contains(names, name) {
			t.Errorf("feature %q is not reported", name)
		}
	}

	wantMode := loader.LegacyTC
	if have[loader.FeatureTCX] {
		wantMode = loader.TCX
	}
	if mode != wantMode {
		t.Errorf("uplink attached with %s, want %s", mode, wantMode)
	}
	var hooks []string
	for _, a := range attachments {
		if a.Kind == "cgroup" {
			hooks = append(hooks, a.Hook)
		}
	}
	for _, h := range []string{"bind4", "bind6"} {
		if got := slices.Contains(hooks, h); got != have[loader.FeaturePortReservation] {
			t.Errorf("cgroup hook %s attached: %v, want %v (hooks: %v)", h, got, have[loader.FeaturePortReservation], hooks)
		}
	}
	if !slices.Contains(hooks, "connect4") || !slices.Contains(hooks, "getpeername4") {
		t.Errorf("socket hooks missing: %v", hooks)
	}
}
