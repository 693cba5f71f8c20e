package testenv

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
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
		if err := sendEcho(c, dst, id); err != nil {
			return err
		}
		from, err = awaitICMP(c, dialTimeout, "echo reply from "+dst.String(), func(msg []byte) bool {
			return len(msg) >= 8 && msg[0] == 0 && binary.BigEndian.Uint16(msg[4:]) == id
		})
		return err
	})
	return from, err
}

// sendEcho sends an echo request with identifier id on an ICMP or ICMPv6
// raw socket.
func sendEcho(c net.PacketConn, dst netip.Addr, id uint16) error {
	req := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'p', 'o', 'n', 't', 'o', 'o', 'n'}
	binary.BigEndian.PutUint16(req[4:], id)
	if dst.Is6() {
		req[0] = 128 // the kernel fills in an ICMPv6 raw socket's checksum
	} else {
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
	}
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}); err != nil {
		return fmt.Errorf("send echo to %s: %w", dst, err)
	}
	return nil
}

// awaitICMP reads the raw socket c, which sees every ICMP message, until
// one matches or timeout passes; it returns the sender of the match.
func awaitICMP(c net.PacketConn, timeout time.Duration, what string, match func(msg []byte) bool) (netip.Addr, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, maxFrameLen)
	for {
		nr, peer, err := c.ReadFrom(buf)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("wait for %s: %w", what, err)
		}
		if match(buf[:nr]) {
			from, _ := netip.AddrFromSlice(peer.(*net.IPAddr).IP)
			return from.Unmap(), nil
		}
	}
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
		if err := sendEcho(c, dst, id); err != nil {
			return err
		}
		_, err = awaitICMP(c, dialTimeout, "echo reply from "+dst.String(), func(msg []byte) bool {
			return len(msg) >= 8 && msg[0] == 129 && binary.BigEndian.Uint16(msg[4:]) == id
		})
		return err
	})
}

// ICMPError is an ICMP or ICMPv6 error a namespace got about one of its
// pings, with the echo it quotes as it arrived.
type ICMPError struct {
	From       netip.Addr
	Type, Code uint8
	QuotedSrc  netip.Addr
	QuotedID   uint16
}

// PingError sends one echo request to dst with the given TTL (hop limit)
// and waits for an error about it, rather than a reply: traceroute -I's
// time exceeded, or an unreachable destination.
func (n *Netns) PingError(dst netip.Addr, id uint16, ttl int) (ICMPError, error) {
	var got ICMPError
	err := n.Do(func() error {
		network, address, level, opt := "ip4:icmp", "0.0.0.0", unix.IPPROTO_IP, unix.IP_TTL
		if dst.Is6() {
			network, address, level, opt = "ip6:ipv6-icmp", "::", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS
		}
		c, err := net.ListenPacket(network, address)
		if err != nil {
			return fmt.Errorf("open %s socket: %w", network, err)
		}
		defer c.Close()
		if err := setsockoptInt(c.(*net.IPConn), level, opt, ttl); err != nil {
			return fmt.Errorf("set the echo's ttl: %w", err)
		}
		if err := sendEcho(c, dst, id); err != nil {
			return err
		}
		got.From, err = awaitICMP(c, dialTimeout, "an icmp error about the echo to "+dst.String(), func(msg []byte) bool {
			e, ok := quotedEcho(msg, dst.Is6(), id)
			if ok {
				got = e
			}
			return ok
		})
		return err
	})
	return got, err
}

// quotedEcho reads an error message (the IP header already stripped)
// that quotes an echo request with identifier id.
func quotedEcho(msg []byte, v6 bool, id uint16) (ICMPError, bool) {
	e := ICMPError{}
	if len(msg) < 8 {
		return e, false
	}
	e.Type, e.Code = msg[0], msg[1]
	q := msg[8:]
	if v6 {
		if (e.Type != 1 && e.Type != 3) || len(q) < 48 || q[40] != 128 {
			return e, false
		}
		e.QuotedSrc = netip.AddrFrom16([16]byte(q[8:24]))
		e.QuotedID = binary.BigEndian.Uint16(q[44:])
		return e, e.QuotedID == id
	}
	if e.Type != 3 && e.Type != 11 || len(q) < 20 {
		return e, false
	}
	ihl := int(q[0]&0x0f) * 4
	if len(q) < ihl+8 || q[ihl] != 8 {
		return e, false
	}
	e.QuotedSrc = netip.AddrFrom4([4]byte(q[12:16]))
	e.QuotedID = binary.BigEndian.Uint16(q[ihl+4:])
	return e, e.QuotedID == id
}

func setsockoptInt(c *net.IPConn, level, opt, value int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}
