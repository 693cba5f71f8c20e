package maps

import (
	"net/netip"
	"testing"
)

// TestHostAddrsHas: an address put is the host's, another (of either
// family) is not, and a map that cannot be read is an error, not "no".
func TestHostAddrsHas(t *testing.T) {
	m := newTestMap(t, HostAddrKey{}, HostAddrValue{}, 16)
	h := NewHostAddrs(m)
	mine := netip.MustParseAddr("192.0.2.7")
	if err := h.Put(mine, 3); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr netip.Addr
		want bool
	}{{mine, true}, {netip.MustParseAddr("192.0.2.8"), false}, {netip.MustParseAddr("2001:db8::7"), false}} {
		if got, err := h.Has(c.addr); got != c.want || err != nil {
			t.Errorf("Has(%s) = %v, %v; want %v", c.addr, got, err, c.want)
		}
	}
	m.Close()
	if got, err := h.Has(mine); err == nil {
		t.Errorf("Has on a closed map = %v and no error", got)
	}
}
