package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"testing"
)

// holdings is what the workers believe they hold; any overlap means the
// allocator handed something out twice.
type holdings struct {
	mu       sync.Mutex
	ips      map[netip.Addr]string
	ports    map[string]string // proto/host/port -> owner
	specific map[string]int    // proto/family/port -> specific addresses holding it
}

func portKeys(pa PortAllocation, p int) (own, wildcard, family string) {
	fam := "4"
	if pa.HostIP.Is6() {
		fam = "6"
	}
	return fmt.Sprintf("%s/%s/%d", pa.Proto, pa.HostIP, p),
		fmt.Sprintf("%s/%s/%d", pa.Proto, unspecified(pa.HostIP), p),
		fmt.Sprintf("%s/%s/%d", pa.Proto, fam, p)
}

func (h *holdings) addPorts(t *testing.T, pa PortAllocation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := int(pa.Ports.First); p <= int(pa.Ports.Last); p++ {
		own, wild, fam := portKeys(pa, p)
		if o, ok := h.ports[own]; ok {
			t.Errorf("%s handed to %q while %q holds it", own, pa.Owner, o)
		}
		if pa.HostIP.IsUnspecified() && h.specific[fam] > 0 {
			t.Errorf("wildcard %s handed to %q while a specific address holds it", own, pa.Owner)
		}
		if !pa.HostIP.IsUnspecified() {
			if o, ok := h.ports[wild]; ok {
				t.Errorf("%s handed to %q while %q holds the wildcard", own, pa.Owner, o)
			}
			h.specific[fam]++
		}
		h.ports[own] = pa.Owner
	}
}

func (h *holdings) dropPorts(pa PortAllocation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := int(pa.Ports.First); p <= int(pa.Ports.Last); p++ {
		own, _, fam := portKeys(pa, p)
		delete(h.ports, own)
		if !pa.HostIP.IsUnspecified() {
			h.specific[fam]--
		}
	}
}

func TestConcurrentNeverDuplicates(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: PortRange{50000, 50199}})
		if err != nil {
			t.Fatal(err)
		}
		addNet(t, a, "n", "10.30.0.0/24", "fd00:30::/120")
		h := &holdings{ips: map[netip.Addr]string{}, ports: map[string]string{}, specific: map[string]int{}}
		hosts := []netip.Addr{any4, any6, mustAddr("192.0.2.1"), mustAddr("192.0.2.2"), mustAddr("2001:db8::1")}
		ops := 400
		if _, ok := s.(*BoltStore); ok {
			ops = 120
		}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 7))
				var owners []string
				for i := range ops {
					switch r.IntN(4) {
					case 0:
						owner := fmt.Sprintf("w%d-%d", w, i)
						got, err := a.AllocateIPs(IPRequest{Network: "n", Owner: owner})
						if err != nil {
							wantErrKind(t, err, ErrExhausted)
							continue
						}
						h.mu.Lock()
						for _, addr := range got {
							if o, ok := h.ips[addr]; ok {
								t.Errorf("%s handed to %q while %q holds it", addr, owner, o)
							}
							h.ips[addr] = owner
						}
						h.mu.Unlock()
						owners = append(owners, owner)
					case 1:
						if len(owners) == 0 {
							continue
						}
						j := r.IntN(len(owners))
						owner := owners[j]
						owners = append(owners[:j], owners[j+1:]...)
						h.mu.Lock()
						for addr, o := range h.ips {
							if o == owner {
								delete(h.ips, addr)
							}
						}
						h.mu.Unlock()
						if _, err := a.ReleaseIPs("n", owner); err != nil {
							t.Errorf("release %s: %v", owner, err)
						}
					case 2:
						owner := fmt.Sprintf("w%d", w)
						req := PortRequest{Owner: owner, Proto: []Proto{TCP, UDP}[r.IntN(2)], HostIP: hosts[r.IntN(len(hosts))]}
						if r.IntN(2) == 0 {
							first := uint16(50000 + r.IntN(200))
							req.Ports = PortRange{first, first + uint16(r.IntN(2))}
						} else {
							req.Count = 1 + r.IntN(3)
						}
						got, err := a.AllocatePorts(req)
						if err != nil {
							wantErrKind(t, err, ErrInUse, ErrExhausted, ErrInvalid)
							continue
						}
						h.addPorts(t, got)
					case 3:
						held := a.Ports(fmt.Sprintf("w%d", w))
						if len(held) == 0 {
							continue
						}
						pa := held[r.IntN(len(held))]
						h.dropPorts(pa)
						if _, err := a.ReleasePorts(pa.Proto, pa.HostIP, pa.Ports); err != nil {
							t.Errorf("release %s: %v", pa, err)
						}
					}
				}
			})
		}
		wg.Wait()

		// The allocator holds exactly what the workers believe they hold.
		ips, _ := a.IPs("n")
		if len(ips) != len(h.ips) {
			t.Errorf("allocator holds %d addresses, workers %d", len(ips), len(h.ips))
		}
		for _, ip := range ips {
			if h.ips[ip.Addr] != ip.Owner {
				t.Errorf("allocator has %s for %q, workers think %q", ip.Addr, ip.Owner, h.ips[ip.Addr])
			}
		}
		var got, want []string
		for _, pa := range a.Ports("") {
			for p := int(pa.Ports.First); p <= int(pa.Ports.Last); p++ {
				own, _, _ := portKeys(pa, p)
				got = append(got, own+"="+pa.Owner)
			}
		}
		for k, o := range h.ports {
			want = append(want, k+"="+o)
		}
		sort.Strings(got)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("allocator ports %v\nworkers think %v", got, want)
		}
		if len(want) == 0 || len(ips) == 0 {
			t.Error("the workload ended with nothing held; it tests too little")
		}
	})
}

func wantErrKind(t *testing.T, err error, kinds ...error) {
	for _, k := range kinds {
		if errKind(err) == k {
			return
		}
	}
	t.Errorf("unexpected error %v", err)
}
