package testenv

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func init() { helpers["bind"] = bindHelper }

// Bind is one bind(2) to try: Network is tcp4, udp4, tcp6 or udp6. An
// IPv6 socket is dual-stack (IPV6_V6ONLY off), as most servers open it.
type Bind struct {
	Network string
	Addr    netip.AddrPort
}

func (b Bind) String() string { return b.Network + " " + b.Addr.String() }

// BindFrom tries each bind in a helper process inside the namespace and
// cgroup (where the socket hooks see it), closing each socket again at
// once. It returns, in order, nil for a bind that succeeded and the errno
// for one that failed.
func (n *Netns) BindFrom(t testing.TB, cgroup string, binds ...Bind) []error {
	t.Helper()
	args := make([]string, 0, 2*len(binds))
	for _, b := range binds {
		args = append(args, b.Network, b.Addr.String())
	}
	var errnos []int
	if err := n.Helper(t, cgroup, &errnos, "bind", args...); err != nil {
		t.Fatal(err)
	}
	if len(errnos) != len(binds) {
		t.Fatalf("bind helper answered %d binds of %d", len(errnos), len(binds))
	}
	out := make([]error, len(binds))
	for i, e := range errnos {
		if e != 0 {
			out[i] = unix.Errno(e)
		}
	}
	return out
}

func bindHelper(args []string) (any, error) {
	if len(args)%2 != 0 {
		return nil, errors.New("bind wants pairs of network and address")
	}
	var errnos []int
	for i := 0; i < len(args); i += 2 {
		addr, err := netip.ParseAddrPort(args[i+1])
		if err != nil {
			return nil, err
		}
		errno, err := bindOnce(args[i], addr)
		if err != nil {
			return nil, err
		}
		errnos = append(errnos, int(errno))
	}
	return errnos, nil
}

// bindOnce returns bind's errno (0: it succeeded), or an error when the
// socket could not be set up for it.
func bindOnce(network string, addr netip.AddrPort) (unix.Errno, error) {
	var family, typ int
	switch network {
	case "tcp4", "udp4":
		family = unix.AF_INET
	case "tcp6", "udp6":
		family = unix.AF_INET6
	default:
		return 0, fmt.Errorf("unknown network %q", network)
	}
	typ = unix.SOCK_STREAM
	if network[:3] == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s socket: %w", network, err)
	}
	defer unix.Close(fd)
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		if !addr.Addr().Is4() {
			return 0, fmt.Errorf("%s is no IPv4 address", addr)
		}
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	} else {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return 0, fmt.Errorf("make the socket dual-stack: %w", err)
		}
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	err = unix.Bind(fd, sa)
	if errno, ok := err.(unix.Errno); ok {
		return errno, nil
	}
	return 0, err
}
