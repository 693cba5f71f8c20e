package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSubnet(t *testing.T) {
	tests := []struct {
		prefix, gateway, ipRange string
		want                     Subnet
		wantErr                  string // substring of the message; "" for success
	}{
		{prefix: "10.88.0.0/16", want: Subnet{Prefix: mustPrefix("10.88.0.0/16"), Gateway: mustAddr("10.88.0.1")}},
		{prefix: "10.88.0.0/16", gateway: "10.88.255.254", ipRange: "10.88.4.0/22",
			want: Subnet{Prefix: mustPrefix("10.88.0.0/16"), Gateway: mustAddr("10.88.255.254"), Range: mustPrefix("10.88.4.0/22")}},
		{prefix: "fd00:88::/64", want: Subnet{Prefix: mustPrefix("fd00:88::/64"), Gateway: mustAddr("fd00:88::1")}},
		{prefix: "10.0.0.0/30", want: Subnet{Prefix: mustPrefix("10.0.0.0/30"), Gateway: mustAddr("10.0.0.1")}},
		{prefix: "10.0.0.0/24", gateway: "::ffff:10.0.0.9", want: Subnet{Prefix: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.9")}},
		{prefix: "10.0.0.0/24", ipRange: "10.0.0.0/24", want: Subnet{Prefix: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.1"), Range: mustPrefix("10.0.0.0/24")}},

		{prefix: "", wantErr: "invalid CIDR"},
		{prefix: "10.88.0.0", wantErr: "invalid CIDR; write it as address/length"},
		{prefix: "10.88.0.0/33", wantErr: "invalid CIDR"},
		{prefix: "10.888.0.0/16", wantErr: "invalid CIDR"},
		{prefix: "10.88.0.5/16", wantErr: "host bits are set; use 10.88.0.0/16"},
		{prefix: "10.0.0.0/31", wantErr: "too small"},
		{prefix: "10.0.0.0/32", wantErr: "too small"},
		{prefix: "fd00::/127", wantErr: "too small"},
		{prefix: "::ffff:10.0.0.0/120", wantErr: "IPv4-mapped"},
		{prefix: "10.0.0.0/24", gateway: "10.0.1.1", wantErr: "gateway 10.0.1.1: outside subnet 10.0.0.0/24"},
		{prefix: "10.0.0.0/24", gateway: "fd00::1", wantErr: "outside subnet"},
		{prefix: "10.0.0.0/24", gateway: "10.0.0.0", wantErr: "network address"},
		{prefix: "10.0.0.0/24", gateway: "10.0.0.255", wantErr: "broadcast address"},
		{prefix: "10.0.0.0/24", gateway: "10.0.0.x", wantErr: "invalid address"},
		{prefix: "fd00::/64", gateway: "fd00::1%eth0", wantErr: "has a zone"},
		{prefix: "10.0.0.0/24", ipRange: "10.0.1.0/25", wantErr: "IP range 10.0.1.0/25: outside subnet"},
		{prefix: "10.0.0.0/24", ipRange: "10.0.0.0/23", wantErr: "outside subnet"},
		{prefix: "10.0.0.0/24", ipRange: "fd00::/64", wantErr: "outside subnet"},
		{prefix: "10.0.0.0/24", ipRange: "10.0.0.3/25", wantErr: "host bits are set"},
		{prefix: "10.0.0.0/24", ipRange: "10.0.0.0/32", wantErr: "holds no address to hand out"},
		{prefix: "10.0.0.0/24", ipRange: "10.0.0.1/32", wantErr: "holds no address to hand out"},
		{prefix: "10.0.0.0/24", ipRange: "10.0.0.255/32", wantErr: "holds no address to hand out"},
		{prefix: "10.0.0.0/24", ipRange: "bogus", wantErr: "invalid CIDR; give a prefix inside"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"_"+tt.gateway+"_"+tt.ipRange, func(t *testing.T) {
			got, err := ParseSubnet(tt.prefix, tt.gateway, tt.ipRange)
			if tt.wantErr != "" {
				wantErr(t, err, ErrInvalid)
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q, want it to say %q", err, tt.wantErr)
				}
				return
			}
			wantErr(t, err, nil)
			if !equalSubnet(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAddNetworkErrors(t *testing.T) {
	sub := func(s string) Subnet { return Subnet{Prefix: mustPrefix(s)} }
	tests := []struct {
		name    string
		n       Network
		kind    error
		message string
	}{
		{"empty id", Network{Subnets: []Subnet{sub("10.9.0.0/24")}}, ErrInvalid, "network id: empty"},
		{"long id", Network{ID: strings.Repeat("x", 256), Subnets: []Subnet{sub("10.9.0.0/24")}}, ErrInvalid, "keep it under 256"},
		{"no subnet", Network{ID: "n"}, ErrInvalid, "no subnet"},
		{"zero prefix", Network{ID: "n", Subnets: []Subnet{{}}}, ErrInvalid, "subnet: missing"},
		{"overlap inside", Network{ID: "n", Subnets: []Subnet{sub("10.9.0.0/16"), sub("10.9.3.0/24")}}, ErrInvalid, "overlap"},
		{"overlap other network", Network{ID: "n", Subnets: []Subnet{sub("10.1.2.0/24")}}, ErrInUse, `in use by network "existing"`},
		{"overlap other v6", Network{ID: "n", Subnets: []Subnet{sub("10.9.0.0/24"), sub("fd00:1::/48")}}, ErrInUse, "fd00:1::/64"},
		{"same id other subnets", Network{ID: "existing", Subnets: []Subnet{sub("10.9.0.0/24")}}, ErrInUse, "remove it first"},
	}
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: testPorts})
		if err != nil {
			t.Fatal(err)
		}
		addNet(t, a, "existing", "10.1.0.0/16", "fd00:1::/64")
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := takeSnapshot(t, a)
				_, err := a.AddNetwork(tt.n)
				wantErr(t, err, tt.kind)
				if !strings.Contains(err.Error(), tt.message) {
					t.Errorf("error %q, want it to say %q", err, tt.message)
				}
				sameSnapshot(t, before, takeSnapshot(t, a))
			})
		}
	})
}

func TestAddNetworkIdempotentAndRemove(t *testing.T) {
	a := newMem(t)
	n := addNet(t, a, "n", "10.5.0.0/24")
	again, err := a.AddNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.5.0.0/24"), Gateway: mustAddr("10.5.0.1")}}})
	wantErr(t, err, nil)
	if !equalNetwork(n, again) {
		t.Errorf("re-adding the same network gave %+v, want %+v", again, n)
	}
	if got := a.Networks(); len(got) != 1 {
		t.Errorf("networks after re-add: %+v, want one", got)
	}
	alloc(t, a, "n", "ep1")

	before := takeSnapshot(t, a)
	err = a.RemoveNetwork("n")
	wantErr(t, err, ErrInUse)
	if !strings.Contains(err.Error(), `"ep1"`) {
		t.Errorf("error %q should name the owner still holding an address", err)
	}
	sameSnapshot(t, before, takeSnapshot(t, a))
	wantErr(t, a.RemoveNetwork("nope"), ErrNotFound)

	if _, err := a.ReleaseIPs("n", "ep1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, a.RemoveNetwork("n"), nil)
	if _, err := a.Network("n"); err == nil {
		t.Error("removed network still there")
	}
	if got := dumpStore(t, a.store); len(got) != 1 {
		t.Errorf("store after removing the only network holds %v, want only the schema", got)
	}
	// The subnet is free again, for another network.
	addNet(t, a, "m", "10.5.0.0/25")
}

func TestNetworkRejectsZone(t *testing.T) {
	a := newMem(t)
	p := netip.PrefixFrom(mustAddr("fd00::"), 64)
	_, err := a.AddNetwork(Network{ID: "z", Subnets: []Subnet{{Prefix: p, Gateway: mustAddr("fd00::1%eth0")}}})
	wantErr(t, err, ErrInvalid)
}
