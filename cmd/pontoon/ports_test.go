package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/control"
)

// TestConcurrentPublish runs 50 CLI publish calls at once, each asking for
// a dynamic host port: every one succeeds and no host port is handed out
// twice, in the records or in the map.
func TestConcurrentPublish(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())

	const n = 50
	results := make([]result, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = run(t, nil, "--socket", w.socket, "port", "publish", "c1", fmt.Sprint(1000+i))
		}()
	}
	wg.Wait()
	t.Logf("%d concurrent publish calls: %v", n, time.Since(start))
	seen := map[string]int{}
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("publish %d: exit %d: %s", i, r.code, r.stderr)
		}
		// "1000/tcp -> 0.0.0.0:61000"
		_, host, ok := strings.Cut(strings.TrimSpace(r.stdout), " -> ")
		if !ok {
			t.Fatalf("publish %d printed %q", i, r.stdout)
		}
		if prev, dup := seen[host]; dup {
			t.Errorf("host port %s handed to calls %d and %d", host, prev, i)
		}
		seen[host] = i
	}
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "ls")
	if len(ms) != n || len(seen) != n {
		t.Fatalf("%d mappings, %d distinct host ports, want %d", len(ms), len(seen), n)
	}
	if got := len(w.bindings()); got != n {
		t.Fatalf("%d bindings in the map, want %d", got, n)
	}
}

// TestPublishThousand publishes 1,000 ports in one request (one CLI call,
// one batch of map updates) as separate specs and as one range, and
// removes them again.
func TestPublishThousand(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())
	w.containers[0].ServeTCP(t, ":20999")

	args := []string{"port", "publish", "c1"}
	for i := range 1000 {
		args = append(args, fmt.Sprintf("%d:%d/udp", 30000+i, 30000+i))
	}
	start := time.Now()
	out := w.ok(args...)
	t.Logf("1,000 specs in one publish: %v (CLI round trip)", time.Since(start))
	if lines := strings.Count(out, "\n"); lines != 1000 {
		t.Fatalf("publish of 1,000 specs printed %d lines", lines)
	}
	start = time.Now()
	out = w.ok("port", "publish", "c1", "20000-20999:20000-20999")
	t.Logf("a 1,000-port range in one publish: %v (CLI round trip)", time.Since(start))
	if lines := strings.Count(out, "\n"); lines != 1000 {
		t.Fatalf("publish of a 1,000-port range printed %d lines", lines)
	}
	if got := len(w.bindings()); got != 2000 {
		t.Fatalf("%d bindings in the map, want 2000", got)
	}
	res, err := w.outside.Dial("tcp", w.hostIP.String()+":20999")
	expectEcho(t, res, err, w.outsideIP, w.hostIP.String()+":20999")

	w.ok("port", "unpublish", "c1", "20000-20999")
	w.ok("port", "unpublish", "c1", "30000-30999/udp")
	if got := len(w.bindings()); got != 0 {
		t.Fatalf("%d bindings left after unpublishing everything", got)
	}
}
