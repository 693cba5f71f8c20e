package vmtest

import (
	"slices"
	"strings"
	"testing"
)

// A modules.dep in the shape busybox depmod writes for 6.1 (plain .ko) and
// a modules.builtin in which virtio_ring is built in.
const sampleDep = `kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/drivers/virtio/virtio.ko kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/fs/overlayfs/overlay.ko.xz:
kernel/drivers/net/dummy-thing.ko.xz:
kernel/a.ko: kernel/b.ko
kernel/b.ko: kernel/a.ko
`

const sampleBuiltin = "kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_pci.ko\n"

func sampleIndex(t *testing.T) *moduleIndex {
	t.Helper()
	idx, err := parseModuleIndex(strings.NewReader(sampleDep), strings.NewReader(sampleBuiltin))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestModuleLoadOrder(t *testing.T) {
	idx := sampleIndex(t)
	got, err := idx.loadOrder([]string{"virtio_pci", "9pnet_virtio", "9p", "overlay", "dummy-thing"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/virtio/virtio.ko",
		"kernel/net/9p/9pnet.ko",
		"kernel/net/9p/9pnet_virtio.ko",
		"kernel/fs/netfs/netfs.ko",
		"kernel/fs/fscache/fscache.ko",
		"kernel/fs/9p/9p.ko",
		"kernel/fs/overlayfs/overlay.ko.xz",
		"kernel/drivers/net/dummy-thing.ko.xz",
	}
	if !slices.Equal(got, want) {
		t.Errorf("load order\n%q\nwant\n%q", got, want)
	}
}

func TestModuleLoadOrderErrors(t *testing.T) {
	idx := sampleIndex(t)
	if _, err := idx.loadOrder([]string{"nosuchmod"}); err == nil || !strings.Contains(err.Error(), "nosuchmod") {
		t.Errorf("missing module: err = %v, want one naming nosuchmod", err)
	}
	if _, err := idx.loadOrder([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: err = %v, want a cycle error", err)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/9p/9p.ko":                    "9p",
		"kernel/net/9p/9pnet_virtio.ko.xz":      "9pnet_virtio",
		"kernel/drivers/net/dummy-thing.ko.zst": "dummy_thing",
		"kernel/drivers/virtio/virtio_pci.ko":   "virtio_pci",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%s) = %s, want %s", in, got, want)
		}
	}
}
