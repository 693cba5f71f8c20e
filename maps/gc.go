package maps

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Lifetimes say how long an idle flow is kept, by what it has seen. A SYN
// nobody answered and a closed connection go quickly, so a port scan or a
// burst of short connections cannot fill the tables.
type Lifetimes struct {
	TCPOpening     time.Duration // handshake not complete
	TCPEstablished time.Duration
	TCPClosing     time.Duration // FIN or RST seen
	UDP            time.Duration
	ICMP           time.Duration
}

// DefaultLifetimes are close to Linux conntrack's for SYN_SENT, CLOSE and
// ICMP, shorter for established flows (6 h, not 5 days) as Cilium's are.
func DefaultLifetimes() Lifetimes {
	return Lifetimes{
		TCPOpening:     60 * time.Second,
		TCPEstablished: 6 * time.Hour,
		TCPClosing:     10 * time.Second,
		UDP:            60 * time.Second,
		ICMP:           30 * time.Second,
	}
}

func (l Lifetimes) of(proto Proto, tcpFlags uint8) time.Duration {
	switch {
	case proto == UDP:
		return l.UDP
	case proto != TCP:
		return l.ICMP
	case tcpFlags&(CTTCPFin|CTTCPRst) != 0:
		return l.TCPClosing
	case tcpFlags&CTTCPEstablished != 0:
		return l.TCPEstablished
	default:
		return l.TCPOpening
	}
}

// MonotonicNow is the clock the datapath stamps entries with
// (bpf_ktime_get_ns, CLOCK_MONOTONIC).
func MonotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("read CLOCK_MONOTONIC: %v", err)) // cannot fail on Linux
	}
	return time.Duration(ts.Nano())
}

func expired(now time.Duration, lastSeenNs uint64, lifetime time.Duration) bool {
	return now-time.Duration(lastSeenNs) > lifetime
}

// GC deletes conntrack entries idle for longer than their lifetime and
// returns how many went.
func (c *CT) GC(now time.Duration, l Lifetimes) (int, error) { return c.GCEach(now, l, nil) }

// GCEach is GC that also hands each expired entry to gone (when not nil)
// before deleting it.
func (c *CT) GCEach(now time.Duration, l Lifetimes, gone func(CTEntry)) (int, error) {
	return c.deleteWhere(func(k CTKey, v CTValue) bool {
		if !expired(now, v.LastSeenNs, l.of(k.Proto, v.TCPFlags)) {
			return false
		}
		if gone != nil {
			gone(ctEntryFrom(k, v))
		}
		return true
	})
}

// SNAT wraps the snat map: both directions of every masqueraded flow.
type SNAT struct{ m *ebpf.Map }

func NewSNAT(m *ebpf.Map) *SNAT { return &SNAT{m: m} }

// SNATFlow is one masqueraded flow, seen from the container.
type SNATFlow struct {
	Key   CTKey // container -> server
	Value SNATValue
}

// reverseKey is the key of a forward entry's other direction.
func reverseKey(fwd CTKey, v SNATValue) CTKey {
	return CTKey{Family: fwd.Family, Proto: fwd.Proto, Sport: fwd.Dport, Dport: v.Port, Saddr: fwd.Daddr, Daddr: v.Addr}
}

// Count returns the number of entries, both directions counted.
func (s *SNAT) Count() (int, error) {
	var (
		n int
		k CTKey
		v SNATValue
	)
	it := s.m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate snat: %w", err)
	}
	return n, nil
}

// GC deletes flows idle for longer than their lifetime. A flow's two
// entries go together, judged by the later of their last-seen stamps and
// by every TCP flag either direction saw.
func (s *SNAT) GC(now time.Duration, l Lifetimes) (int, error) { return s.GCEach(now, l, nil) }

// GCEach is GC that also hands each expired flow that has both entries to
// gone (when not nil) before deleting it: its forward key, and a value
// with the later stamp and every TCP flag of the two.
func (s *SNAT) GCEach(now time.Duration, l Lifetimes, gone func(SNATFlow)) (int, error) {
	all := map[CTKey]SNATValue{}
	if err := walk(s.m, func(k CTKey, v SNATValue) { all[k] = v }); err != nil {
		return 0, err
	}
	var stale []CTKey
	paired := map[CTKey]bool{}
	for k, v := range all {
		if v.Flags&SNATForward == 0 {
			continue
		}
		rk := reverseKey(k, v)
		last, flags := v.LastSeenNs, v.TCPFlags
		if rv, ok := all[rk]; ok {
			paired[rk] = true
			last, flags = max(last, rv.LastSeenNs), flags|rv.TCPFlags
		}
		if expired(now, last, l.of(k.Proto, flags)) {
			stale = append(stale, k)
			if paired[rk] {
				stale = append(stale, rk)
				if gone != nil {
					v.LastSeenNs, v.TCPFlags = last, flags
					gone(SNATFlow{Key: k, Value: v})
				}
			}
		}
	}
	for k, v := range all {
		if v.Flags&SNATReverse != 0 && !paired[k] && expired(now, v.LastSeenNs, l.of(k.Proto, v.TCPFlags)) {
			stale = append(stale, k)
		}
	}
	if err := batchDelete(s.m, stale); err != nil {
		return 0, err
	}
	return len(stale), nil
}

// DeleteOutsidePorts deletes the masqueraded TCP and UDP flows whose
// translated port lies outside first-last, both halves of each, and
// returns how many flows went. ICMP flows keep their echo ids.
func (s *SNAT) DeleteOutsidePorts(first, last uint16) (int, error) {
	var (
		stale []CTKey
		flows int
	)
	outside := func(netPort uint16) bool {
		p := hostPort(netPort)
		return p < first || p > last
	}
	err := walk(s.m, func(k CTKey, v SNATValue) {
		if k.Proto != TCP && k.Proto != UDP {
			return
		}
		switch {
		case v.Flags&SNATForward != 0 && outside(v.Port):
			stale = append(stale, k)
			flows++
		case v.Flags&SNATReverse != 0 && outside(k.Dport):
			stale = append(stale, k)
		}
	})
	if err != nil {
		return 0, err
	}
	return flows, batchDelete(s.m, stale)
}
