package control

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostNetCache keeps the host's addresses and routes (rawHostNet) between
// network creates: with 1,000 networks, listing them took most of a
// create's time. It stays exact by reading, before every use, every
// address and route change the kernel announced since the last one, from
// a socket that joined those announcements before the listing; the
// kernel queues them there before the change that made them returns, so
// a route added just before a create is seen by it. A change on an
// interface of Pontoon's own (a network's bridge, whose addresses and
// routes view leaves out anyway) keeps the listing; any other change, or
// a lost announcement, drops it.
type hostNetCache struct {
	mu sync.Mutex
	fd int
	// raw is the listing; nil when it must be read again.
	raw *rawHostNet
	// names are interface names by index, from address labels and
	// lookups, to tell the owner of a route change.
	names map[int]string
	// own are the bridges of networks, by name; gone the indexes of
	// bridges removed with their network, whose last announcements
	// still arrive.
	own  map[string]bool
	gone map[int]bool
}

// hostNetRcvBuf holds the announcements of some thousands of changes
// between two uses.
const hostNetRcvBuf = 4 << 20

// newHostNetCache joins the IPv4 address and route announcements of the
// calling thread's network namespace; nil when it cannot (each use then
// lists anew).
func newHostNetCache() *hostNetCache {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, hostNetRcvBuf)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV4_ROUTE}); err != nil {
		unix.Close(fd)
		return nil
	}
	return &hostNetCache{fd: fd, names: map[int]string{}, own: map[string]bool{}, gone: map[int]bool{}}
}

func (c *hostNetCache) close() {
	if c != nil {
		unix.Close(c.fd)
	}
}

// get returns the host's addresses and routes as they are now, listing
// them only when something not Pontoon's changed since the last call.
// own names the bridges of networks as they are now.
func (c *hostNetCache) get(own map[string]bool) (*rawHostNet, error) {
	if c == nil {
		return readRawHostNet(netlink.FAMILY_V4)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.own = own
	c.drain()
	if c.raw != nil {
		return c.raw, nil
	}
	raw, err := readRawHostNet(netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	c.raw = raw
	for _, a := range raw.addrs {
		c.names[a.index] = a.link
	}
	for _, r := range raw.routes {
		if r.index != 0 {
			c.names[r.index] = r.dev
		}
	}
	return raw, nil
}

// forget takes a removed network's bridge out of the listing: its
// addresses and routes were left out while it was Pontoon's, and would
// count as the host's now. An adopted bridge stays, with whatever
// addresses it had, so the listing is read again.
func (c *hostNetCache) forget(bridge string, adopted bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drain()
	delete(c.own, bridge)
	if adopted || c.raw == nil {
		c.raw = nil
		return
	}
	for idx, name := range c.names {
		if name == bridge {
			c.gone[idx] = true
		}
	}
	c.raw.addrs = slices.DeleteFunc(slices.Clone(c.raw.addrs), func(a rawHostAddr) bool { return a.link == bridge })
	c.raw.routes = slices.DeleteFunc(slices.Clone(c.raw.routes), func(r rawHostRoute) bool { return r.dev == bridge && r.index != 0 })
}

// drain reads every announcement queued and drops the listing unless all
// of them concern Pontoon's own bridges. The caller holds c.mu.
func (c *hostNetCache) drain() {
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
			return
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			// ENOBUFS: announcements were lost.
			c.raw = nil
			if err == nil || !errors.Is(err, unix.ENOBUFS) {
				return
			}
			continue
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			c.raw = nil
			continue
		}
		for i := range msgs {
			if !c.ownChange(&msgs[i]) {
				c.raw = nil
			}
		}
	}
}

// ownChange reports whether an announcement concerns a bridge of
// Pontoon's (or one removed with its network), learning interface names
// from address labels as it goes.
func (c *hostNetCache) ownChange(m *syscall.NetlinkMessage) bool {
	var index int
	switch m.Header.Type {
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if len(m.Data) < unix.SizeofIfAddrmsg {
			return false
		}
		index = int(binary.NativeEndian.Uint32(m.Data[4:8]))
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			return false
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.IFA_LABEL {
				name, _, _ := strings.Cut(strings.TrimRight(string(a.Value), "\x00"), ":")
				c.names[index] = name
			}
		}
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			return false
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
				index = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	default:
		return true // not an address or a route
	}
	if index == 0 {
		return false
	}
	if c.gone[index] {
		return true
	}
	name, ok := c.names[index]
	if !ok {
		l, err := netlink.LinkByIndex(index)
		if err != nil {
			return false
		}
		name = l.Attrs().Name
		c.names[index] = name
	}
	return c.own[name]
}
