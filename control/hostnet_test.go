package control

import (
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestHostNetCache: the cached listing of the host's addresses and routes
// sees every change not Pontoon's at the next use (an address and a route
// added just before it), keeps the listing across changes of Pontoon's
// own bridges, and drops a removed network's bridge from it.
func TestHostNetCache(t *testing.T) {
	testenv.RequirePrivileges(t)
	ns := testenv.NewNetns(t, "pphn"+testenv.UniqueID(t))
	ns.IP(t, "link", "add", "other", "type", "veth", "peer", "name", "other-peer")
	ns.IP(t, "link", "set", "other", "up")
	ns.IP(t, "link", "add", "pb-own", "type", "bridge")
	ns.IP(t, "addr", "add", "10.50.0.1/24", "dev", "pb-own")
	ns.IP(t, "link", "set", "pb-own", "up")

	has := func(raw *rawHostNet, prefix string) bool {
		for _, a := range raw.addrs {
			if a.prefix.String() == prefix {
				return true
			}
		}
		for _, r := range raw.routes {
			if r.dst.String() == prefix {
				return true
			}
		}
		return false
	}
	own := func() map[string]bool { return map[string]bool{"pb-own": true, "pb-new": true} }
	var c *hostNetCache
	step := func(what string, fn func() error) {
		t.Helper()
		if err := inNetns(ns, fn); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("open", func() error {
		if c = newHostNetCache(); c == nil {
			return fmt.Errorf("no cache: cannot join the netlink announcements")
		}
		return nil
	})
	defer c.close()

	var first *rawHostNet
	step("first listing", func() (err error) { first, err = c.get(own()); return err })
	if !has(first, "10.50.0.1/24") {
		t.Fatalf("first listing lacks the bridge's address: %+v", first.addrs)
	}

	ns.IP(t, "addr", "add", "10.60.0.1/24", "dev", "other")
	ns.IP(t, "route", "add", "10.70.0.0/16", "dev", "other")
	var second *rawHostNet
	step("after a foreign change", func() (err error) { second, err = c.get(own()); return err })
	if !has(second, "10.60.0.1/24") || !has(second, "10.70.0.0/16") {
		t.Errorf("an address and a route added before the use are missing: %+v %+v", second.addrs, second.routes)
	}

	// Pontoon's own bridges come and go without a new listing.
	ns.IP(t, "link", "add", "pb-new", "type", "bridge")
	ns.IP(t, "addr", "add", "10.80.0.1/24", "dev", "pb-new")
	ns.IP(t, "link", "set", "pb-new", "up")
	var third *rawHostNet
	step("after an own change", func() (err error) { third, err = c.get(own()); return err })
	if third != second {
		t.Errorf("a change of an own bridge listed the host again")
	}

	ns.IP(t, "link", "del", "pb-own")
	var fourth *rawHostNet
	step("forget", func() (err error) {
		c.forget("pb-own", false)
		fourth, err = c.get(map[string]bool{"pb-new": true})
		return err
	})
	if has(fourth, "10.50.0.1/24") || has(fourth, "10.50.0.0/24") {
		t.Errorf("a removed network's bridge is still listed: %+v", fourth.addrs)
	}
	if !has(fourth, "10.60.0.1/24") {
		t.Errorf("forgetting a bridge dropped the host's own address: %+v", fourth.addrs)
	}

	// A foreign interface going takes its addresses along.
	ns.IP(t, "link", "del", "other")
	var fifth *rawHostNet
	step("after a foreign interface went", func() (err error) { fifth, err = c.get(map[string]bool{"pb-new": true}); return err })
	if has(fifth, "10.60.0.1/24") || has(fifth, "10.70.0.0/16") {
		t.Errorf("a deleted interface's address or route is still listed: %+v %+v", fifth.addrs, fifth.routes)
	}
}

// inNetns runs fn on a thread inside ns and puts the thread back where it
// was. testenv's Do leaves its thread in ns for good, which wedges the
// process's main thread there when Do's goroutine lands on it, and
// /proc/self/ns/net then names ns for every later test of the package.
func inNetns(ns *testenv.Netns, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return // the thread dies locked
		}
		defer unix.Close(back)
		fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter %s: %w", ns.Path(), err)
			return
		}
		err = fn()
		if unix.Setns(back, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
