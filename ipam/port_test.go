package ipam

import (
	"strings"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in      string
		want    PortRange
		message string // "" for success
	}{
		{"80", Port(80), ""},
		{"1", Port(1), ""},
		{"65535", Port(65535), ""},
		{"8000-8010", PortRange{8000, 8010}, ""},
		{"8000-8000", Port(8000), ""},
		{"0080", Port(80), ""},
		{"", PortRange{}, "empty"},
		{"0", PortRange{}, "port 0"},
		{"0-10", PortRange{}, "port 0"},
		{"65536", PortRange{}, "out of range"},
		{"70000", PortRange{}, "out of range"},
		{"99999999999999999999", PortRange{}, "out of range"},
		{"10-5", PortRange{}, "reversed; write it as 5-10"},
		{"-5", PortRange{}, "empty"},
		{"5-", PortRange{}, "empty"},
		{"1-2-3", PortRange{}, "not a number"},
		{"+5", PortRange{}, "not a number"},
		{" 5", PortRange{}, "not a number"},
		{"http", PortRange{}, "not a number"},
		{"８０", PortRange{}, "not a number"},
	}
	for _, tt := range tests {
		got, err := ParsePortRange(tt.in)
		if tt.message != "" {
			wantErr(t, err, ErrInvalid)
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("ParsePortRange(%q): %q, want it to say %q", tt.in, err, tt.message)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseProto(t *testing.T) {
	for in, want := range map[string]Proto{"tcp": TCP, "UDP": UDP, "sctp": SCTP} {
		if got, err := ParseProto(in); err != nil || got != want {
			t.Errorf("ParseProto(%q) = %v, %v; want %v", in, got, err, want)
		}
		if got := want.String(); got != strings.ToLower(in) {
			t.Errorf("%d.String() = %q, want %q", want, got, strings.ToLower(in))
		}
	}
	_, err := ParseProto("icmp")
	wantErr(t, err, ErrInvalid)
	if got := Proto(1).String(); got != "proto(1)" {
		t.Errorf("unknown protocol prints %q", got)
	}
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"80", "8000-8010", "0", "65536", "10-5", "-", "1-65535", "007-8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParsePortRange(s)
		if err != nil {
			wantErr(t, err, ErrInvalid)
			if r != (PortRange{}) {
				t.Errorf("error with a non-zero range %v", r)
			}
			return
		}
		if r.First == 0 || r.Last < r.First {
			t.Fatalf("ParsePortRange(%q) accepted %v", s, r)
		}
		back, err := ParsePortRange(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %v through %q gave %v, %v", r, r.String(), back, err)
		}
	})
}
