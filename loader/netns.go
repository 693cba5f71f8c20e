package loader

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// NetnsCookie identifies the calling thread's network namespace the way
// bpf_get_netns_cookie() does inside the socket hooks, which only translate
// loopback destinations for sockets of that namespace.
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open socket for netns cookie: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("read netns cookie (needs kernel >= 5.14): %w", err)
	}
	return cookie, nil
}
