package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

// The load tool: one server process per container and one client process
// per measurement, both this binary. Every client loop ends at its
// deadline; every blocking call has a timeout.

const (
	// msgSize is the request and the response of the request/response
	// and connect measures: a small RPC.
	msgSize    = 64
	streamBuf  = 128 << 10
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

// serve runs the container's servers until it is signalled.
func serve(tcpEcho, tcpSink, udpEcho string, readyFD int) error {
	echo, err := net.Listen("tcp4", tcpEcho)
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", tcpEcho, err)
	}
	sink, err := net.Listen("tcp4", tcpSink)
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", tcpSink, err)
	}
	udp, err := net.ListenPacket("udp4", udpEcho)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", udpEcho, err)
	}
	go acceptLoop(echo, serveEcho)
	go acceptLoop(sink, serveSink)
	go serveUDP(udp)
	signalReady(readyFD)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and friends pass; a closed listener ends the loop.
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go handle(c)
	}
}

// serveEcho answers every msgSize request with itself until EOF.
func serveEcho(c net.Conn) {
	defer c.Close()
	buf := make([]byte, msgSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// serveSink reads until the client half-closes, then tells it how many
// bytes arrived: the stream rate is what reached the container.
func serveSink(c net.Conn) {
	defer c.Close()
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, streamBuf))
	if err != nil {
		return
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	c.Write(b[:])
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pc.WriteTo(buf[:n], peer)
	}
}

// runClient runs one measure against addr for d.
func runClient(kind, addr string, d time.Duration) (loadResult, error) {
	switch kind {
	case "stream":
		return clientStream(addr, d)
	case "rr":
		return clientRR(addr, d)
	case "crr":
		return clientCRR(addr, d)
	case "udp-rr":
		return clientUDPRR(addr, d)
	}
	return loadResult{}, fmt.Errorf("unknown measure %q: use stream, rr, crr or udp-rr", kind)
}

func dialTCP(addr string) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp4", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func clientStream(addr string, d time.Duration) (loadResult, error) {
	c, err := dialTCP(addr)
	if err != nil {
		return loadResult{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	buf := make([]byte, streamBuf)
	start := time.Now()
	end := start.Add(d)
	c.SetDeadline(end.Add(ioTimeout))
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return loadResult{}, fmt.Errorf("write to %s: %w", addr, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return loadResult{}, fmt.Errorf("half-close %s: %w", addr, err)
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return loadResult{}, fmt.Errorf("read byte count from %s: %w", addr, err)
	}
	n := int64(binary.BigEndian.Uint64(b[:]))
	return loadResult{Bytes: n, Seconds: time.Since(start).Seconds()}, nil
}

// clientRR is one connection, one request in flight (netperf's TCP_RR).
func clientRR(addr string, d time.Duration) (loadResult, error) {
	c, err := dialTCP(addr)
	if err != nil {
		return loadResult{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	buf := make([]byte, msgSize)
	once := func() error {
		if _, err := c.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(c, buf)
		return err
	}
	c.SetDeadline(time.Now().Add(d + 2*ioTimeout))
	for range 100 { // warm caches and the path
		if err := once(); err != nil {
			return loadResult{}, fmt.Errorf("request to %s: %w", addr, err)
		}
	}
	lat := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	end := start.Add(d)
	for t0 := start; t0.Before(end); {
		if err := once(); err != nil {
			return loadResult{}, fmt.Errorf("request to %s: %w", addr, err)
		}
		t1 := time.Now()
		lat = append(lat, t1.Sub(t0))
		t0 = t1
	}
	return latencyResult(lat, time.Since(start), 0), nil
}

// clientCRR opens a connection per request and closes it after the
// answer (netperf's TCP_CRR): what a short-lived HTTP client does.
func clientCRR(addr string, d time.Duration) (loadResult, error) {
	buf := make([]byte, msgSize)
	once := func() error {
		c, err := dialTCP(addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(buf); err != nil {
			return err
		}
		_, err = io.ReadFull(c, buf)
		return err
	}
	for range 10 {
		if err := once(); err != nil {
			return loadResult{}, fmt.Errorf("connect-request-close to %s: %w", addr, err)
		}
	}
	lat := make([]time.Duration, 0, 1<<15)
	var failures int64
	start := time.Now()
	end := start.Add(d)
	for t0 := start; t0.Before(end); {
		err := once()
		t1 := time.Now()
		if err != nil {
			if failures++; failures > maxFailures {
				return loadResult{}, fmt.Errorf("connect-request-close to %s: %d failures, last: %w", addr, failures, err)
			}
		} else {
			lat = append(lat, t1.Sub(t0))
		}
		t0 = t1
	}
	return latencyResult(lat, time.Since(start), failures), nil
}

// clientUDPRR is request/response over a connected UDP socket; a lost
// datagram costs udpTimeout and is counted.
func clientUDPRR(addr string, d time.Duration) (loadResult, error) {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return loadResult{}, fmt.Errorf("dial udp %s: %w", addr, err)
	}
	c := conn.(*net.UDPConn)
	defer c.Close()
	buf := make([]byte, msgSize)
	rbuf := make([]byte, 2048)
	once := func() error {
		if _, err := c.Write(buf); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(udpTimeout))
		n, err := c.Read(rbuf)
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
	lat := make([]time.Duration, 0, 1<<16)
	var lost int64
	start := time.Now()
	end := start.Add(d)
	for t0 := start; t0.Before(end); {
		err := once()
		t1 := time.Now()
		if err != nil {
			if lost++; lost > maxFailures {
				return loadResult{}, fmt.Errorf("udp request to %s: %d lost, last: %w", addr, lost, err)
			}
		} else {
			lat = append(lat, t1.Sub(t0))
		}
		t0 = t1
	}
	return latencyResult(lat, time.Since(start), lost), nil
}

func latencyResult(lat []time.Duration, elapsed time.Duration, lost int64) loadResult {
	slices.Sort(lat)
	r := loadResult{Ops: int64(len(lat)), Seconds: elapsed.Seconds(), Lost: lost}
	if len(lat) > 0 {
		r.P50us = float64(lat[len(lat)*50/100]) / 1e3
		r.P99us = float64(lat[len(lat)*99/100]) / 1e3
	}
	return r
}
