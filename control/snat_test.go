package control

import (
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
)

func TestChooseSNATPorts(t *testing.T) {
	linux := ipam.PortRange{First: 32768, Last: 60999}
	published := ipam.PortRange{First: 61000, Last: 65535}
	r := func(first, last uint16) ipam.PortRange { return ipam.PortRange{First: first, Last: last} }
	for _, c := range []struct {
		name      string
		want      ipam.PortRange
		ephemeral ipam.PortRange
		reserved  []ipam.PortRange
		got       ipam.PortRange
		err       string
	}{
		{"default", ipam.PortRange{}, linux, nil, r(1024, 32767), ""},
		{"default keeps clear of reserved ports", ipam.PortRange{}, linux, []ipam.PortRange{r(20000, 20099)}, r(1024, 19999), ""},
		{"given", r(2000, 2999), linux, nil, r(2000, 2999), ""},
		{"given, reserved ephemeral ports", r(40000, 40999), linux, []ipam.PortRange{r(40000, 40999)}, r(40000, 40999), ""},
		{"overlaps ephemeral", r(30000, 40000), linux, nil, ipam.PortRange{}, "overlaps the kernel's ephemeral ports (32768-40000"},
		{"overlaps published", r(62000, 63000), linux, nil, ipam.PortRange{}, "the range published ports are allocated from"},
		{"nothing left", ipam.PortRange{}, r(1024, 65535), nil, ipam.PortRange{}, "no ports left for masquerade"},
	} {
		got, err := chooseSNATPorts(c.want, c.ephemeral, c.reserved, published)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.err)
		case c.err != "" && strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error is not one line: %q", c.name, err)
		case got != c.got:
			t.Errorf("%s: got %s, want %s", c.name, got, c.got)
		}
	}
}
