package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The echo servers answer every line or datagram with the peer address
// they saw, which is what the tests assert on: whether the server sees the
// real client, and whether a reply made it back at all.
func echoReply(peer net.Addr, msg string) string {
	return fmt.Sprintf("from=%s msg=%s\n", peer, strings.TrimSpace(msg))
}

// ParseEcho splits a reply into the peer the server saw and the message.
func ParseEcho(reply string) (peer, msg string, err error) {
	reply = strings.TrimSpace(reply)
	from, rest, ok := strings.Cut(reply, " msg=")
	if !ok || !strings.HasPrefix(from, "from=") {
		return "", "", fmt.Errorf("not an echo reply: %q", reply)
	}
	return strings.TrimPrefix(from, "from="), rest, nil
}

// ServeTCP runs a line echo server inside the namespace until cleanup.
func (n *Netns) ServeTCP(t testing.TB, addr string) {
	t.Helper()
	n.serveConns(t, addr, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(echoReply(c.RemoteAddr(), line))); err != nil {
				return
			}
		}
	})
}

// serveConns listens on addr inside the namespace and runs handle for
// every connection until cleanup, which closes the listener and every
// connection (unblocking handlers a stalled client left behind) and waits
// for the handlers.
func (n *Netns) serveConns(t testing.TB, addr string, handle func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp"+family(addr), addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// ServeUDP runs a datagram echo server inside the namespace until cleanup.
func (n *Netns) ServeUDP(t testing.TB, addr string) {
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
		buf := make([]byte, 2048)
		for {
			nr, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(echoReply(peer, string(buf[:nr]))), peer)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
}

// DialResult is what a client saw: the peer address the kernel reported to
// it (getpeername or recvfrom) and the server's reply.
type DialResult struct {
	Peer  string
	Reply string
}

const dialTimeout = 3 * time.Second

// family is "" for an IPv6 address (Go's "tcp" and "udp" open a
// dual-stack IPv6 socket for one, as most clients do; "tcp6" would set
// IPV6_V6ONLY), else "4".
func family(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is6() {
		return ""
	}
	return "4"
}

// dial is net.DialTimeout, except that an IPv4-mapped address is dialled
// from a dual-stack IPv6 socket, as Java and Node dial one: Go's dialer
// would open an IPv4 socket for it.
func dial(network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4In6() {
		return net.DialTimeout(network, addr, dialTimeout)
	}
	typ := unix.SOCK_STREAM
	if strings.HasPrefix(network, "udp") {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open a dual-stack socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dual-stack")
	defer f.Close()
	tv := unix.NsecToTimeval(dialTimeout.Nanoseconds())
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		return nil, err
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}); err != nil {
		return nil, fmt.Errorf("dial %s from a dual-stack socket: %w", addr, err)
	}
	return net.FileConn(f)
}

// Dial connects from inside the namespace (in this process: no cgroup).
func (n *Netns) Dial(network, addr string) (DialResult, error) {
	var res DialResult
	err := n.Do(func() (err error) {
		res, err = dialOnce(network, addr)
		return err
	})
	return res, err
}

// DialFrom connects from a helper process in the namespace and cgroup, so
// the cgroup's socket hooks apply.
func (n *Netns) DialFrom(t testing.TB, cgroup, network, addr string) (DialResult, error) {
	t.Helper()
	var res DialResult
	err := n.Helper(t, cgroup, &res, "dial", network, addr)
	return res, err
}

func dialHelper(args []string) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("dial wants network and address")
	}
	return dialOnce(args[0], args[1])
}

// dialOnce sends one line and reads the answer. "udp" sends from an
// unconnected socket (sendmsg/recvmsg path), "udp-connected" connects
// first (connect/getpeername path).
func dialOnce(network, addr string) (DialResult, error) {
	const msg = "ping"
	deadline := time.Now().Add(dialTimeout)
	switch network {
	case "tcp", "udp-connected":
		proto := "tcp" + family(addr)
		if network == "udp-connected" {
			proto = "udp" + family(addr)
		}
		c, err := dial(proto, addr)
		if err != nil {
			return DialResult{}, err
		}
		defer c.Close()
		c.SetDeadline(deadline)
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return DialResult{}, err
		}
		reply, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return DialResult{}, fmt.Errorf("read reply from %s: %w", addr, err)
		}
		return DialResult{Peer: c.RemoteAddr().String(), Reply: reply}, nil
	case "udp":
		dst, err := net.ResolveUDPAddr("udp"+family(addr), addr)
		if err != nil {
			return DialResult{}, err
		}
		c, err := net.ListenUDP("udp"+family(addr), nil)
		if err != nil {
			return DialResult{}, err
		}
		defer c.Close()
		c.SetDeadline(deadline)
		if _, err := c.WriteTo([]byte(msg), dst); err != nil {
			return DialResult{}, err
		}
		buf := make([]byte, 2048)
		nr, from, err := c.ReadFrom(buf)
		if err != nil {
			return DialResult{}, fmt.Errorf("read reply from %s: %w", addr, err)
		}
		return DialResult{Peer: from.String(), Reply: string(buf[:nr])}, nil
	}
	return DialResult{}, fmt.Errorf("unknown network %q", network)
}
