package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	any4 = netip.IPv4Unspecified()
	any6 = netip.IPv6Unspecified()
)

func TestWildcardConflicts(t *testing.T) {
	h1, h2 := mustAddr("192.0.2.1"), mustAddr("192.0.2.2")
	v6 := mustAddr("2001:db8::1")
	tests := []struct {
		name     string
		existing []PortRequest
		req      PortRequest
		kind     error
		message  string
	}{
		{"specific blocks wildcard", []PortRequest{{Proto: TCP, HostIP: h1, Ports: Port(80)}},
			PortRequest{Proto: TCP, HostIP: any4, Ports: Port(80)}, ErrInUse, `tcp 192.0.2.1:80 held by "old"`},
		{"wildcard blocks specific", []PortRequest{{Proto: TCP, HostIP: any4, Ports: Port(80)}},
			PortRequest{Proto: TCP, HostIP: h1, Ports: Port(80)}, ErrInUse, `tcp 0.0.0.0:80 held by "old"`},
		{"same address", []PortRequest{{Proto: TCP, HostIP: h1, Ports: Port(80)}},
			PortRequest{Proto: TCP, HostIP: h1, Ports: Port(80)}, ErrInUse, "pick another host port"},
		{"two specific addresses", []PortRequest{{Proto: TCP, HostIP: h1, Ports: Port(80)}},
			PortRequest{Proto: TCP, HostIP: h2, Ports: Port(80)}, nil, ""},
		{"other family wildcard", []PortRequest{{Proto: TCP, HostIP: h1, Ports: Port(80)}, {Proto: TCP, HostIP: any4, Ports: Port(81)}},
			PortRequest{Proto: TCP, HostIP: any6, Ports: PortRange{80, 81}}, nil, ""},
		{"v6 specific blocks v6 wildcard", []PortRequest{{Proto: UDP, HostIP: v6, Ports: Port(53)}},
			PortRequest{Proto: UDP, HostIP: any6, Ports: Port(53)}, ErrInUse, "[2001:db8::1]:53"},
		{"v6 wildcard blocks v6 specific", []PortRequest{{Proto: UDP, HostIP: any6, Ports: Port(53)}},
			PortRequest{Proto: UDP, HostIP: v6, Ports: Port(53)}, ErrInUse, "udp [::]:53"},
		{"other protocol", []PortRequest{{Proto: TCP, HostIP: any4, Ports: Port(80)}},
			PortRequest{Proto: UDP, HostIP: any4, Ports: Port(80)}, nil, ""},
		{"sctp", []PortRequest{{Proto: SCTP, HostIP: any4, Ports: Port(80)}},
			PortRequest{Proto: SCTP, HostIP: h1, Ports: Port(80)}, ErrInUse, "sctp"},
		{"range overlaps the end of another", []PortRequest{{Proto: TCP, HostIP: h1, Ports: PortRange{100, 110}}},
			PortRequest{Proto: TCP, HostIP: any4, Ports: PortRange{90, 100}}, ErrInUse, "port 100 is in tcp 192.0.2.1:100-110"},
		{"range all or nothing", []PortRequest{{Proto: TCP, HostIP: any4, Ports: Port(8005)}},
			PortRequest{Proto: TCP, HostIP: any4, Ports: PortRange{8000, 8010}}, ErrInUse, "port 8005"},
		{"adjacent ranges", []PortRequest{{Proto: TCP, HostIP: any4, Ports: PortRange{8000, 8010}}},
			PortRequest{Proto: TCP, HostIP: h1, Ports: PortRange{8011, 8020}}, nil, ""},
		{"any skips wildcard ports", []PortRequest{{Proto: TCP, HostIP: any4, Ports: PortRange{50000, 50004}}},
			PortRequest{Proto: TCP, HostIP: h1, Count: 2}, nil, ""},
		{"any on wildcard skips specific ports", []PortRequest{{Proto: TCP, HostIP: h2, Ports: PortRange{50000, 50004}}},
			PortRequest{Proto: TCP, HostIP: any4, Count: 2}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newMem(t)
			for _, e := range tt.existing {
				e.Owner = "old"
				allocPorts(t, a, e)
			}
			tt.req.Owner = "new"
			before := takeSnapshot(t, a)
			got, err := a.AllocatePorts(tt.req)
			wantErr(t, err, tt.kind)
			if tt.kind != nil {
				if !strings.Contains(err.Error(), tt.message) {
					t.Errorf("error %q, want it to say %q", err, tt.message)
				}
				sameSnapshot(t, before, takeSnapshot(t, a))
				return
			}
			for _, e := range tt.existing {
				if overlaps(got, e) {
					t.Errorf("got %s, which collides with %s", got, e.Ports)
				}
			}
		})
	}
}

// overlaps reports whether an allocation and a request could not both hold.
func overlaps(a PortAllocation, r PortRequest) bool {
	if a.Proto != r.Proto || a.HostIP.Is4() != r.HostIP.Is4() {
		return false
	}
	if a.HostIP != r.HostIP && !a.HostIP.IsUnspecified() && !r.HostIP.IsUnspecified() {
		return false
	}
	return a.Ports.First <= r.Ports.Last && r.Ports.First <= a.Ports.Last
}

func TestAnyPortsNextFit(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: PortRange{40000, 40009}})
		if err != nil {
			t.Fatal(err)
		}
		if got := a.DynamicPorts(); got != (PortRange{40000, 40009}) {
			t.Errorf("DynamicPorts() = %v", got)
		}
		req := PortRequest{Owner: "ep", Proto: TCP, HostIP: any4}
		want := func(r PortRange) {
			t.Helper()
			got := allocPorts(t, a, req)
			if got.Ports != r {
				t.Errorf("got %s, want ports %s", got, r)
			}
		}
		want(Port(40000))
		want(Port(40001))
		allocPorts(t, a, PortRequest{Owner: "static", Proto: TCP, HostIP: any4, Ports: Port(40003)})
		req.Count = 2
		want(PortRange{40004, 40005}) // 40002 alone is too short
		req.Count = 0
		if _, err := a.ReleasePorts(TCP, any4, Port(40000)); err != nil {
			t.Fatal(err)
		}
		want(Port(40006)) // not 40000, just released, nor 40002, behind the cursor
		want(Port(40007))
		req.Count = 2
		want(PortRange{40008, 40009})
		req.Count = 0
		want(Port(40000)) // wrapped around
		want(Port(40002))
		before := takeSnapshot(t, a)
		_, err = a.AllocatePorts(req)
		wantErr(t, err, ErrExhausted)
		if !strings.Contains(err.Error(), "40000-40009") {
			t.Errorf("error %q should name the dynamic range", err)
		}
		sameSnapshot(t, before, takeSnapshot(t, a))
		// Another host address has its own pool, but not the wildcard's ports.
		_, err = a.AllocatePorts(PortRequest{Owner: "x", Proto: TCP, HostIP: mustAddr("192.0.2.1")})
		wantErr(t, err, ErrExhausted)
		if got := allocPorts(t, a, PortRequest{Owner: "x", Proto: UDP, HostIP: any4}); got.Ports != Port(40000) {
			t.Errorf("first udp port %s, want 40000", got.Ports)
		}
	})
}

func TestPortRequestErrors(t *testing.T) {
	tests := []struct {
		name    string
		req     PortRequest
		kind    error
		message string
	}{
		{"port 0 first", PortRequest{Proto: TCP, HostIP: any4, Ports: PortRange{0, 5}}, ErrInvalid, "port 0"},
		{"reversed", PortRequest{Proto: TCP, HostIP: any4, Ports: PortRange{10, 5}}, ErrInvalid, "reversed; write it as 5-10"},
		{"count mismatch", PortRequest{Proto: TCP, HostIP: any4, Ports: PortRange{10, 15}, Count: 3}, ErrInvalid, "the range holds 6 ports"},
		{"count too big", PortRequest{Proto: TCP, HostIP: any4, Count: 101}, ErrInvalid, "holds 100 ports"},
		{"negative count", PortRequest{Proto: TCP, HostIP: any4, Count: -1}, ErrInvalid, "count -1"},
		{"no protocol", PortRequest{HostIP: any4, Ports: Port(80)}, ErrInvalid, "use tcp, udp or sctp"},
		{"icmp", PortRequest{Proto: 1, HostIP: any4, Ports: Port(80)}, ErrInvalid, "proto(1)"},
		{"no host IP", PortRequest{Proto: TCP, Ports: Port(80)}, ErrInvalid, "0.0.0.0 or ::"},
		{"zone", PortRequest{Proto: TCP, HostIP: mustAddr("fe80::1%eth0"), Ports: Port(80)}, ErrInvalid, "zone"},
		{"taken", PortRequest{Proto: TCP, HostIP: any4, Ports: Port(443)}, ErrInUse, `held by "old"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newMem(t)
			allocPorts(t, a, PortRequest{Owner: "old", Proto: TCP, HostIP: any4, Ports: Port(443)})
			before := takeSnapshot(t, a)
			tt.req.Owner = "ep"
			_, err := a.AllocatePorts(tt.req)
			wantErr(t, err, tt.kind)
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q, want it to say %q", err, tt.message)
			}
			sameSnapshot(t, before, takeSnapshot(t, a))
		})
	}
	a := newMem(t)
	_, err := a.AllocatePorts(PortRequest{Proto: TCP, HostIP: any4, Ports: Port(80)})
	wantErr(t, err, ErrInvalid)
	if got := allocPorts(t, a, PortRequest{Owner: "m", Proto: TCP, HostIP: mustAddr("::ffff:192.0.2.7"), Ports: Port(80)}); got.HostIP != mustAddr("192.0.2.7") {
		t.Errorf("IPv4-mapped host IP kept as %s, want it unmapped", got.HostIP)
	}
}

func TestReleasePorts(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: testPorts})
		if err != nil {
			t.Fatal(err)
		}
		h := mustAddr("192.0.2.1")
		r1 := allocPorts(t, a, PortRequest{Owner: "ep", Proto: TCP, HostIP: h, Ports: PortRange{8000, 8010}})
		r2 := allocPorts(t, a, PortRequest{Owner: "ep", Proto: UDP, HostIP: any6, Count: 3})
		r3 := allocPorts(t, a, PortRequest{Owner: "other", Proto: TCP, HostIP: any4, Ports: Port(9000)})

		before := takeSnapshot(t, a)
		for _, tt := range []struct {
			proto   Proto
			ip      netip.Addr
			r       PortRange
			kind    error
			message string
		}{
			{TCP, h, PortRange{8000, 8005}, ErrNotFound, "the allocation there is tcp 192.0.2.1:8000-8010; release it whole"},
			{TCP, h, Port(8001), ErrNotFound, "nothing is allocated there"},
			{TCP, any4, PortRange{8000, 8010}, ErrNotFound, "nothing is allocated there"},
			{UDP, h, PortRange{8000, 8010}, ErrNotFound, "nothing"},
			{TCP, h, PortRange{8010, 8000}, ErrInvalid, "reversed"},
			{TCP, h, PortRange{}, ErrInvalid, "port 0"},
			{TCP, netip.Addr{}, Port(8000), ErrInvalid, "missing"},
		} {
			_, err := a.ReleasePorts(tt.proto, tt.ip, tt.r)
			wantErr(t, err, tt.kind)
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("release %s %s %s: %q, want it to say %q", tt.proto, tt.ip, tt.r, err, tt.message)
			}
			sameSnapshot(t, before, takeSnapshot(t, a))
		}
		_, err = a.ReleaseOwnerPorts("nobody")
		wantErr(t, err, ErrNotFound)

		got, err := a.ReleasePorts(TCP, any4, Port(9000))
		wantErr(t, err, nil)
		if got != r3 {
			t.Errorf("released %v, want %v", got, r3)
		}
		all, err := a.ReleaseOwnerPorts("ep")
		wantErr(t, err, nil)
		if len(all) != 2 || all[0] != r1 || all[1] != r2 {
			t.Errorf("owner release gave %v, want [%v %v]", all, r1, r2)
		}
		if left := a.Ports(""); len(left) != 0 {
			t.Errorf("after releasing everything, %v remain", left)
		}
		// Everything is free again, wildcard included.
		allocPorts(t, a, PortRequest{Owner: "again", Proto: TCP, HostIP: any4, Ports: PortRange{8000, 8010}})
		allocPorts(t, a, PortRequest{Owner: "again", Proto: TCP, HostIP: h, Ports: Port(9000)})
	})
}

func TestPortsListing(t *testing.T) {
	a := newMem(t)
	b := allocPorts(t, a, PortRequest{Owner: "b", Proto: UDP, HostIP: any4, Ports: Port(53)})
	a1 := allocPorts(t, a, PortRequest{Owner: "a", Proto: TCP, HostIP: any6, Ports: Port(80)})
	a2 := allocPorts(t, a, PortRequest{Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(443)})
	all := a.Ports("")
	if len(all) != 3 || all[0] != a2 || all[1] != a1 || all[2] != b {
		t.Errorf("Ports(\"\") = %v, want [%v %v %v]", all, a2, a1, b)
	}
	if got := a.Ports("a"); len(got) != 2 {
		t.Errorf("Ports(a) = %v", got)
	}
	if got := a.Ports("nobody"); len(got) != 0 {
		t.Errorf("Ports(nobody) = %v", got)
	}
	if got := a1.String(); got != "tcp [::]:80" {
		t.Errorf("String() = %q", got)
	}
}

func TestFillEveryPort(t *testing.T) {
	a, err := Open(NewMemStore(), Options{DynamicPorts: PortRange{1, 65535}})
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, 1<<16)
	for range 65535 {
		p := allocPorts(t, a, PortRequest{Owner: "fill", Proto: TCP, HostIP: any4}).Ports.First
		if seen[p] || p == 0 {
			t.Fatalf("port %d handed out twice or is 0", p)
		}
		seen[p] = true
	}
	_, err = a.AllocatePorts(PortRequest{Owner: "fill", Proto: TCP, HostIP: any4})
	wantErr(t, err, ErrExhausted)
	whole := allocPorts(t, a, PortRequest{Owner: "range", Proto: TCP, HostIP: any6, Ports: PortRange{1, 65535}})
	if whole.Ports.Len() != 65535 {
		t.Errorf("whole range gave %v", whole)
	}
}
