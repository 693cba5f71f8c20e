package testenv

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Ping sends one ICMP echo request from inside the namespace and waits for
// the matching reply; it returns the address the reply came from.
func (n *Netns) Ping(dst netip.Addr, id uint16) (netip.Addr, error) {
	var from netip.Addr
	err := n.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return fmt.Errorf("open icmp socket: %w", err)
		}
		defer c.Close()
		req := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'p', 'o', 'n', 't', 'o', 'o', 'n'}
		binary.BigEndian.PutUint16(req[4:], id)
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("send echo to %s: %w", dst, err)
		}
		c.SetReadDeadline(time.Now().Add(dialTimeout))
		buf := make([]byte, 1500)
		for {
			nr, peer, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("wait for echo reply from %s: %w", dst, err)
			}
			// A raw socket sees every ICMP message: wait for our reply.
			if nr >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id {
				from, _ = netip.AddrFromSlice(peer.(*net.IPAddr).IP.To4())
				return nil
			}
		}
	})
	return from, err
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Ping6 sends one ICMPv6 echo request from src (any of the namespace's
// addresses when invalid) to dst (with its zone for a link-local one) and
// waits for the matching reply.
func (n *Netns) Ping6(src, dst netip.Addr, id uint16) error {
	return n.Do(func() error {
		local := "::"
		if src.IsValid() {
			local = src.String()
		}
		c, err := net.ListenPacket("ip6:ipv6-icmp", local)
		if err != nil {
			return fmt.Errorf("open icmpv6 socket: %w", err)
		}
		defer c.Close()
		// The kernel fills in an ICMPv6 raw socket's checksum.
		req := []byte{128, 0, 0, 0, 0, 0, 0, 1, 'p', 'o', 'n', 't', 'o', 'o', 'n'}
		binary.BigEndian.PutUint16(req[4:], id)
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}); err != nil {
			return fmt.Errorf("send echo to %s: %w", dst, err)
		}
		c.SetReadDeadline(time.Now().Add(dialTimeout))
		buf := make([]byte, 1500)
		for {
			nr, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("wait for echo reply from %s: %w", dst, err)
			}
			if nr >= 8 && buf[0] == 129 && binary.BigEndian.Uint16(buf[4:]) == id {
				return nil
			}
		}
	})
}
