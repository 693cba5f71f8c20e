package testenv

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// The bulk machinery on loopback, no privileges needed: what passes, and
// that what a broken path does to a stream is caught and described.
func TestBulkTransferChecksEveryByte(t *testing.T) {
	const size = 3<<20 + 12345 // past the pattern's length, not a multiple of anything
	serve := func(t *testing.T, handle func(net.Conn)) string {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				handle(c)
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			<-done
		})
		return ln.Addr().String()
	}
	transfer := func(dir Direction, addr string) error {
		_, err := Transfer{Dir: dir, Addr: addr, Seed: 7, Size: size, Deadline: 10 * time.Second}.run()
		return err
	}
	// sendAltered is a server that answers downloads with the stream
	// spoilt by alter.
	sendAltered := func(alter func([]byte) []byte) func(net.Conn) {
		return func(c net.Conn) {
			defer c.Close()
			io.ReadFull(c, make([]byte, bulkHeaderLen))
			b := make([]byte, size)
			newStream(7).read(b)
			c.Write(alter(b))
		}
	}

	t.Run("intact both ways", func(t *testing.T) {
		addr := serve(t, serveBulk)
		for _, dir := range []Direction{Upload, Download} {
			if err := transfer(dir, addr); err != nil {
				t.Errorf("%s: %v", dir, err)
			}
		}
	})
	for _, c := range []struct {
		name  string
		alter func([]byte) []byte
		want  string
	}{
		{"a flipped byte", func(b []byte) []byte { b[1<<20+99] ^= 1; return b }, "differing from what was sent from byte 1048675 on"},
		{"a lost byte", func(b []byte) []byte { return append(b[:2000:2000], b[2001:]...) }, "from byte 2000 on"},
		{"a short stream", func(b []byte) []byte { return b[:size-1] }, fmt.Sprintf("received %d bytes, %d were sent", size-1, size)},
		{"one byte too many", func([]byte) []byte {
			b := make([]byte, size+1) // the stream goes on
			newStream(7).read(b)
			return b
		}, fmt.Sprintf("received %d bytes, %d were sent", size+1, size)},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := transfer(Download, serve(t, sendAltered(c.alter)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
	t.Run("a stall", func(t *testing.T) {
		stall := func(c net.Conn) {
			io.ReadFull(c, make([]byte, bulkHeaderLen))
			b := make([]byte, 1000)
			newStream(7).read(b)
			c.Write(b)
			time.Sleep(2 * time.Second)
			c.Close()
		}
		_, err := Transfer{Dir: Download, Addr: serve(t, stall), Seed: 7, Size: size, Deadline: time.Second}.run()
		if want := fmt.Sprintf("received 1000 of %d bytes in 1", size); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "i/o timeout") {
			t.Fatalf("got %v, want an error saying %q and i/o timeout", err, want)
		}
	})
}
