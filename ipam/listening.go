package ipam

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// hostSockets maps a port to the local addresses host sockets hold it on,
// for one protocol.
type hostSockets map[uint16][]netip.Addr

// tcpListen is TCP_LISTEN as /proc/net/tcp prints it.
const tcpListen = "0A"

// defaultProcNet is where the listening check reads when tests have not
// pointed it at fixtures.
const defaultProcNet = "/proc/net"

// sockets reads the host's sockets of one protocol once: with sock_diag
// where the kernel has it for the protocol, else from /proc.
func (a *Allocator) sockets(proto Proto) (hostSockets, error) {
	if a.procNet == defaultProcNet {
		h, err := diagHostSockets(proto)
		if !errors.Is(err, errNoSockDiag) {
			return h, err
		}
	}
	return readHostSockets(a.procNet, proto)
}

// readHostSockets reads the sockets of the process's network namespace
// from procNet (normally /proc/net). TCP counts listeners only; UDP counts
// every bound socket, since an inbound datagram to it would be taken away;
// SCTP counts endpoints. A missing file (no IPv6, no sctp module) means no
// sockets of that kind.
func readHostSockets(procNet string, proto Proto) (hostSockets, error) {
	h := make(hostSockets)
	add := func(ap netip.AddrPort) {
		h[ap.Port()] = append(h[ap.Port()], ap.Addr().Unmap())
	}
	var files []string
	var state string
	switch proto {
	case TCP:
		files, state = []string{"tcp", "tcp6"}, tcpListen
	case UDP:
		files = []string{"udp", "udp6"}
	case SCTP:
		files = []string{"sctp/eps"}
	}
	for _, name := range files {
		f, err := os.Open(filepath.Join(procNet, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if proto == SCTP {
			err = parseSCTPEndpoints(f, add)
		} else {
			err = parseProcNet(f, state, add)
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
	return h, nil
}

// parseProcNet reads the /proc/net/{tcp,udp}{,6} table, keeping sockets in
// state (all when state is "").
func parseProcNet(r io.Reader, state string, add func(netip.AddrPort)) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			return fmt.Errorf("line %q: too few fields", sc.Text())
		}
		if state != "" && f[3] != state {
			continue
		}
		ap, err := parseHexAddrPort(f[1])
		if err != nil {
			return fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		add(ap)
	}
	return sc.Err()
}

// parseHexAddrPort reads "0100007F:0035": the address as the kernel's
// 32-bit words printed in host byte order, the port as a number.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(hexAddr)
	if !ok || err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: malformed", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port in %q: malformed", s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// parseSCTPEndpoints reads /proc/net/sctp/eps: eight fixed columns (the
// sixth is the port), then the bound addresses.
func parseSCTPEndpoints(r io.Reader, add func(netip.AddrPort)) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 {
			continue
		}
		port, err := strconv.ParseUint(f[5], 10, 16)
		if err != nil {
			return fmt.Errorf("line %q: port: malformed", sc.Text())
		}
		for _, s := range f[8:] {
			if a, err := netip.ParseAddr(s); err == nil {
				add(netip.AddrPortFrom(a, uint16(port)))
			}
		}
	}
	return sc.Err()
}

// blocks returns the first port in [first, last] a host socket holds where
// a binding on hostIP would take its traffic, and that socket.
func (h hostSockets) blocks(hostIP netip.Addr, first, last uint32) (uint16, netip.AddrPort, bool) {
	if len(h) == 0 {
		return 0, netip.AddrPort{}, false
	}
	best, found := netip.AddrPort{}, false
	check := func(p uint16) {
		for _, l := range h[p] {
			if shadows(hostIP, l) && (!found || p < best.Port()) {
				best, found = netip.AddrPortFrom(l, p), true
			}
		}
	}
	// Walk whichever is shorter: the range or the socket list.
	if int(last-first) < len(h) {
		for p := first; p <= last && !found; p++ {
			check(uint16(p))
		}
	} else {
		for p := range h {
			if uint32(p) >= first && uint32(p) <= last {
				check(p)
			}
		}
	}
	return best.Port(), best, found
}

// shadows reports whether a binding on hostIP takes traffic meant for a
// socket bound to l.
func shadows(hostIP, l netip.Addr) bool {
	if hostIP.Is4() == l.Is4() {
		return hostIP.IsUnspecified() || l.IsUnspecified() || hostIP == l
	}
	// A [::] socket without IPV6_V6ONLY takes IPv4 too, and /proc does not
	// say which kind it is; assume it does.
	return hostIP.Is4() && l.Is6() && l.IsUnspecified()
}
