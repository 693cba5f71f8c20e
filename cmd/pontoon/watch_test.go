package main

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// eventually waits for cond; the limit only stops a hang, it asserts no
// timing.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWatchers: the agent follows the host. An uplink named on the
// command line that appears later is attached; a new host address is
// published on; an endpoint whose namespace is deleted is collected with
// its ports.
func TestWatchers(t *testing.T) {
	w := newWorld(t, 1)
	// The world's uplink is not there yet when the agent starts: rename it
	// away and back.
	late := "ppl" + w.id
	w.host.IP(t, "link", "set", w.uplink, "down")
	w.host.IP(t, "link", "set", w.uplink, "name", late)
	w.startAgent()
	var s control.Status
	w.okJSON(&s, "status")
	if len(s.Uplinks) != 0 {
		t.Fatalf("uplinks before the interface exists: %+v", s.Uplinks)
	}

	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())
	w.containers[0].ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80")

	t.Run("an uplink that appears later is attached", func(t *testing.T) {
		w.host.IP(t, "link", "set", late, "name", w.uplink)
		w.host.IP(t, "link", "set", w.uplink, "up")
		w.host.IP(t, "addr", "replace", w.hostIP.String()+"/24", "dev", w.uplink)
		eventually(t, "the agent attaches "+w.uplink, func() bool {
			w.okJSON(&s, "status")
			return len(s.Uplinks) == 1 && s.Uplinks[0].Name == w.uplink
		})
		addr := netip.AddrPortFrom(w.hostIP, 8080).String()
		res, err := w.outside.Dial("tcp", addr)
		expectEcho(t, res, err, w.outsideIP, addr)
	})

	t.Run("a new host address is picked up", func(t *testing.T) {
		w.okJSON(&s, "status")
		before := s.HostAddrs
		w.host.IP(t, "addr", "add", "198.19.0.9/24", "dev", w.uplink)
		eventually(t, "hostaddrs grows", func() bool {
			w.okJSON(&s, "status")
			return s.HostAddrs > before
		})
		// A host-IP binding on the new address is accepted now.
		w.ok("port", "publish", "c1", "198.19.0.9:8081:80")
		res, err := w.outside.Dial("tcp", "198.19.0.9:8081")
		expectEcho(t, res, err, w.outsideIP, "198.19.0.9:8081")
	})

	t.Run("an endpoint whose namespace is gone is collected", func(t *testing.T) {
		name := "ppg" + w.id
		testenv.Run(t, "ip", "netns", "add", name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		w.ok("endpoint", "attach", "net", "doomed", "--netns", "/run/netns/"+name)
		w.ok("port", "publish", "doomed", "9999:80")
		testenv.Run(t, "ip", "netns", "del", name)
		eventually(t, "endpoint doomed is collected", func() bool {
			return !strings.Contains(w.ok("endpoint", "ls"), "doomed")
		})
		var ms []control.PortMapping
		w.okJSON(&ms, "port", "ls")
		for _, m := range ms {
			if m.Endpoint == "doomed" {
				t.Errorf("mapping of a collected endpoint left: %+v", m)
			}
		}
		for _, b := range w.bindings() {
			if strings.Contains(b, ":9999/") {
				t.Errorf("binding of a collected endpoint left: %s", b)
			}
		}
		// Its address is free again.
		w.ok("network", "inspect", "net")
	})
}
