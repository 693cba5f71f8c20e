package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// workload applies n random operations and logs their results, so two
// allocators fed the same seed can be compared.
func workload(a *Allocator, r *rand.Rand, n int) []string {
	hosts := []netip.Addr{any4, any6, mustAddr("192.0.2.1"), mustAddr("2001:db8::1")}
	protos := []Proto{TCP, UDP, SCTP}
	var log []string
	for range n {
		owner := fmt.Sprint("o", r.IntN(40))
		var res string
		var err error
		switch r.IntN(6) {
		case 0, 1:
			var got []netip.Addr
			got, err = a.AllocateIPs(IPRequest{Network: []string{"v4", "dual"}[r.IntN(2)], Owner: owner})
			res = fmt.Sprint(got)
		case 2:
			var got []netip.Addr
			got, err = a.ReleaseIPs([]string{"v4", "dual"}[r.IntN(2)], owner)
			res = fmt.Sprint(got)
		case 3:
			req := PortRequest{Owner: owner, Proto: protos[r.IntN(3)], HostIP: hosts[r.IntN(4)]}
			if r.IntN(2) == 0 {
				first := uint16(50000 + r.IntN(120))
				req.Ports = PortRange{first, first + uint16(r.IntN(3))}
			} else {
				req.Count = 1 + r.IntN(3)
			}
			var got PortAllocation
			got, err = a.AllocatePorts(req)
			res = got.String()
		case 4:
			var got []PortAllocation
			got, err = a.ReleaseOwnerPorts(owner)
			res = fmt.Sprint(got)
		case 5:
			if held := a.Ports(owner); len(held) > 0 {
				h := held[r.IntN(len(held))]
				_, err = a.ReleasePorts(h.Proto, h.HostIP, h.Ports)
				res = h.String()
			}
		}
		log = append(log, fmt.Sprintf("%s %v", res, errKind(err)))
	}
	return log
}

func errKind(err error) error {
	for _, k := range []error{ErrInvalid, ErrInUse, ErrExhausted, ErrNotFound} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

func workloadNetworks(t testing.TB, a *Allocator) {
	t.Helper()
	_, err := a.AddNetwork(Network{ID: "v4", Subnets: []Subnet{{Prefix: mustPrefix("10.20.0.0/26"), Range: mustPrefix("10.20.0.32/27")}}})
	if err != nil {
		t.Fatal(err)
	}
	addNet(t, a, "dual", "10.21.0.0/27", "fd00:21::/64")
}

// TestReopenGivesSameState runs the same random operations on an allocator
// in memory and one on a bolt file that is closed and reopened in between;
// both must answer every operation alike and hold the same records.
func TestReopenGivesSameState(t *testing.T) {
	opts := Options{DynamicPorts: PortRange{50000, 50099}}
	mem, err := Open(NewMemStore(), opts)
	if err != nil {
		t.Fatal(err)
	}
	workloadNetworks(t, mem)
	path := filepath.Join(t.TempDir(), "ipam.db")
	s := openBoltFast(t, path)
	disk, err := Open(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	workloadNetworks(t, disk)

	rm, rd := rand.New(rand.NewPCG(1, 2)), rand.New(rand.NewPCG(1, 2))
	for round := range 8 {
		if got, want := workload(disk, rd, 300), workload(mem, rm, 300); !reflect.DeepEqual(got, want) {
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("round %d op %d: bolt gave %s, memory gave %s", round, i, got[i], want[i])
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openBoltFast(t, path)
		if disk, err = Open(s, opts); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		sameSnapshot(t, takeSnapshot(t, mem), takeSnapshot(t, disk))
		if t.Failed() {
			t.FailNow()
		}
	}
	if len(mem.Ports("")) == 0 || len(mem.networks["dual"].owners) == 0 {
		t.Error("the workload left nothing allocated; it tests too little")
	}
}

func TestOpenRejectsBadStores(t *testing.T) {
	tests := []struct {
		name    string
		seed    func(tx Tx) error
		message string
	}{
		{"schema", func(tx Tx) error { return tx.Put(bucketMeta, keySchema, []byte{9}) }, "store schema 09: this pontoon reads schemas 1 to 2 only"},
		{"network record", func(tx Tx) error { return tx.Put(bucketNetworks, []byte("n"), []byte("{")) }, `network record "n"`},
		{"network id mismatch", func(tx Tx) error {
			v, _ := encodeNetwork(Network{ID: "m", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/24")}}})
			return tx.Put(bucketNetworks, []byte("n"), v)
		}, `holds network "m"`},
		{"invalid network", func(tx Tx) error {
			v, _ := encodeNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/32")}}})
			return tx.Put(bucketNetworks, []byte("n"), v)
		}, "too small"},
		{"address without network", func(tx Tx) error {
			return tx.Put(bucketIPs, mustAddr("10.0.0.5").AsSlice(), ipValue("gone", "ep"))
		}, `network "gone" does not exist`},
		{"address record", func(tx Tx) error { return tx.Put(bucketIPs, []byte{1, 2, 3}, []byte{0}) }, "malformed"},
		{"port record", func(tx Tx) error { return tx.Put(bucketPorts, []byte{6, 1}, []byte{0}) }, "malformed"},
		{"overlapping ports", func(tx Tx) error {
			return putPages(tx, PortAllocation{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{80, 90}},
				PortAllocation{Owner: "b", Proto: TCP, HostIP: mustAddr("192.0.2.1"), Ports: Port(85)})
		}, "overlaps tcp 0.0.0.0:80-90"},
		{"ports overlapping in one page", func(tx Tx) error {
			return putPages(tx, PortAllocation{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{80, 90}},
				PortAllocation{Owner: "b", Proto: TCP, HostIP: any4, Ports: Port(85)})
		}, "port record tcp 0.0.0.0:85: overlaps tcp 0.0.0.0:80-90"},
		{"port record without owner", func(tx Tx) error {
			return putPages(tx, PortAllocation{Proto: TCP, HostIP: any4, Ports: Port(80)})
		}, "owner: empty"},
		{"port 0", func(tx Tx) error {
			return putPages(tx, PortAllocation{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{0, 3}})
		}, "port 0"},
		{"port record of a bad protocol", func(tx Tx) error {
			return putPages(tx, PortAllocation{Owner: "a", Proto: 7, HostIP: any4, Ports: Port(80)})
		}, "protocol proto(7)"},
		{"port record of a mapped address", func(tx Tx) error {
			return putPages(tx, PortAllocation{Owner: "a", Proto: TCP, HostIP: mustAddr("::ffff:192.0.2.1"), Ports: Port(80)})
		}, "IPv4-mapped"},
		{"address record without owner", func(tx Tx) error {
			v, _ := encodeNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.1")}}})
			tx.Put(bucketNetworks, []byte("n"), v)
			return tx.Put(bucketIPs, mustAddr("10.0.0.5").AsSlice(), ipValue("n", ""))
		}, "owner: empty"},
		{"address twice for one owner", func(tx Tx) error {
			v, _ := encodeNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.1")}}})
			tx.Put(bucketNetworks, []byte("n"), v)
			tx.Put(bucketIPs, mustAddr("10.0.0.5").AsSlice(), ipValue("n", "ep"))
			return tx.Put(bucketIPs, mustAddr("10.0.0.6").AsSlice(), ipValue("n", "ep"))
		}, "owner already holds 10.0.0.5"},
		{"gateway allocated", func(tx Tx) error {
			v, _ := encodeNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.1")}}})
			tx.Put(bucketNetworks, []byte("n"), v)
			return tx.Put(bucketIPs, mustAddr("10.0.0.1").AsSlice(), ipValue("n", "ep"))
		}, "gateway"},
		{"overlapping networks", func(tx Tx) error {
			v, _ := encodeNetwork(Network{ID: "n", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/24"), Gateway: mustAddr("10.0.0.1")}}})
			tx.Put(bucketNetworks, []byte("n"), v)
			v, _ = encodeNetwork(Network{ID: "m", Subnets: []Subnet{{Prefix: mustPrefix("10.0.0.0/25"), Gateway: mustAddr("10.0.0.1")}}})
			return tx.Put(bucketNetworks, []byte("m"), v)
		}, "in use by network"},
		{"port cursor", func(tx Tx) error { return tx.Put(bucketPortCursors, []byte{6}, []byte{1}) }, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewMemStore()
			if err := s.Update(tt.seed); err != nil {
				t.Fatal(err)
			}
			_, err := Open(s, Options{DynamicPorts: testPorts})
			if err == nil || !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Open = %v, want an error saying %q", err, tt.message)
			}
		})
	}
	_, err := Open(NewMemStore(), Options{DynamicPorts: PortRange{100, 10}})
	wantErr(t, err, ErrInvalid)
}
