package testenv

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Conn is a TCP connection a test keeps open across something that must
// not break it (a reload, an agent restart).
type Conn struct {
	net.Conn
	r *bufio.Reader
}

// Connect opens a TCP connection from inside the namespace, closed at
// cleanup.
func (n *Netns) Connect(t testing.TB, addr string) *Conn {
	t.Helper()
	var conn net.Conn
	if err := n.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", addr, dialTimeout)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Conn{Conn: conn, r: bufio.NewReader(conn)}
}

// RoundTrip sends a line to an echo server and checks that it came back
// and that the server saw wantSource as the client.
func (c *Conn) RoundTrip(t testing.TB, wantSource netip.Addr) {
	t.Helper()
	const msg = "still there?"
	c.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		t.Fatalf("write on established connection: %v", err)
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read on established connection: %v", err)
	}
	peer, got, err := ParseEcho(reply)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(peer, wantSource.String()+":") || got != msg {
		t.Fatalf("unexpected echo %q", reply)
	}
}
