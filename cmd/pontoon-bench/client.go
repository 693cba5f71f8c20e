package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// The load tool's client: one measure per process, one flow, one request
// in flight. It uses blocking system calls rather than Go's network
// poller, so the client's own cost per operation is a few syscalls and
// the datapath's share of each round trip shows. Every loop ends at its
// deadline and every call has a timeout.

const (
	ioTimeout  = 2 * time.Second
	udpTimeout = 200 * time.Millisecond
	// maxFailures ends a run whose path is broken instead of letting it
	// report a rate made of timeouts.
	maxFailures = 20
)

// loadResult is what one client run measured.
type loadResult struct {
	Ops     int64   `json:"ops"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	P50us   float64 `json:"p50_us,omitempty"`
	P99us   float64 `json:"p99_us,omitempty"`
	Lost    int64   `json:"lost,omitempty"`
	// Stalled: a bulk transfer hit its time bound; Bytes is what got
	// through until then.
	Stalled bool `json:"stalled,omitempty"`
}

// runClient runs one measure against addr for d; a bulk transfer moves
// size bytes within d.
func runClient(kind, addr string, d time.Duration, size int64) (loadResult, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
		return loadResult{}, fmt.Errorf("address %q: want IPv4 address:port or [IPv6 address]:port", addr)
	}
	switch kind {
	case "stream":
		return clientStream(ap, d)
	case "rr":
		return clientRR(ap, d)
	case "crr":
		return clientCRR(ap, d)
	case "udp-rr":
		return clientUDPRR(ap, d)
	case "bulk-upload":
		return clientBulk(ap, bulkUpload, size, d)
	case "bulk-download":
		return clientBulk(ap, bulkDownload, size, d)
	}
	return loadResult{}, fmt.Errorf("unknown measure %q: use stream, rr, crr, udp-rr, bulk-upload or bulk-download", kind)
}

func clientStream(addr netip.AddrPort, d time.Duration) (loadResult, error) {
	s, err := dial(unix.SOCK_STREAM, addr, ioTimeout)
	if err != nil {
		return loadResult{}, err
	}
	defer s.close()
	buf := make([]byte, streamBuf)
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		if err := s.writeAll(buf); err != nil {
			return loadResult{}, fmt.Errorf("write to %s: %w", addr, err)
		}
	}
	if err := unix.Shutdown(s.fd, unix.SHUT_WR); err != nil {
		return loadResult{}, fmt.Errorf("half-close %s: %w", addr, err)
	}
	var b [8]byte
	if err := s.readFull(b[:]); err != nil {
		return loadResult{}, fmt.Errorf("read byte count from %s: %w", addr, err)
	}
	n := int64(binary.BigEndian.Uint64(b[:]))
	return loadResult{Bytes: n, Seconds: time.Since(start).Seconds()}, nil
}

// bulkWait is the longest one system call of a bulk transfer blocks, so a
// stalled transfer ends soon after its bound.
const bulkWait = 500 * time.Millisecond

// clientBulk moves n bytes to (upload) or from (download) the bulk server
// at addr. The time runs from connect to the last byte read or, for an
// upload, to the server's count of what arrived: the rate is what reached
// the far end. A transfer still going at limit is cut off with a reset
// and reported as stalled, with what got through until then.
func clientBulk(addr netip.AddrPort, op byte, n int64, limit time.Duration) (loadResult, error) {
	start := time.Now()
	deadline := start.Add(limit)
	s, err := dial(unix.SOCK_STREAM, addr, ioTimeout)
	if err != nil {
		return loadResult{}, err
	}
	defer s.close()
	tv := unix.NsecToTimeval(bulkWait.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return loadResult{}, fmt.Errorf("set socket timeout: %w", err)
		}
	}
	stalled := func(moved int64) (loadResult, error) {
		// Reset rather than close: queued data must not keep flowing.
		unix.SetsockoptLinger(s.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		return loadResult{Bytes: moved, Seconds: time.Since(start).Seconds(), Stalled: true}, nil
	}
	var hdr [bulkHeader]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if err := s.writeAll(hdr[:]); err != nil {
		return loadResult{}, fmt.Errorf("send bulk header to %s: %w", addr, err)
	}
	buf := make([]byte, bulkBuf)

	if op == bulkDownload {
		var got int64
		for got < n {
			if time.Now().After(deadline) {
				return stalled(got)
			}
			k, err := s.read(buf[:min(int64(len(buf)), n-got)])
			if errors.Is(err, unix.ETIMEDOUT) {
				continue
			}
			if err != nil {
				return loadResult{}, fmt.Errorf("download from %s after %d of %d bytes: %w", addr, got, n, err)
			}
			if k == 0 {
				return loadResult{}, fmt.Errorf("download from %s: closed after %d of %d bytes", addr, got, n)
			}
			got += int64(k)
		}
		return loadResult{Bytes: got, Seconds: time.Since(start).Seconds()}, nil
	}

	// inFlight is what was written but not yet acknowledged.
	inFlight := func() int64 {
		q, err := unix.IoctlGetInt(s.fd, unix.SIOCOUTQ)
		if err != nil {
			return 0
		}
		return int64(q)
	}
	var sent int64
	for sent < n {
		if time.Now().After(deadline) {
			return stalled(sent - inFlight())
		}
		k, err := unix.Write(s.fd, buf[:min(int64(len(buf)), n-sent)])
		if k > 0 {
			sent += int64(k)
		}
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return loadResult{}, fmt.Errorf("upload to %s after %d of %d bytes: %w", addr, sent, n, err)
		}
	}
	var b [8]byte
	for got := 0; got < len(b); {
		if time.Now().After(deadline) {
			return stalled(n - inFlight())
		}
		k, err := s.read(b[got:])
		if errors.Is(err, unix.ETIMEDOUT) {
			continue
		}
		if err != nil {
			return loadResult{}, fmt.Errorf("read byte count from %s: %w", addr, err)
		}
		if k == 0 {
			return loadResult{}, fmt.Errorf("upload to %s: closed before the byte count", addr)
		}
		got += k
	}
	if arrived := int64(binary.BigEndian.Uint64(b[:])); arrived != n {
		return loadResult{}, fmt.Errorf("upload to %s: %d of %d bytes arrived", addr, arrived, n)
	}
	return loadResult{Bytes: n, Seconds: time.Since(start).Seconds()}, nil
}

// clientRR is netperf's TCP_RR: one connection, request, answer, repeat.
func clientRR(addr netip.AddrPort, d time.Duration) (loadResult, error) {
	s, err := dial(unix.SOCK_STREAM, addr, ioTimeout)
	if err != nil {
		return loadResult{}, err
	}
	defer s.close()
	buf := make([]byte, msgSize)
	once := func() error {
		if err := s.writeAll(buf); err != nil {
			return err
		}
		return s.readFull(buf)
	}
	for range 100 { // warm caches and the path
		if err := once(); err != nil {
			return loadResult{}, fmt.Errorf("request to %s: %w", addr, err)
		}
	}
	return timed(d, 0, func() error {
		if err := once(); err != nil {
			return fmt.Errorf("request to %s: %w", addr, err)
		}
		return nil
	}, false)
}

// clientCRR is netperf's TCP_CRR: connect, request, answer, close; what a
// short-lived HTTP client does.
func clientCRR(addr netip.AddrPort, d time.Duration) (loadResult, error) {
	buf := make([]byte, msgSize)
	once := func() error {
		s, err := dial(unix.SOCK_STREAM, addr, ioTimeout)
		if err != nil {
			return err
		}
		defer s.close()
		if err := s.writeAll(buf); err != nil {
			return err
		}
		return s.readFull(buf)
	}
	for range 10 {
		if err := once(); err != nil {
			return loadResult{}, fmt.Errorf("connect-request-close to %s: %w", addr, err)
		}
	}
	return timed(d, maxFailures, func() error {
		if err := once(); err != nil {
			return fmt.Errorf("connect-request-close to %s: %w", addr, err)
		}
		return nil
	}, true)
}

// clientUDPRR is request/response over a connected UDP socket; a lost
// datagram costs udpTimeout and is counted.
func clientUDPRR(addr netip.AddrPort, d time.Duration) (loadResult, error) {
	s, err := dial(unix.SOCK_DGRAM, addr, udpTimeout)
	if err != nil {
		return loadResult{}, err
	}
	defer s.close()
	buf := make([]byte, msgSize)
	rbuf := make([]byte, 2048)
	once := func() error {
		if err := s.writeAll(buf); err != nil {
			return err
		}
		n, err := s.read(rbuf)
		if err == nil && n != msgSize {
			err = fmt.Errorf("answer of %d bytes, want %d", n, msgSize)
		}
		return err
	}
	for range 100 {
		if err := once(); err != nil {
			return loadResult{}, fmt.Errorf("udp request to %s: %w", addr, err)
		}
	}
	return timed(d, maxFailures, func() error {
		if err := once(); err != nil {
			return fmt.Errorf("udp request to %s: %w", addr, err)
		}
		return nil
	}, true)
}

// timed repeats op until d has passed and records each success's latency.
// Failures (a lost datagram, a refused connection) are counted, and end
// the run once there are more than maxFail.
func timed(d time.Duration, maxFail int64, op func() error, tolerate bool) (loadResult, error) {
	lat := make([]time.Duration, 0, 1<<16)
	var failures int64
	start := time.Now()
	end := start.Add(d)
	for t0 := start; t0.Before(end); {
		err := op()
		t1 := time.Now()
		if err != nil {
			if failures++; !tolerate || failures > maxFail {
				return loadResult{}, fmt.Errorf("%d failures, last: %w", failures, err)
			}
		} else {
			lat = append(lat, t1.Sub(t0))
		}
		t0 = t1
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := loadResult{Ops: int64(len(lat)), Seconds: elapsed.Seconds(), Lost: failures}
	if len(lat) > 0 {
		r.P50us = float64(lat[len(lat)*50/100]) / 1e3
		r.P99us = float64(lat[len(lat)*99/100]) / 1e3
	}
	return r, nil
}

// sock is a blocking socket with send and receive timeouts.
type sock struct{ fd int }

func dial(typ int, addr netip.AddrPort, timeout time.Duration) (*sock, error) {
	var family int
	var sa unix.Sockaddr
	if addr.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	} else {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	s := &sock{fd: fd}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			s.close()
			return nil, fmt.Errorf("set socket timeout: %w", err)
		}
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			s.close()
			return nil, fmt.Errorf("set TCP_NODELAY: %w", err)
		}
	}
	if err := s.connect(sa, timeout); err != nil {
		s.close()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return s, nil
}

// connect copes with a signal arriving mid-connect: with a send timeout
// set the kernel does not restart the call, the handshake goes on, and
// poll says when it is over.
func (s *sock) connect(sa unix.Sockaddr, timeout time.Duration) error {
	err := unix.Connect(s.fd, sa)
	if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		soErr, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

func (s *sock) close() { unix.Close(s.fd) }

func (s *sock) writeAll(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(s.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// read returns one read's worth; EAGAIN is the receive timeout.
func (s *sock) read(b []byte) (int, error) {
	for {
		n, err := unix.Read(s.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return 0, unix.ETIMEDOUT
		}
		return n, err
	}
}

func (s *sock) readFull(b []byte) error {
	for len(b) > 0 {
		n, err := s.read(b)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("connection closed with %d bytes to go", len(b))
		}
		b = b[n:]
	}
	return nil
}
