package control

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestPickSubnet(t *testing.T) {
	p := netip.MustParsePrefix
	cands := candidateSubnets()
	if cands[0] != p("172.17.0.0/16") || cands[len(cands)-1] != p("192.168.240.0/20") {
		t.Fatalf("candidates run %s..%s", cands[0], cands[len(cands)-1])
	}
	for _, c := range []struct {
		name  string
		taken []netip.Prefix
		want  netip.Prefix
	}{
		{"nothing taken", nil, p("172.17.0.0/16")},
		{"route inside the first", []netip.Prefix{p("172.17.5.0/24")}, p("172.18.0.0/16")},
		{"nameserver address", []netip.Prefix{p("172.17.0.53/32"), p("172.18.0.0/15")}, p("172.20.0.0/16")},
		{"a wide route covers all of 172.16/12", []netip.Prefix{p("172.16.0.0/12")}, p("192.168.0.0/20")},
	} {
		got, ok := pickSubnet(cands, c.taken)
		if !ok || got != c.want {
			t.Errorf("%s: got %s (%v), want %s", c.name, got, ok, c.want)
		}
	}
	if got, ok := pickSubnet(cands, []netip.Prefix{p("172.16.0.0/12"), p("192.168.0.0/16")}); ok {
		t.Errorf("everything taken, yet picked %s", got)
	}
}

func TestNameservers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte("# comment\nnameserver 10.0.0.2\nsearch example\nnameserver ::1\nnameserver bogus\n"), 0o644)
	got := nameservers(path)
	if len(got) != 2 || got[0] != netip.MustParseAddr("10.0.0.2") || got[1] != netip.MustParseAddr("::1") {
		t.Fatalf("nameservers: %v", got)
	}
}
