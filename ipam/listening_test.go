package ipam

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// procHex writes an address the way /proc/net/tcp does: each 32-bit word
// of the address as the host reads it, in hex.
func procHex(ap netip.AddrPort) string {
	raw := ap.Addr().AsSlice()
	var b strings.Builder
	for i := 0; i < len(raw); i += 4 {
		fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(raw[i:]))
	}
	return fmt.Sprintf("%s:%04X", b.String(), ap.Port())
}

// fakeProcNet writes a /proc/net look-alike and returns its directory.
func fakeProcNet(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	row := func(i int, local, state string) string {
		remote := "0.0.0.0:0"
		if strings.Contains(local, "[") {
			remote = "[::]:0"
		}
		return fmt.Sprintf("%4d: %s %s %s 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n",
			i, procHex(netip.MustParseAddrPort(local)), procHex(netip.MustParseAddrPort(remote)), state, 1000+i)
	}
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	write := func(name string, rows ...string) {
		path := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(header+strings.Join(rows, "")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("tcp",
		row(0, "127.0.0.1:8080", "0A"),
		row(1, "0.0.0.0:22", "0A"),
		row(2, "127.0.0.1:50000", "01")) // an established connection, not a listener
	write("tcp6",
		row(0, "[::]:80", "0A"),
		row(1, "[::1]:5000", "0A"),
		row(2, "[::ffff:127.0.0.1]:9000", "0A"),
		row(3, "[fd00::1234]:6000", "06"))
	write("udp", row(0, "0.0.0.0:53", "07"), row(1, "10.0.0.1:123", "01"))
	write("udp6", row(0, "[fd00::1234]:5353", "07"))
	if err := os.MkdirAll(filepath.Join(dir, "sctp"), 0o755); err != nil {
		t.Fatal(err)
	}
	eps := " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n" +
		"ffff888100000000 ffff888200000000 2   10  29   3868      0 12345 10.0.0.1 fd00::1 \n"
	if err := os.WriteFile(filepath.Join(dir, "sctp", "eps"), []byte(eps), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReadHostSockets(t *testing.T) {
	dir := fakeProcNet(t)
	tests := []struct {
		proto Proto
		want  map[uint16][]string
	}{
		{TCP, map[uint16][]string{8080: {"127.0.0.1"}, 22: {"0.0.0.0"}, 80: {"::"}, 5000: {"::1"}, 9000: {"127.0.0.1"}}},
		{UDP, map[uint16][]string{53: {"0.0.0.0"}, 123: {"10.0.0.1"}, 5353: {"fd00::1234"}}},
		{SCTP, map[uint16][]string{3868: {"10.0.0.1", "fd00::1"}}},
	}
	for _, tt := range tests {
		got, err := readHostSockets(dir, tt.proto)
		if err != nil {
			t.Fatal(err)
		}
		gotS := map[uint16][]string{}
		for p, addrs := range got {
			for _, a := range addrs {
				gotS[p] = append(gotS[p], a.String())
			}
			slices.Sort(gotS[p])
		}
		if fmt.Sprint(gotS) != fmt.Sprint(tt.want) {
			t.Errorf("%s sockets = %v, want %v", tt.proto, gotS, tt.want)
		}
	}
	if got, err := readHostSockets(t.TempDir(), TCP); err != nil || len(got) != 0 {
		t.Errorf("reading an empty directory = %v, %v; want nothing and no error", got, err)
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "tcp"), []byte("header\n  0: nonsense 00000000:0000 0A\n"), 0o644)
	if _, err := readHostSockets(bad, TCP); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed table: %v, want an error saying malformed", err)
	}
}

func TestShadows(t *testing.T) {
	tests := []struct {
		host, sock string
		want       bool
	}{
		{"0.0.0.0", "127.0.0.1", true},
		{"127.0.0.1", "0.0.0.0", true},
		{"127.0.0.1", "127.0.0.1", true},
		{"192.0.2.1", "127.0.0.1", false},
		{"::", "::1", true},
		{"2001:db8::1", "::", true},
		{"2001:db8::1", "::1", false},
		{"192.0.2.1", "::", true}, // a dual-stack [::] socket takes IPv4 too
		{"::", "0.0.0.0", false},
		{"192.0.2.1", "::1", false},
	}
	for _, tt := range tests {
		if got := shadows(mustAddr(tt.host), mustAddr(tt.sock)); got != tt.want {
			t.Errorf("shadows(%s, %s) = %v, want %v", tt.host, tt.sock, got, tt.want)
		}
	}
}

func TestCheckListeningWithFixtures(t *testing.T) {
	a, err := Open(NewMemStore(), Options{DynamicPorts: PortRange{8079, 8081}, CheckListening: true})
	if err != nil {
		t.Fatal(err)
	}
	a.procNet = fakeProcNet(t)
	tests := []struct {
		ip      string
		port    uint16
		kind    error
		message string
	}{
		{"0.0.0.0", 8080, ErrInUse, "held by a host process on 127.0.0.1:8080"},
		{"127.0.0.1", 22, ErrInUse, "0.0.0.0:22"},
		{"192.0.2.1", 80, ErrInUse, "[::]:80"},
		{"192.0.2.1", 8080, nil, ""},
		{"::", 22, nil, ""},
		{"::", 5000, ErrInUse, "[::1]:5000"},
	}
	for _, tt := range tests {
		before := takeSnapshot(t, a)
		_, err := a.AllocatePorts(PortRequest{Owner: "ep", Proto: TCP, HostIP: mustAddr(tt.ip), Ports: Port(tt.port)})
		wantErr(t, err, tt.kind)
		if tt.kind != nil {
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("%s:%d: %q, want it to say %q", tt.ip, tt.port, err, tt.message)
			}
			sameSnapshot(t, before, takeSnapshot(t, a))
		}
	}
	// "Any" requests step over the listener on 8080.
	req := PortRequest{Owner: "any", Proto: TCP, HostIP: any4}
	if got := allocPorts(t, a, req).Ports; got != Port(8079) {
		t.Errorf("first any port %s, want 8079", got)
	}
	if got := allocPorts(t, a, req).Ports; got != Port(8081) {
		t.Errorf("second any port %s, want 8081 (8080 has a listener)", got)
	}
	_, err = a.AllocatePorts(req)
	wantErr(t, err, ErrExhausted)
	// Without the check, the listener does not matter.
	a.checkListening = false
	allocPorts(t, a, PortRequest{Owner: "nocheck", Proto: TCP, HostIP: any6, Ports: Port(5000)})
}

func TestCheckListeningRealSockets(t *testing.T) {
	a, err := Open(NewMemStore(), Options{DynamicPorts: testPorts, CheckListening: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on loopback here: %v", err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot bind UDP on loopback here: %v", err)
	}
	defer pc.Close()
	tcpPort := uint16(ln.Addr().(*net.TCPAddr).Port)
	udpPort := uint16(pc.LocalAddr().(*net.UDPAddr).Port)

	_, err = a.AllocatePorts(PortRequest{Owner: "ep", Proto: TCP, HostIP: any4, Ports: Port(tcpPort)})
	wantErr(t, err, ErrInUse)
	_, err = a.AllocatePorts(PortRequest{Owner: "ep", Proto: UDP, HostIP: mustAddr("127.0.0.1"), Ports: Port(udpPort)})
	wantErr(t, err, ErrInUse)
	// Another loopback address does not collide with a socket on 127.0.0.1.
	allocPorts(t, a, PortRequest{Owner: "ep", Proto: TCP, HostIP: mustAddr("127.0.0.2"), Ports: Port(tcpPort)})
}
