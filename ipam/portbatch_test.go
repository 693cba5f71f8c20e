package ipam

import (
	"errors"
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
