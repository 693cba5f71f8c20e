package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reading /proc/net/tcp walks every bucket of the kernel's connection
// table, of all namespaces, to print the listeners of one: tens of
// milliseconds on an idle host. sock_diag asked for listeners only never
// looks at that table, and answers in one dump per family.

const (
	tcpListenState = 10 // TCP_LISTEN
	allStates      = 0xffffffff
	// sizeofDiagMsg is struct inet_diag_msg: family, state, timer,
	// retrans, the 48-byte inet_diag_sockid, then five u32s.
	sizeofDiagMsg = 72
	sizeofDiagReq = 56 // struct inet_diag_req_v2
)

// errNoSockDiag means the kernel cannot answer for this protocol (no
// inet_diag, or no udp_diag module): read /proc instead.
var errNoSockDiag = errors.New("sock_diag unavailable")

// diagHostSockets asks sock_diag for the sockets /proc would list: TCP
// listeners, every UDP socket. It sees the network namespace of the
// calling thread, which for the agent is its own.
func diagHostSockets(proto Proto) (hostSockets, error) {
	var states uint32
	switch proto {
	case TCP:
		states = 1 << tcpListenState
	case UDP:
		states = allStates
	default:
		return nil, errNoSockDiag
	}
	h := make(hostSockets)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpSockets(family, uint8(proto), states, func(ap netip.AddrPort) {
			h[ap.Port()] = append(h[ap.Port()], ap.Addr().Unmap())
		}); err != nil {
			if family == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				continue // no IPv6 in this kernel
			}
			return nil, err
		}
	}
	return h, nil
}

// dumpSockets runs one SOCK_DIAG_BY_FAMILY dump and calls add with each
// socket's local address. An interrupted dump (the table changed under
// it) is run again.
func dumpSockets(family, proto uint8, states uint32, add func(netip.AddrPort)) error {
	for try := 0; ; try++ {
		err := dumpOnce(family, proto, states, add)
		if errors.Is(err, errDumpInterrupted) && try < 3 {
			continue
		}
		return err
	}
}

var errDumpInterrupted = errors.New("sock_diag dump interrupted")

// diagBufs holds reply buffers for dumps. Every publish dumps the host's
// sockets, both families, and a buffer made per dump was 128 KiB of
// garbage per publish: about half of a one-port publish's, and so of the
// collections that scan a heap of 60,000 mappings.
var diagBufs = sync.Pool{New: func() any {
	b := make([]byte, 64<<10)
	return &b
}}

func dumpOnce(family, proto uint8, states uint32, add func(netip.AddrPort)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("%w: open netlink socket: %w", errNoSockDiag, err)
	}
	defer unix.Close(fd)

	req := make([]byte, unix.SizeofNlMsghdr+sizeofDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence
	body := req[unix.SizeofNlMsghdr:]
	body[0], body[1] = family, proto
	ne.PutUint32(body[4:], states)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send sock_diag request: %w", err)
	}

	bp := diagBufs.Get().(*[]byte)
	defer diagBufs.Put(bp)
	buf := *bp
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("read sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parse sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if interrupted {
					return errDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("sock_diag error reply: truncated")
				}
				errno := syscall.Errno(-int32(ne.Uint32(m.Data)))
				if errno == 0 {
					continue
				}
				// ENOENT: no handler for the protocol (udp_diag not
				// loaded); EINVAL and EOPNOTSUPP: an older kernel.
				if errno == unix.ENOENT || errno == unix.EINVAL || errno == unix.EOPNOTSUPP || errno == unix.EPROTONOSUPPORT {
					return fmt.Errorf("%w: %w", errNoSockDiag, os.NewSyscallError("sock_diag", errno))
				}
				return os.NewSyscallError("sock_diag", errno)
			}
			if len(m.Data) < sizeofDiagMsg {
				return fmt.Errorf("sock_diag message of %d bytes: want %d", len(m.Data), sizeofDiagMsg)
			}
			ap, ok := diagLocalAddr(m.Data)
			if ok {
				add(ap)
			}
		}
	}
}

// diagLocalAddr reads the local address of an inet_diag_msg: the port
// at offset 4 and the address at 8, both in network byte order.
func diagLocalAddr(msg []byte) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16(msg[4:])
	var addr netip.Addr
	switch msg[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(msg[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(msg[8:24]))
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, port), true
}
