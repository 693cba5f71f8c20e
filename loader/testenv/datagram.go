package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

const (
	maxDatagram = 64 << 10
	// A handful of tries with a wait each: enough to ride out a lost
	// fragment, while a path that cannot carry the datagram fails in
	// seconds.
	datagramTries = 5
	datagramWait  = time.Second
)

// ServeDatagramEcho sends every datagram back unchanged, whatever its size,
// until cleanup.
func (n *Netns) ServeDatagramEcho(t testing.TB, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := n.Do(func() (err error) {
		pc, err = net.ListenPacket("udp"+family(addr), addr)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			nr, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:nr], peer)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
}

// EchoDatagrams sends count datagrams of size bytes to an echo server, each
// from its own pseudo-random stream, and checks that each comes back
// unchanged and from the address it was sent to. A datagram without an
// answer is sent again, up to five times: the question is whether it can
// get through at all, not how many are lost.
func (n *Netns) EchoDatagrams(addr string, size, count int) error {
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	return n.Do(func() error {
		c, err := net.ListenUDP("udp"+family(addr), nil)
		if err != nil {
			return err
		}
		defer c.Close()
		payload := make([]byte, size)
		buf := make([]byte, maxDatagram)
		for i := range count {
			newStream(uint64(size)<<32 | uint64(i)).read(payload)
			if err := echoOnce(c, dst, payload, buf); err != nil {
				return fmt.Errorf("datagram %d of %d (%d bytes) to %s: %w", i+1, count, size, addr, err)
			}
		}
		return nil
	})
}

func echoOnce(c *net.UDPConn, dst netip.AddrPort, payload, buf []byte) error {
	var wrong []string // answers that were not the echo, for the error
	for range datagramTries {
		if _, err := c.WriteToUDPAddrPort(payload, dst); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(datagramWait))
		for {
			nr, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return err
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			switch {
			case from != dst:
				wrong = append(wrong, fmt.Sprintf("%d bytes from %s", nr, from))
			case nr != len(payload):
				wrong = append(wrong, fmt.Sprintf("%d bytes instead of %d", nr, len(payload)))
			case !bytes.Equal(buf[:nr], payload):
				wrong = append(wrong, fmt.Sprintf("a datagram differing from byte %d on", firstDifference(buf[:nr], payload)))
			default:
				return nil
			}
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("no echo in %d tries; got instead: %s", datagramTries, strings.Join(wrong, ", "))
	}
	return fmt.Errorf("no answer in %d tries", datagramTries)
}
