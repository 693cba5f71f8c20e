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
}

// runClient runs one measure against addr for d.
func runClient(kind, addr string, d time.Duration) (loadResult, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return loadResult{}, fmt.Errorf("address %q: want IPv4 address:port", addr)
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
	}
	return loadResult{}, fmt.Errorf("unknown measure %q: use stream, rr, crr or udp-rr", kind)
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
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
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
	sa := &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
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
