package bpf_test

import (
	"bytes"
	"net"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestDNATOnlyOpensNewFlows: a published port that is also the source port
// of one of the host's own connections must not steal that connection's
// replies. Only a SYN (TCP) opens a translated flow, and a datagram that a
// local UDP socket claims (UDP) stays with it.
func TestDNATOnlyOpensNewFlows(t *testing.T) {
	o := loadObjects(t)
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 1); err != nil {
		t.Fatal(err)
	}

	t.Run("tcp ack without a flow is the host's", func(t *testing.T) {
		if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
			t.Fatal(err)
		}
		for _, flags := range []tcpFlags{ack, syn | ack, fin | ack, rst} {
			in := tcpFrame(t, clientPort, tcpWeb.Host, flags)
			ret, out := run(t, o.UplinkIngress, in)
			if ret != actUnspec || !bytes.Equal(out[:len(in)], in) {
				t.Errorf("flags %#x: returned %#x and changed the packet; a reply to the host must pass untouched", flags, ret)
			}
		}
		in := tcpFrame(t, clientPort, tcpWeb.Host, syn)
		if _, out := run(t, o.UplinkIngress, in); bytes.Equal(out[:len(in)], in) {
			t.Fatal("a SYN to the published port was not translated")
		}
	})

	t.Run("udp a local socket claims is the host's", func(t *testing.T) {
		// BPF_PROG_TEST_RUN looks sockets up in this test's namespace.
		sock, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			t.Fatal(err)
		}
		defer sock.Close()
		port := uint16(sock.LocalAddr().(*net.UDPAddr).Port)
		b := maps.Binding{Proto: maps.UDP, Host: ap(hostIP, port), Backend: ap(backend, 53), ID: 11}
		if err := maps.NewBindings(o.Bindings).Put(b); err != nil {
			t.Fatal(err)
		}
		in := udpFrame(t, clientPort, b.Host)
		ret, out := run(t, o.UplinkIngress, in)
		if ret != actUnspec || !bytes.Equal(out[:len(in)], in) {
			t.Fatalf("returned %#x and changed a datagram a local socket owns", ret)
		}
		sock.Close()
		if _, out := run(t, o.UplinkIngress, in); bytes.Equal(out[:len(in)], in) {
			t.Fatal("with the socket closed, the datagram was not translated")
		}

		// The socket table is asked only when no flow matches: a tracked
		// flow keeps its datagrams, whoever binds the port after.
		again, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if _, out := run(t, o.UplinkIngress, in); bytes.Equal(out[:len(in)], in) {
			t.Fatal("a datagram of a tracked flow was left to a socket bound after the flow began")
		}
	})
}
