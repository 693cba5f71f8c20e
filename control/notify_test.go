package control

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenNotify plays systemd: a datagram socket the test reads from.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func readNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	// A deadline only so a broken sender fails the test instead of hanging it.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsToSocket(t *testing.T) {
	c := listenNotify(t)
	if err := Notify("READY=1\nSTATUS=test"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, c); got != "READY=1\nSTATUS=test" {
		t.Fatalf("got %q", got)
	}
}

func TestNotifyWithoutSocketIsANoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("notify outside systemd: %v", err)
	}
}

func TestNotifyReportsAMissingSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	if err := Notify("READY=1"); err == nil {
		t.Fatal("notify to a missing socket succeeded")
	}
}

func TestWatchdogPings(t *testing.T) {
	c := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); watchdog(ctx, slog.New(slog.DiscardHandler), func() error { return nil }) }()
	for range 3 {
		if got := readNotify(t, c); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	<-done
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"0", "", 0, false},
		{"junk", "", 0, false},
		{"30000000", "", 15 * time.Second, true},
		{"30000000", strconv.Itoa(os.Getpid()), 15 * time.Second, true},
		{"30000000", "1", 0, false},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		got, ok := watchdogInterval()
		if got != c.want || ok != c.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %v %v, want %v %v", c.usec, c.pid, got, ok, c.want, c.ok)
		}
	}
}

func TestAbstractNotifySocket(t *testing.T) {
	name := "pontoon-test-" + strconv.Itoa(os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "@" + name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	if err := Notify("STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, c); !strings.HasPrefix(got, "STOPPING=1") {
		t.Fatalf("got %q", got)
	}
}
