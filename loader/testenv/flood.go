package testenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// DocumentationRanges are the IPv4 blocks RFC 5737 sets aside for
// examples: no machine anywhere owns them, so a spoofed packet that
// escaped the test's namespaces could not land on anyone.
var DocumentationRanges = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
}

// DocumentationRange6 is IPv6's (RFC 3849), for the same reason. Tests
// that number their own links from it must flood from a part they do not
// use.
var DocumentationRange6 = netip.MustParsePrefix("2001:db8::/32")

// SYNFlood is a bounded flood of TCP SYNs with spoofed sources, as an
// attacker filling a conntrack table would send it.
type SYNFlood struct {
	Dst netip.AddrPort
	// Sources are taken in turn, each host address of each, then the
	// source port moves on: every SYN is a flow of its own. Each must lie
	// inside DocumentationRanges or DocumentationRange6, in Dst's family.
	Sources []netip.Prefix
	Count   int
	// Limit bounds the flood's duration whatever Count says.
	Limit time.Duration
	// Enough, if set, is asked every 1024 SYNs; the flood stops once it
	// says true. A goal the datapath reports (SYNs translated) holds on
	// any machine, where a count within a limit depends on its speed.
	Enough func() bool
}

// FloodStats is what a flood sent.
type FloodStats struct {
	Sent    int
	Elapsed time.Duration
}

// maxFlood keeps a mistyped count from running away.
const maxFlood = 1 << 20

// FloodSYN sends the flood from inside the namespace through a raw
// socket. It stops at Count or Limit, whichever comes first.
func (n *Netns) FloodSYN(f SYNFlood) (FloodStats, error) {
	if f.Count <= 0 || f.Count > maxFlood || f.Limit <= 0 {
		return FloodStats{}, fmt.Errorf("flood of %d SYNs within %s: give 0 < count <= %d and a limit", f.Count, f.Limit, maxFlood)
	}
	if len(f.Sources) == 0 {
		return FloodStats{}, errors.New("flood without sources")
	}
	var hosts []netip.Addr
	for _, p := range f.Sources {
		if !documentation(p) || p.Addr().Is4() != f.Dst.Addr().Is4() {
			return FloodStats{}, fmt.Errorf("flood source %s is not inside a documentation range (RFC 5737, RFC 3849) of %s's family", p, f.Dst.Addr())
		}
		for a := p.Masked().Addr().Next(); p.Contains(a) && len(hosts) < 1<<16; a = a.Next() {
			if p.Bits() < 31 && !p.Contains(a.Next()) {
				break // the broadcast address
			}
			hosts = append(hosts, a)
		}
	}
	if len(hosts) == 0 {
		return FloodStats{}, errors.New("flood sources hold no host address")
	}

	var stats FloodStats
	err := n.Do(func() error {
		r, err := openRawIP(f.Dst.Addr().Is6())
		if err != nil {
			return err
		}
		defer r.Close()
		start := time.Now()
		deadline := start.Add(f.Limit)
		build, pkt := buildSYN, make([]byte, 40)
		if f.Dst.Addr().Is6() {
			build, pkt = buildSYN6, make([]byte, 60)
		}
		for i := range f.Count {
			// Checking the clock every packet would cost more than the send.
			if i%1024 == 0 && (time.Now().After(deadline) || f.Enough != nil && f.Enough()) {
				break
			}
			src := hosts[i%len(hosts)]
			sport := uint16(1024 + (i/len(hosts))%64000)
			build(pkt, netip.AddrPortFrom(src, sport), f.Dst, uint32(i)*2654435761)
			if err := r.send(pkt, f.Dst.Addr()); err != nil {
				return fmt.Errorf("send SYN %d: %w", i, err)
			}
			stats.Sent++
		}
		stats.Elapsed = time.Since(start)
		return nil
	})
	return stats, err
}

func documentation(p netip.Prefix) bool {
	if p.Addr().Is6() {
		return DocumentationRange6.Bits() <= p.Bits() && DocumentationRange6.Contains(p.Addr())
	}
	for _, d := range DocumentationRanges {
		if d.Bits() <= p.Bits() && d.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// buildSYN writes a 20-byte IPv4 header and a 20-byte TCP SYN into pkt.
func buildSYN(pkt []byte, src, dst netip.AddrPort, seq uint32) {
	clear(pkt)
	ip := pkt[:20]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6 // TCP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], icmpChecksum(ip))
	writeSYN(pkt[20:40], src, dst, seq)
}

// buildSYN6 writes a 40-byte IPv6 header and a 20-byte TCP SYN into pkt.
func buildSYN6(pkt []byte, src, dst netip.AddrPort, seq uint32) {
	clear(pkt)
	ip := pkt[:40]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6] = 6 // TCP
	ip[7] = 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	writeSYN(pkt[40:60], src, dst, seq)
}

// writeSYN writes a 20-byte TCP SYN from src to dst into tcp (zeroed). Its
// checksum covers the pseudo header of either family: the addresses, the
// protocol and the length, summed in any order.
func writeSYN(tcp []byte, src, dst netip.AddrPort, seq uint32) {
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	var sum [16 + 16 + 4 + 20]byte
	n := copy(sum[:], src.Addr().AsSlice())
	n += copy(sum[n:], dst.Addr().AsSlice())
	n += copy(sum[n:], []byte{0, 6, 0, 20})
	n += copy(sum[n:], tcp[:20])
	binary.BigEndian.PutUint16(tcp[16:], icmpChecksum(sum[:n]))
}
