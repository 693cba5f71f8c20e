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
