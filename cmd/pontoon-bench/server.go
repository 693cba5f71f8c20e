package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// The load tool's server: what runs in every container. It is the same
// for every datapath, so its own cost cancels out of the ratios.

const (
	// msgSize is the request and the response of the request/response
	// and connect measures: a small RPC.
	msgSize   = 64
	streamBuf = 128 << 10
)

// listeners are the addresses serve listens on; empty ones are left out.
type listeners struct {
	echo, sink, udp, bulk string
}

// serve runs the container's servers until it is signalled.
func serve(l listeners, readyFD int) error {
	for _, t := range []struct {
		addr   string
		handle func(net.Conn)
	}{{l.echo, serveEcho}, {l.sink, serveSink}, {l.bulk, serveBulk}} {
		if t.addr == "" {
			continue
		}
		// One socket per family: the IPv4 rows keep their IPv4-only
		// socket, and "tcp6" on a wildcard address is IPv6-only, so both
		// can hold the port.
		for _, network := range []string{"tcp4", "tcp6"} {
			ln, err := net.Listen(network, t.addr)
			if err != nil {
				return fmt.Errorf("listen %s %s: %w", network, t.addr, err)
			}
			go acceptLoop(ln, t.handle)
		}
	}
	if l.udp != "" {
		for _, network := range []string{"udp4", "udp6"} {
			udp, err := net.ListenPacket(network, l.udp)
			if err != nil {
				return fmt.Errorf("listen %s %s: %w", network, l.udp, err)
			}
			go serveUDP(udp)
		}
	}
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

// Bulk transfers: the client sends a header, one byte saying which way
// and eight the byte count. Upload: the client sends the bytes and the
// server answers with how many arrived. Download: the server sends them
// and closes.
const (
	bulkUpload   = 'u'
	bulkDownload = 'd'
	bulkHeader   = 9
	// bulkBuf is one read or write of a bulk transfer: a few GSO packets'
	// worth, so neither end's system calls are what is measured.
	bulkBuf = 256 << 10
)

func serveBulk(c net.Conn) {
	defer c.Close()
	var hdr [bulkHeader]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[1:]))
	buf := make([]byte, bulkBuf)
	switch hdr[0] {
	case bulkUpload:
		var got int64
		for got < n {
			k, err := c.Read(buf[:min(int64(len(buf)), n-got)])
			got += int64(k)
			if err != nil {
				break
			}
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(got))
		c.Write(b[:])
	case bulkDownload:
		for sent := int64(0); sent < n; {
			k, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
			sent += int64(k)
			if err != nil {
				return
			}
		}
	}
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
