package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/control"
)

// TestPublishRefusesHostListeners: the agent reads the host's sockets
// once per publish request, and that one read still refuses every port a
// process in the agent's namespace holds: TCP listeners and bound UDP
// sockets, IPv4 and IPv6 (a [::] socket takes IPv4 too). The refused
// request, hundreds of specs long, changes nothing. A socket on another
// address of the other family ([::1]) does not block 0.0.0.0.
func TestPublishRefusesHostListeners(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())

	open := func(network, addr string) {
		t.Helper()
		err := w.host.Do(func() error {
			var c io.Closer
			var err error
			if strings.HasPrefix(network, "tcp") {
				c, err = net.Listen(network, addr)
			} else {
				c, err = net.ListenPacket(network, addr)
			}
			if err == nil {
				t.Cleanup(func() { c.Close() })
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s %s in the agent's namespace: %v", network, addr, err)
		}
	}
	open("tcp4", "127.0.0.1:31001")
	open("tcp6", "[::]:31002")
	open("udp4", "0.0.0.0:31003")
	open("udp6", "[::]:31004")
	open("tcp6", "[::1]:31005")

	before := w.snapshot()
	for _, c := range []struct{ spec, held string }{
		{"31001:80", "127.0.0.1:31001"},
		{"31002:80/tcp", "[::]:31002"},
		{"31003:53/udp", "0.0.0.0:31003"},
		{"31004:53/udp", "[::]:31004"},
		{"31000-31001:80-81", "127.0.0.1:31001"}, // 31000 is free: the range is refused whole
	} {
		// Many specs in one request: the read happens once for all.
		args := []string{"port", "publish", "c1"}
		for i := range 300 {
			args = append(args, fmt.Sprintf("%d:%d/tcp", 40000+i, 40000+i), fmt.Sprintf("%d:%d/udp", 40000+i, 40000+i))
		}
		args = append(args, c.spec)
		r := w.pt(args...)
		if r.code == 0 || !strings.Contains(r.stderr, "held by a host process on "+c.held) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("publish ... %s: exit %d, %q; want one line refusing it as held by a host process on %s", c.spec, r.code, r.stderr, c.held)
		}
		sameSnapshot(t, "a refused publish of "+c.spec, before, w.snapshot())
	}
	// The free ones, and [::1]:31005 does not shadow 0.0.0.0:31005.
	if out := w.ok("port", "publish", "c1", "31005:80", "31001:80/udp", "31003:53/tcp"); strings.Count(out, "\n") != 3 {
		t.Errorf("publish of free ports printed %q", out)
	}
}

// TestPortLsPaging: `port ls --limit` pages through every mapping exactly
// once, printing the flag for the next page on stderr; filters narrow the
// list; without flags the output is what it always was.
func TestPortLsPaging(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())
	args := []string{"port", "publish", "c1"}
	for i := range 25 {
		args = append(args, fmt.Sprintf("%d:%d/tcp", 20000+i, 80+i), fmt.Sprintf("%d:%d/udp", 20000+i, 80+i))
	}
	w.ok(args...)
	full := w.ok("port", "ls")
	if n := strings.Count(full, "\n"); n != 50 {
		t.Fatalf("port ls printed %d lines, want 50:\n%s", n, full)
	}

	var got []string
	flags := []string{"port", "ls", "--limit", "7"}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("more than 10 pages of 7 for 50 mappings")
		}
		r := w.pt(flags...)
		if r.code != 0 {
			t.Fatalf("pontoon %v: exit %d: %s", flags, r.code, r.stderr)
		}
		got = append(got, strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")...)
		_, token, more := strings.Cut(strings.TrimSpace(r.stderr), "--after ")
		if !more {
			break
		}
		flags = []string{"port", "ls", "--limit", "7", "--after", token}
	}
	if strings.Join(got, "\n")+"\n" != full {
		t.Errorf("pages of 7:\n%s\nwant the full list:\n%s", strings.Join(got, "\n"), full)
	}

	var page control.PortPage
	w.okJSON(&page, "port", "ls", "--proto", "udp", "--host-port", "20003", "--limit", "5")
	if len(page.Mappings) != 1 || page.Mappings[0].Proto != "udp" || page.Mappings[0].Host.First != 20003 || page.Next != "" {
		t.Errorf("udp on host port 20003: %+v, want that one mapping and no next page", page)
	}
	if r := w.pt("port", "ls", "--proto", "sctp"); r.code == 0 || !strings.Contains(r.stderr, "tcp or udp") {
		t.Errorf("--proto sctp: exit %d, %q; want a refusal naming tcp or udp", r.code, r.stderr)
	}
	if r := w.pt("port", "ls", "--limit", "0"); r.code == 0 || !strings.Contains(r.stderr, "--limit") {
		t.Errorf("--limit 0: exit %d, %q; want a refusal naming --limit", r.code, r.stderr)
	}
}
