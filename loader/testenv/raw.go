package testenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// Hostile clients need what a well-behaved socket never sends: frames with
// someone else's addresses, protocols Pontoon does not carry, packets the
// kernel would not build. These helpers send them from inside a namespace
// and watch, below every socket, what an interface receives.

// Sniffer keeps the frames an interface receives (never those it sends),
// the first 20,000 of them: enough for probes, not meant for floods.
// Its tap sits before tc ingress: on the host side of a container's veth
// it sees what the container sent, also what tc then drops.
type Sniffer struct {
	fd   int
	done chan struct{}

	mu     sync.Mutex
	frames [][]byte
}

const (
	maxSniffed  = 20000
	sniffPoll   = 100 * time.Millisecond
	maxFrameLen = 64 << 10
)

// Sniff starts keeping what ifname in the namespace receives, until
// cleanup.
func (n *Netns) Sniff(t testing.TB, ifname string) *Sniffer {
	t.Helper()
	s := &Sniffer{fd: -1, done: make(chan struct{})}
	if err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0 until bind: no frame of another interface slips in.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		tv := unix.NsecToTimeval(sniffPoll.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		s.fd = fd
		return nil
	}); err != nil {
		t.Fatalf("sniff %s in %s: %v", ifname, n.Name, err)
	}
	stop := make(chan struct{})
	go s.run(stop)
	t.Cleanup(func() {
		close(stop)
		<-s.done
		unix.Close(s.fd)
	})
	return s
}

func (s *Sniffer) run(stop chan struct{}) {
	defer close(s.done)
	buf := make([]byte, maxFrameLen)
	for {
		select {
		case <-stop:
			return
		default:
		}
		nr, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		s.mu.Lock()
		if len(s.frames) < maxSniffed {
			s.frames = append(s.frames, append([]byte(nil), buf[:nr]...))
		}
		s.mu.Unlock()
	}
}

// Count is how many frames received so far match.
func (s *Sniffer) Count(match func(frame []byte) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.frames {
		if match(f) {
			n++
		}
	}
	return n
}

// WaitFor waits until at least want received frames match, or timeout;
// it returns how many did.
func (s *Sniffer) WaitFor(match func(frame []byte) bool, want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		got := s.Count(match)
		if got >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FrameIPv4 is what a sniffed frame's IPv4 header says; ok is false for
// anything else.
type FrameIPv4 struct {
	Src, Dst netip.Addr
	Proto    layers.IPProtocol
	Fragment bool // more fragments follow, or it is not the first
	ID       uint16
	Payload  []byte // after the IP header, as far as the frame goes
}

// ParseIPv4 reads the IPv4 header of an Ethernet frame.
func ParseIPv4(frame []byte) (FrameIPv4, bool) {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:]) != uint16(layers.EthernetTypeIPv4) {
		return FrameIPv4{}, false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return FrameIPv4{}, false
	}
	flagsOff := binary.BigEndian.Uint16(ip[6:])
	return FrameIPv4{
		Src:      netip.AddrFrom4([4]byte(ip[12:16])),
		Dst:      netip.AddrFrom4([4]byte(ip[16:20])),
		Proto:    layers.IPProtocol(ip[9]),
		Fragment: flagsOff&0x3fff != 0,
		ID:       binary.BigEndian.Uint16(ip[4:]),
		Payload:  ip[ihl:],
	}, true
}

// FromIPv4 matches IPv4 frames with this source address.
func FromIPv4(src netip.Addr) func([]byte) bool {
	return func(frame []byte) bool {
		ip, ok := ParseIPv4(frame)
		return ok && ip.Src == src
	}
}

// HardwareAddr is the MAC address of an interface in the namespace.
func (n *Netns) HardwareAddr(t testing.TB, ifname string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// SendFrames writes whole Ethernet frames to ifname, as they are.
func (n *Netns) SendFrames(ifname string, frames ...[]byte) error {
	return n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				return fmt.Errorf("send %d-byte frame on %s: %w", len(f), ifname, err)
			}
		}
		return nil
	})
}

// rawIPv4 is a socket that sends whole IPv4 packets (IPPROTO_RAW implies
// IP_HDRINCL): the kernel fills in the checksum and total length, and takes
// the source as written. Create it inside the namespace.
type rawIPv4 struct{ fd int }

func openRawIPv4() (*rawIPv4, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("open raw IPv4 socket: %w", err)
	}
	return &rawIPv4{fd: fd}, nil
}

func (r *rawIPv4) send(packet []byte, dst netip.Addr) error {
	return unix.Sendto(r.fd, packet, 0, &unix.SockaddrInet4{Addr: dst.As4()})
}

func (r *rawIPv4) Close() error { return unix.Close(r.fd) }

// rawIPv6 is rawIPv4 for IPv6: IPPROTO_RAW on AF_INET6 sends the header as
// written, source included.
type rawIPv6 struct{ fd int }

func (r *rawIPv6) send(packet []byte, dst netip.Addr) error {
	return unix.Sendto(r.fd, packet, 0, &unix.SockaddrInet6{Addr: dst.As16()})
}

func (r *rawIPv6) Close() error { return unix.Close(r.fd) }

// rawSender is a raw socket of either family.
type rawSender interface {
	send(packet []byte, dst netip.Addr) error
	Close() error
}

func openRawIP(v6 bool) (rawSender, error) {
	if !v6 {
		return openRawIPv4()
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("open raw IPv6 socket: %w", err)
	}
	return &rawIPv6{fd: fd}, nil
}

// SendIPv4 sends whole IPv4 packets, headers as given, routed by their
// destination.
func (n *Netns) SendIPv4(packets ...[]byte) error {
	return n.Do(func() error {
		r, err := openRawIPv4()
		if err != nil {
			return err
		}
		defer r.Close()
		for _, p := range packets {
			if len(p) < 20 {
				return fmt.Errorf("not an IPv4 packet: %d bytes", len(p))
			}
			if err := r.send(p, netip.AddrFrom4([4]byte(p[16:20]))); err != nil {
				return fmt.Errorf("send raw IPv4 packet: %w", err)
			}
		}
		return nil
	})
}

// Serialize builds a packet from layers, lengths and checksums computed.
func Serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, err
	}
	return append([]byte(nil), buf.Bytes()...), nil
}

// IPv4Header is a plain IPv4 header for Serialize: TTL 64, no options.
func IPv4Header(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{
		Version:  4,
		IHL:      5,
		TTL:      64,
		Protocol: proto,
		SrcIP:    src.AsSlice(),
		DstIP:    dst.AsSlice(),
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Inbox keeps what a datagram socket in the namespace receives, until
// cleanup: "udp4" for UDP, "ip4:N" for IP protocol N.
type Inbox struct {
	pc   net.PacketConn
	done chan struct{}

	mu  sync.Mutex
	got []Datagram
}

// Datagram is one thing an Inbox received.
type Datagram struct {
	From    netip.Addr
	Payload []byte
}

// ListenInbox opens the socket and starts keeping what it receives.
func (n *Netns) ListenInbox(t testing.TB, network, addr string) *Inbox {
	t.Helper()
	in := &Inbox{done: make(chan struct{})}
	if err := n.Do(func() (err error) {
		in.pc, err = net.ListenPacket(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, n.Name, err)
	}
	go func() {
		defer close(in.done)
		buf := make([]byte, maxFrameLen)
		for {
			nr, from, err := in.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var src netip.Addr
			switch a := from.(type) {
			case *net.UDPAddr:
				src = a.AddrPort().Addr().Unmap()
			case *net.IPAddr:
				src, _ = netip.AddrFromSlice(a.IP.To4())
			}
			in.mu.Lock()
			in.got = append(in.got, Datagram{From: src, Payload: append([]byte(nil), buf[:nr]...)})
			in.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		in.pc.Close()
		<-in.done
	})
	return in
}

// Received is what arrived so far.
func (in *Inbox) Received() []Datagram {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Datagram(nil), in.got...)
}

// WaitFor waits until at least want datagrams matching arrived, or timeout;
// it returns how many did.
func (in *Inbox) WaitFor(match func(Datagram) bool, want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		got := 0
		for _, d := range in.Received() {
			if match(d) {
				got++
			}
		}
		if got >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PingSize sends one ICMP echo request carrying size bytes of payload
// (more than the MTU makes the kernel fragment it, as ping -s does) and
// waits up to timeout for the matching reply, whose source it returns.
func (n *Netns) PingSize(dst netip.Addr, id uint16, size int, timeout time.Duration) (netip.Addr, error) {
	var from netip.Addr
	err := n.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return fmt.Errorf("open icmp socket: %w", err)
		}
		defer c.Close()
		req := make([]byte, 8+size)
		req[0] = 8 // echo request
		binary.BigEndian.PutUint16(req[4:], id)
		binary.BigEndian.PutUint16(req[6:], 1)
		for i := range size {
			req[8+i] = byte(i)
		}
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("send %d-byte echo to %s: %w", size, dst, err)
		}
		from, err = awaitICMP(c, timeout, "echo reply from "+dst.String(), func(msg []byte) bool {
			return len(msg) == len(req) && msg[0] == 0 && binary.BigEndian.Uint16(msg[4:]) == id
		})
		return err
	})
	return from, err
}
