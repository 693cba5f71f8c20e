package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestAllocatePortsBatch: a batch takes every request in order, later
// requests seeing earlier ones, and a request that fails leaves nothing
// taken, the dynamic cursor where it was and the store as it was.
func TestAllocatePortsBatch(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: testPorts})
		if err != nil {
			t.Fatal(err)
		}
		allocPorts(t, a, PortRequest{Owner: "old", Proto: TCP, HostIP: any4, Ports: Port(8080)})
		allocPorts(t, a, PortRequest{Owner: "old", Proto: TCP, HostIP: any4}) // moves the cursor
		before := takeSnapshot(t, a)

		bad := []PortRequest{
			{Owner: "ep", Proto: TCP, HostIP: any4},                                                // dynamic
			{Owner: "ep", Proto: UDP, HostIP: any4, Ports: Port(8080)},                             // free: other protocol
			{Owner: "ep", Proto: TCP, HostIP: any4, Ports: PortRange{9000, 9001}},                  // free
			{Owner: "ep", Proto: TCP, HostIP: mustAddr("127.0.0.1"), Ports: Port(9001)},            // taken by the one before
			{Owner: "ep", Proto: TCP, HostIP: any4, Ports: PortRange{8079, 8081}, FirstFree: true}, // never reached
		}
		_, err = a.AllocatePortsBatch(bad, nil)
		var be *BatchError
		if !errors.As(err, &be) || be.Index != 3 || !errors.Is(err, ErrInUse) {
			t.Fatalf("batch with a clash in request 3: %v, want a BatchError at 3 wrapping ErrInUse", err)
		}
		sameSnapshot(t, before, takeSnapshot(t, a))
		// The cursor was restored: the next dynamic port is the one the
		// failed batch had taken.
		want := allocPorts(t, a, PortRequest{Owner: "probe", Proto: TCP, HostIP: any4}).Ports
		if _, err := a.ReleasePorts(TCP, any4, want); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		a.ports.pools[poolKey{TCP, any4}].cursor = want.First - 1
		a.mu.Unlock()

		good := append(bad[:3:3], bad[4])
		pas, err := a.AllocatePortsBatch(good, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := []PortRange{pas[0].Ports, pas[1].Ports, pas[2].Ports, pas[3].Ports}
		wantPorts := []PortRange{want, Port(8080), {9000, 9001}, Port(8079)}
		for i := range got {
			if got[i] != wantPorts[i] {
				t.Errorf("request %d got %s, want %s", i, got[i], wantPorts[i])
			}
		}
		// FirstFree steps over held ports: 8079 is now held, 8080 too.
		pa := allocPorts(t, a, PortRequest{Owner: "ep", Proto: TCP, HostIP: any4, Ports: PortRange{8079, 8081}, FirstFree: true})
		if pa.Ports != Port(8081) {
			t.Errorf("first free of 8079-8081 = %s, want 8081", pa.Ports)
		}
		_, err = a.AllocatePorts(PortRequest{Owner: "ep", Proto: TCP, HostIP: any4, Ports: PortRange{8079, 8081}, FirstFree: true})
		if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "every port of 8079-8081 is taken") {
			t.Errorf("first free of a full range: %v, want every port taken", err)
		}

		// What the store says is what memory says.
		reopened, err := Open(s, Options{DynamicPorts: testPorts})
		if err != nil {
			t.Fatal(err)
		}
		if g, w := len(reopened.Ports("")), len(a.Ports("")); g != w {
			t.Errorf("reopened store holds %d allocations, memory %d", g, w)
		}
	})
}

// TestAllocatePortsBatchWith: the caller's writes commit with the ports,
// and its error takes the ports back.
func TestAllocatePortsBatchWith(t *testing.T) {
	a := newMem(t)
	before := takeSnapshot(t, a)
	errCaller := errors.New("caller refuses")
	reqs := []PortRequest{{Owner: "ep", Proto: TCP, HostIP: any4, Ports: Port(80)}, {Owner: "ep", Proto: UDP, HostIP: any4}}
	_, err := a.AllocatePortsBatch(reqs, func(tx Tx, pas []PortAllocation) error {
		if err := tx.Put(bucketMeta, []byte("caller"), []byte("x")); err != nil {
			return err
		}
		return errCaller
	})
	if err != errCaller {
		t.Fatalf("batch whose caller fails: %v, want the caller's error as it is", err)
	}
	sameSnapshot(t, before, takeSnapshot(t, a))

	pas, err := a.AllocatePortsBatch(reqs, func(tx Tx, pas []PortAllocation) error {
		return tx.Put(bucketMeta, []byte("caller"), []byte(pas[1].Ports.String()))
	})
	if err != nil {
		t.Fatal(err)
	}
	a.store.View(func(tx Tx) error {
		if got := string(tx.Get(bucketMeta, []byte("caller"))); got != pas[1].Ports.String() {
			t.Errorf("caller's record %q, want %q", got, pas[1].Ports)
		}
		return nil
	})
}

// TestReleasePortsBatch frees exactly what is held as given, once.
func TestReleasePortsBatch(t *testing.T) {
	a := newMem(t)
	x := allocPorts(t, a, PortRequest{Owner: "ep", Proto: TCP, HostIP: any4, Ports: PortRange{100, 109}})
	y := allocPorts(t, a, PortRequest{Owner: "ep", Proto: UDP, HostIP: mustAddr("127.0.0.1"), Ports: Port(53)})
	z := allocPorts(t, a, PortRequest{Owner: "other", Proto: TCP, HostIP: any4, Ports: Port(200)})
	wrongRange := x
	wrongRange.Ports.Last = 105
	got, err := a.ReleasePortsBatch([]PortAllocation{wrongRange, y, y}, nil)
	if err != nil || len(got) != 1 || got[0] != y {
		t.Fatalf("release [x as 100-105, y, y] = %v, %v; want y alone", got, err)
	}
	got, err = a.ReleasePortsBatch([]PortAllocation{x}, nil)
	if err != nil || len(got) != 1 || got[0] != x {
		t.Fatalf("release x = %v, %v", got, err)
	}
	if left := a.Ports(""); len(left) != 1 || left[0] != z {
		t.Errorf("left %v, want %v", left, z)
	}
	allocPorts(t, a, PortRequest{Owner: "new", Proto: TCP, HostIP: any4, Ports: PortRange{100, 109}})
}

// listeningOn writes a /proc/net look-alike with TCP listeners on
// 0.0.0.0 at ports and returns its directory.
func listeningOn(t *testing.T, ports ...uint16) string {
	t.Helper()
	dir := t.TempDir()
	rows := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for i, p := range ports {
		rows += fmt.Sprintf("%4d: %s %s 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n",
			i, procHex(netip.AddrPortFrom(any4, p)), procHex(netip.AddrPortFrom(any4, 0)), 1000+i)
	}
	if err := os.WriteFile(filepath.Join(dir, "tcp"), []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBatchMatchesOneByOne: a batch gives each request what it would get
// alone, in order, whatever the pool holds around the cursor (runs of
// one-port dynamic requests are served by a sweep; this is its check),
// and a batch that cannot be served fails at the request that would fail
// alone, leaving nothing taken.
func TestBatchMatchesOneByOne(t *testing.T) {
	spec := mustAddr("192.0.2.1")
	dyn := PortRange{100, 399}
	one := func(owner string, ip netip.Addr) PortRequest {
		return PortRequest{Owner: owner, Proto: TCP, HostIP: ip, Count: 1}
	}
	repeat := func(n int, r PortRequest) []PortRequest {
		out := make([]PortRequest, n)
		for i := range out {
			out[i] = r
		}
		return out
	}
	var scattered []PortRequest
	for p := uint16(100); p < 400; p += 3 {
		scattered = append(scattered, PortRequest{Owner: "x", Proto: TCP, HostIP: any4, Ports: Port(p)})
	}
	tests := []struct {
		name      string
		held      []PortRequest // taken first, one by one
		cursor    uint16
		listening []uint16
		reqs      []PortRequest
	}{
		{name: "empty pool", reqs: repeat(50, one("ep", any4))},
		{name: "whole range", reqs: repeat(300, one("ep", any4))},
		{name: "one too many", reqs: repeat(301, one("ep", any4))},
		{name: "holes, wrapping", held: append(slices.DeleteFunc(slices.Clone(scattered), func(r PortRequest) bool { return r.Ports.First >= 200 && r.Ports.First <= 250 }),
			PortRequest{Owner: "y", Proto: TCP, HostIP: any4, Ports: PortRange{200, 250}}), cursor: 300, reqs: repeat(120, one("ep", any4))},
		{name: "holes, exhausted", held: scattered, cursor: 398, reqs: repeat(201, one("ep", any4))},
		{name: "cursor at the end", cursor: 399, reqs: repeat(10, one("ep", any4))},
		{name: "cursor outside", cursor: 50, reqs: repeat(10, one("ep", any4))},
		{name: "specific address, wildcard held", held: scattered, cursor: 250, reqs: repeat(150, one("ep", spec))},
		{name: "wildcard, specific held", held: []PortRequest{{Owner: "s", Proto: TCP, HostIP: spec, Ports: PortRange{101, 150}}, {Owner: "t", Proto: TCP, HostIP: mustAddr("192.0.2.2"), Ports: PortRange{140, 160}}}, reqs: repeat(120, one("ep", any4))},
		{name: "specific beside specific", held: []PortRequest{{Owner: "s", Proto: TCP, HostIP: mustAddr("192.0.2.2"), Ports: PortRange{100, 399}}}, reqs: repeat(300, one("ep", spec))},
		{name: "IPv6", held: []PortRequest{{Owner: "s", Proto: TCP, HostIP: any6, Ports: PortRange{110, 120}}}, reqs: repeat(40, one("ep", mustAddr("2001:db8::1")))},
		{name: "listening sockets", listening: []uint16{100, 101, 103, 399}, cursor: 395, reqs: repeat(20, one("ep", any4))},
		{name: "listening sockets, exhausted", listening: []uint16{100, 101, 103, 399}, reqs: repeat(297, one("ep", any4))},
		{name: "runs broken up", reqs: slices.Concat(repeat(5, one("a", any4)), []PortRequest{{Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(108)}},
			repeat(5, one("a", any4)), repeat(3, one("b", any4)), repeat(4, PortRequest{Owner: "a", Proto: TCP, HostIP: any4, Count: 2}), repeat(3, one("a", spec)), repeat(3, one("a", any4)))},
		{name: "mapped address", reqs: repeat(10, one("ep", mustAddr("::ffff:192.0.2.1")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setup := func() *Allocator {
				a, err := Open(NewMemStore(), Options{DynamicPorts: dyn})
				if err != nil {
					t.Fatal(err)
				}
				if tt.listening != nil {
					a.checkListening, a.procNet = true, listeningOn(t, tt.listening...)
				}
				for _, r := range tt.held {
					allocPorts(t, a, r)
				}
				if tt.cursor != 0 {
					a.ports.pool(poolKey{TCP, any4}).cursor = tt.cursor
					a.ports.pool(poolKey{TCP, spec}).cursor = tt.cursor
				}
				return a
			}
			batch, alone := setup(), setup()
			before := takeSnapshot(t, batch)
			var want []PortAllocation
			failAt := -1
			for i, r := range tt.reqs {
				pas, err := alone.AllocatePortsBatch([]PortRequest{r}, nil)
				if err != nil {
					failAt = i
					break
				}
				want = append(want, pas...)
			}
			got, err := batch.AllocatePortsBatch(tt.reqs, nil)
			if failAt >= 0 {
				var be *BatchError
				if !errors.As(err, &be) || be.Index != failAt || !errors.Is(err, ErrExhausted) {
					t.Fatalf("batch = %v, want a BatchError at %d wrapping ErrExhausted, as request %d fails alone", err, failAt, failAt)
				}
				sameSnapshot(t, before, takeSnapshot(t, batch))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("batch gave\n%v\none by one\n%v", got, want)
			}
			// Same state, same records byte for byte, and the cursors
			// in the same place.
			sameSnapshot(t, takeSnapshot(t, alone), takeSnapshot(t, batch))
			next := PortRequest{Owner: "next", Proto: TCP, HostIP: tt.reqs[0].HostIP}
			n1, err1 := alone.AllocatePorts(next)
			n2, err2 := batch.AllocatePorts(next)
			if n1 != n2 || errKind(err1) != errKind(err2) {
				t.Errorf("next port after the batch %s %v, one by one %s %v", n2, err2, n1, err1)
			}
		})
	}
}
