package loader_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// pinRetired pins a map named as an older build named one, as that build
// left it, and returns its path.
func pinRetired(t *testing.T, pins, name string) string {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := filepath.Join(pins, name)
	if err := m.Pin(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRetiredMapPins: the filter maps whose bits this build turned round
// (prefilter and binding_filter, now prefilter_skip and bfilter_skip) lose
// their pins when this build loads, and Cleanup takes one left behind as
// Pontoon's, so the pin directory goes with it. Another tool's pin of the
// same name stays.
func TestRetiredMapPins(t *testing.T) {
	testenv.RequirePrivileges(t)
	pins := testenv.PinDir(t)
	if err := os.MkdirAll(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	prefilter := pinRetired(t, pins, "prefilter")
	foreign := filepath.Join(pins, "binding_filter")
	other, err := ebpf.NewMap(&ebpf.MapSpec{Name: "not_pontoons", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Pin(foreign); err != nil {
		t.Fatal(err)
	}

	d, err := loader.Load(loader.Options{PinDir: pins})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := os.Stat(prefilter); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the retired prefilter pin survived Load (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(pins, "prefilter_skip")); err != nil {
		t.Errorf("Load did not pin prefilter_skip: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("Load removed another tool's pin named binding_filter: %v", err)
	}
	if err := os.Remove(foreign); err != nil {
		t.Fatal(err)
	}

	// One left behind (an older build's pin with no Load since) is
	// Pontoon's to clean up.
	pinRetired(t, pins, "binding_filter")
	foreignLeft, err := loader.CleanupPins(pins)
	if err != nil {
		t.Fatal(err)
	}
	if len(foreignLeft) != 0 {
		t.Errorf("cleanup left %v as somebody else's", foreignLeft)
	}
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cleanup kept the pin directory (stat: %v)", err)
	}
}
