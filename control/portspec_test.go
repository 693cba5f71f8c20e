package control

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
)

func TestParsePortSpec(t *testing.T) {
	ip := netip.MustParseAddr
	for _, c := range []struct {
		in   string
		want PortSpec
	}{
		{"80", PortSpec{Container: ipam.Port(80), Proto: ipam.TCP}},
		{"80/udp", PortSpec{Container: ipam.Port(80), Proto: ipam.UDP}},
		{"8080:80", PortSpec{Host: ipam.Port(8080), Container: ipam.Port(80), Proto: ipam.TCP}},
		{":80", PortSpec{Container: ipam.Port(80), Proto: ipam.TCP}},
		{"127.0.0.1:8080:80/tcp", PortSpec{HostIP: ip("127.0.0.1"), Host: ipam.Port(8080), Container: ipam.Port(80), Proto: ipam.TCP}},
		{"127.0.0.1::80", PortSpec{HostIP: ip("127.0.0.1"), Container: ipam.Port(80), Proto: ipam.TCP}},
		{"8000-8009:9000-9009/udp", PortSpec{Host: ipam.PortRange{First: 8000, Last: 8009}, Container: ipam.PortRange{First: 9000, Last: 9009}, Proto: ipam.UDP}},
		{"8000-8009:80", PortSpec{Host: ipam.PortRange{First: 8000, Last: 8009}, Container: ipam.Port(80), Proto: ipam.TCP}},
		{"9000-9009", PortSpec{Container: ipam.PortRange{First: 9000, Last: 9009}, Proto: ipam.TCP}},
		{"[::1]:8080:80", PortSpec{HostIP: ip("::1"), Host: ipam.Port(8080), Container: ipam.Port(80), Proto: ipam.TCP}},
		{"[::]::80/udp", PortSpec{HostIP: ip("::"), Container: ipam.Port(80), Proto: ipam.UDP}},
		{"[::]:8080:80", PortSpec{HostIP: ip("::"), Host: ipam.Port(8080), Container: ipam.Port(80), Proto: ipam.TCP}},
		{"[2001:db8::1]:8080:80", PortSpec{HostIP: ip("2001:db8::1"), Host: ipam.Port(8080), Container: ipam.Port(80), Proto: ipam.TCP}},
		{"[2001:db8::1]:8080:80/udp", PortSpec{HostIP: ip("2001:db8::1"), Host: ipam.Port(8080), Container: ipam.Port(80), Proto: ipam.UDP}},
		{"[::1]:8000-8009:9000-9009/udp", PortSpec{HostIP: ip("::1"), Host: ipam.PortRange{First: 8000, Last: 8009}, Container: ipam.PortRange{First: 9000, Last: 9009}, Proto: ipam.UDP}},
		{"[fd00::1]::53/udp", PortSpec{HostIP: ip("fd00::1"), Container: ipam.Port(53), Proto: ipam.UDP}},
		{"0.0.0.0:1:65535", PortSpec{HostIP: ip("0.0.0.0"), Host: ipam.Port(1), Container: ipam.Port(65535), Proto: ipam.TCP}},
	} {
		got, err := ParsePortSpec(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("%q: got %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestParsePortSpecErrors(t *testing.T) {
	for _, in := range []string{
		"", "/tcp", "80/icmp", "80/sctp", "0", "65536", "abc", "80-70", "-80",
		"8000-8001:80-82", "1.2.3:80:80", "::1:80:80", "[::1]80", "[::1]:80",
		"[fe80::1%eth0]:80:80", "[::ffff:1.2.3.4]:80:80", "1.2.3.4:80:80:80",
		"8080:", "8080:80/", "x:80", "1.2.3.4:x:80",
		"[::1:8080:80", "[::1]:8080:80:80", "[1.2.3.4]:8080:80", "[]:8080:80", "[::1]]:8080:80",
		"[2001:db8::1]:8080:80/sctp", "[::1]:x:80", "[::1]:8080:", "2001:db8::1:8080:80", "[::g]:8080:80",
	} {
		if got, err := ParsePortSpec(in); err == nil {
			t.Errorf("%q: parsed as %+v, want an error", in, got)
		} else if !errors.Is(err, ErrInvalid) && !errors.Is(err, ipam.ErrInvalid) {
			t.Errorf("%q: error %v is not an invalid-input error", in, err)
		}
	}
}

// FuzzParsePortSpec: whatever parses prints back to a spec that parses to
// the same value, and nothing panics.
func FuzzParsePortSpec(f *testing.F) {
	for _, s := range []string{"80", "8080:80/udp", "127.0.0.1::80", "[::1]:1-2:3-4/tcp", "8000-8009:80", "a:b:c:d", "[::]:8080:80", "[2001:db8::1]:8080:80/udp", "[fd00::1]::53", "[1.2.3.4]:1:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParsePortSpec(s)
		if err != nil {
			return
		}
		again, err := ParsePortSpec(spec.String())
		if err != nil {
			t.Fatalf("%q parsed, but its canonical form %q does not: %v", s, spec.String(), err)
		}
		if again != spec {
			t.Fatalf("%q: %+v, round trip through %q gives %+v", s, spec, spec.String(), again)
		}
		if spec.Container.First == 0 || spec.Container.Last < spec.Container.First {
			t.Fatalf("%q: bad container range %v", s, spec.Container)
		}
	})
}

// TestPortSpecMessages: each bad spec gets one piece of advice, not the
// range's advice followed by the grammar.
func TestPortSpecMessages(t *testing.T) {
	for in, want := range map[string]string{
		"80-70":            `port spec "80-70": container port range 80-70: reversed; write it as 70-80`,
		"8080-8070:80":     `port spec "8080-8070:80": host port range 8080-8070: reversed; write it as 8070-8080`,
		"70000":            `port spec "70000": container port 70000: out of range; ports are 1-65535`,
		"x":                `port spec "x": container port "x": not a number; ports are 1-65535`,
		"8080:":            `port spec "8080:": container port: empty; ports are 1-65535`,
		"8000-8001:80-82":  `port spec "8000-8001:80-82": host range 8000-8001 has 2 ports and container range 80-82 has 3; make them the same length`,
		"1.2.3:80:80":      `port spec "1.2.3:80:80": host IP "1.2.3" is not an address; write it as ` + specGrammar + `, such as 8080:80/tcp`,
		"[::1]80":          `port spec "[::1]80": bracketed host IP: want [address]:; write it as ` + specGrammar,
		"[::1:8080:80":     `port spec "[::1:8080:80": bracketed host IP: no closing ]; write it as ` + specGrammar,
		"[1.2.3.4]:80:80":  `port spec "[1.2.3.4]:80:80": host IP [1.2.3.4]: brackets are for IPv6 addresses; write 1.2.3.4 without them`,
		"::1:8080:80":      `port spec "::1:8080:80": too many colons (IPv6 host addresses go in brackets, such as [::1]:8080:80)`,
		"[::1]:8080:80:80": `port spec "[::1]:8080:80:80": after [::1] give hostPort:containerPort (the host port may be empty); write it as ` + specGrammar,
	} {
		_, err := ParsePortSpec(in)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q:\n got %v\nwant %s", in, err, want)
			continue
		}
		if n := strings.Count(err.Error(), "write it as"); n > 1 {
			t.Errorf("%q: advice given %d times: %v", in, n, err)
		}
	}
}
