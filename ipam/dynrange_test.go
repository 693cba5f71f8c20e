package ipam

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDynamicPortRange(t *testing.T) {
	tests := []struct {
		name      string
		ephemeral PortRange
		reserved  []PortRange
		want      PortRange
		overlaps  bool
	}{
		{"linux default", PortRange{32768, 60999}, nil, PortRange{61000, 65535}, false},
		{"below docker's range", PortRange{32768, 49152}, nil, PortRange{49153, 65535}, false},
		{"inside, keeps the longer side", PortRange{50000, 55000}, nil, PortRange{55001, 65535}, false},
		{"inside, low side longer", PortRange{60000, 65000}, nil, PortRange{49153, 59999}, false},
		{"reserved ports are safe", PortRange{32768, 60999}, []PortRange{{49153, 60999}}, PortRange{49153, 65535}, false},
		{"reserved in part", PortRange{32768, 65535}, []PortRange{{50000, 50999}, Port(60000)}, PortRange{50000, 50999}, false},
		{"everything ephemeral", PortRange{1024, 65535}, nil, PortRange{49153, 65535}, true},
		{"unknown", PortRange{}, nil, PortRange{49153, 65535}, false},
	}
	for _, tt := range tests {
		got, overlaps := DynamicPortRange(tt.ephemeral, tt.reserved)
		if got != tt.want || overlaps != tt.overlaps {
			t.Errorf("%s: got %s overlaps=%v, want %s overlaps=%v", tt.name, got, overlaps, tt.want, tt.overlaps)
		}
	}
}

func TestKernelPortRanges(t *testing.T) {
	write := func(t *testing.T, rng, reserved string) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "ip_local_port_range"), []byte(rng), 0o644)
		os.WriteFile(filepath.Join(dir, "ip_local_reserved_ports"), []byte(reserved), 0o644)
		return dir
	}
	eph, res, err := kernelPortRanges(write(t, "32768\t60999\n", "8080,50000-50010\n"))
	if err != nil || eph != (PortRange{32768, 60999}) || len(res) != 2 || res[1] != (PortRange{50000, 50010}) {
		t.Errorf("got %v %v %v", eph, res, err)
	}
	if _, res, err := kernelPortRanges(write(t, "1024 65535\n", "\n")); err != nil || len(res) != 0 {
		t.Errorf("empty reserved list: %v %v", res, err)
	}
	for _, bad := range []string{"", "60999 32768", "a b", "1 2 3"} {
		if _, _, err := kernelPortRanges(write(t, bad, "")); err == nil || !strings.Contains(err.Error(), "ephemeral port range") {
			t.Errorf("range %q: %v, want an error", bad, err)
		}
	}
	if _, _, err := kernelPortRanges(write(t, "1 2", "x")); err == nil {
		t.Error("malformed reserved ports accepted")
	}
	if _, _, err := kernelPortRanges(t.TempDir()); err == nil {
		t.Error("missing files accepted")
	}
}

func TestOpenDefaultsToKernelAwareRange(t *testing.T) {
	a, err := Open(NewMemStore(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultDynamicPorts
	if eph, res, err := KernelPortRanges(); err == nil {
		want, _ = DynamicPortRange(eph, res)
	}
	if got := a.DynamicPorts(); got != want {
		t.Errorf("default dynamic range %s, want %s", got, want)
	}
}

func TestDefaultSNATPorts(t *testing.T) {
	linux := PortRange{32768, 60999}
	tests := []struct {
		name      string
		ephemeral PortRange
		reserved  []PortRange
		published PortRange
		want      PortRange
		ok        bool
	}{
		{"linux default", linux, nil, PortRange{61000, 65535}, PortRange{1024, 32767}, true},
		{"reserved ports are left alone", linux, []PortRange{{8000, 8999}}, PortRange{61000, 65535}, PortRange{9000, 32767}, true},
		{"published range reserved", linux, []PortRange{{49153, 65535}}, PortRange{49153, 65535}, PortRange{1024, 32767}, true},
		{"low ephemeral range", PortRange{1024, 20000}, nil, PortRange{61000, 65535}, PortRange{20001, 60999}, true},
		{"published inside the gap", PortRange{40000, 65535}, nil, PortRange{10000, 19999}, PortRange{20000, 39999}, true},
		{"nothing left", PortRange{1024, 65535}, nil, PortRange{}, PortRange{}, false},
		{"unknown ephemeral", PortRange{}, nil, PortRange{61000, 65535}, PortRange{1024, 60999}, true},
	}
	for _, tt := range tests {
		got, ok := DefaultSNATPorts(tt.ephemeral, tt.reserved, tt.published)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %s ok=%v, want %s ok=%v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestKernelEphemeral(t *testing.T) {
	linux := PortRange{32768, 60999}
	tests := []struct {
		r        PortRange
		reserved []PortRange
		want     PortRange
	}{
		{PortRange{1024, 32767}, nil, PortRange{}},
		{PortRange{30000, 40000}, nil, PortRange{32768, 40000}},
		{PortRange{60000, 65535}, nil, PortRange{60000, 60999}},
		{PortRange{40000, 40999}, []PortRange{{40000, 40999}}, PortRange{}},
		{PortRange{40000, 41999}, []PortRange{{40000, 40999}}, PortRange{41000, 41999}},
		{Port(32768), nil, Port(32768)},
	}
	for _, tt := range tests {
		if got := KernelEphemeral(tt.r, linux, tt.reserved); got != tt.want {
			t.Errorf("KernelEphemeral(%s, reserved %v) = %s, want %s", tt.r, tt.reserved, got, tt.want)
		}
	}
}
