package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
)

// writeStateFile makes a real state file: networks, endpoints and port
// mappings as the agent records them, with their ipam allocations, over
// enough pages that the tree has branch pages. It returns the file's
// bytes.
func writeStateFile(t testing.TB, path string, networks, perNetwork int) []byte {
	t.Helper()
	store, err := ipam.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := ipam.Open(store, ipam.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := uint32(1)
	for i := range networks {
		sub := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/24", 100+i))
		n := &Network{Name: fmt.Sprintf("net%d", i), Subnet: sub, Gateway: sub.Addr().Next(), Bridge: defaultBridgeName(fmt.Sprintf("net%d", i)), MTU: 1500, ICC: true, Masquerade: true}
		if _, err := alloc.AddNetwork(ipamNetwork(n)); err != nil {
			t.Fatal(err)
		}
		if err := store.Update(func(tx ipam.Tx) error { return put(tx, bucketNetworks, n.Name, n) }); err != nil {
			t.Fatal(err)
		}
		for j := range perNetwork {
			name := fmt.Sprintf("ep%d-%d", i, j)
			ips, err := alloc.AllocateIPs(ipam.IPRequest{Network: n.Name, Owner: name})
			if err != nil {
				t.Fatal(err)
			}
			e := &Endpoint{Name: name, Network: n.Name, Netns: "/run/netns/" + name, NetnsInode: uint64(4026530000 + j),
				HostIf: hostIfName(name), IP: ips[0], PrefixLen: 24, Gateway: n.Gateway, MAC: "02:42:ac:11:00:02", HostMAC: "02:42:ac:11:00:03", MTU: 1500}
			port := ipam.PortRange{First: uint16(10000 + i*perNetwork + j), Last: uint16(10000 + i*perNetwork + j)}
			if _, err := alloc.AllocatePorts(ipam.PortRequest{Owner: name, Proto: ipam.TCP, HostIP: netip.IPv4Unspecified(), Ports: port}); err != nil {
				t.Fatal(err)
			}
			m := &PortMapping{Endpoint: name, Proto: "tcp", HostIP: netip.IPv4Unspecified(), Host: port, Container: ipam.PortRange{First: 80, Last: 80}, Backend: e.IP, ID: id}
			id++
			err = store.Update(func(tx ipam.Tx) error {
				if err := put(tx, bucketEndpoints, e.Name, e); err != nil {
					return err
				}
				if err := put(tx, bucketPorts, portKey(m), m); err != nil {
					return err
				}
				return putNextID(tx, id)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openDamaged writes data as a state file and opens it as the agent does.
// It fails the test unless the open succeeds with records that agree, or
// refuses with one line naming the file, what is wrong and what to do.
func openDamaged(t *testing.T, data []byte) (opened bool, err error) {
	t.Helper()
	dir := t.TempDir()
	path := StatePath(dir)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	store, _, st, err := openState(path, filepath.Join(dir, "no-pins"), ipam.Options{})
	if err == nil {
		defer store.Close()
		if err := st.check(); err != nil {
			t.Fatalf("opened records that disagree: %v", err)
		}
		return true, nil
	}
	msg := err.Error()
	switch {
	case !errors.Is(err, ErrStateDamaged):
		t.Fatalf("open of a damaged file: %v, want a refusal (ErrStateDamaged)", err)
	case strings.Contains(msg, "\n"), strings.Contains(msg, "goroutine "):
		t.Fatalf("refusal is not one line: %q", msg)
	case !strings.Contains(msg, path), !strings.Contains(msg, "pontoon state rebuild"):
		t.Fatalf("refusal does not name the file and the way out: %q", msg)
	}
	return false, err
}

func TestStateFileChecks(t *testing.T) {
	good := writeStateFile(t, filepath.Join(t.TempDir(), "base.db"), 3, 40)
	if len(good) < 8*4096 {
		t.Fatalf("state file of %d bytes: too small to hold branch pages", len(good))
	}
	if opened, err := openDamaged(t, good); !opened {
		t.Fatalf("a whole state file was refused: %v", err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "is empty (0 bytes)"},
		{"one page", good[:4096], "is truncated"},
		{"truncated", good[:pagesReach(good)/2], "is truncated"},
		{"64 KiB", good[:64<<10], "is truncated"},
		{"random data page", randomPage(good, rootPage(good)), "is corrupt"},
		{"random meta pages", randomPage(randomPage(good, 0), 1), "is not a readable bbolt file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opened, err := openDamaged(t, c.data)
			if opened || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a refusal saying %q", err, c.want)
			}
		})
	}
}

// pagesReach is where the pages the newer meta page counts end: bbolt
// grows a file ahead of its pages, so the file's own length may be past it.
func pagesReach(b []byte) int { return newerMeta(b, 56) * 4096 }

// randomPage overwrites page n with bytes that are not a page.
// rootPage is the page of the root bucket that the newer meta page names:
// a data page every open reaches (a fixed page number may be free).
func rootPage(b []byte) int { return newerMeta(b, 32) }

// newerMeta is the field at byte off of the meta page bbolt reads, the
// one with the higher transaction id.
func newerMeta(b []byte, off int) int {
	field := func(n int) (v, txid uint64) {
		p := b[n*4096:]
		return binary.LittleEndian.Uint64(p[off:]), binary.LittleEndian.Uint64(p[64:])
	}
	v0, tx0 := field(0)
	v1, tx1 := field(1)
	if tx1 > tx0 {
		return int(v1)
	}
	return int(v0)
}

func randomPage(b []byte, n int) []byte {
	out := append([]byte(nil), b...)
	x := uint32(2463534242)
	for i := n * 4096; i < (n+1)*4096 && i < len(out); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[i] = byte(x)
	}
	return out
}

// TestStateRecordsDisagree: a flipped byte in a name leaves a record under
// another key; starting on it would prune the real one's interfaces.
func TestStateRecordsDisagree(t *testing.T) {
	good := writeStateFile(t, filepath.Join(t.TempDir(), "base.db"), 1, 2)
	i := strings.Index(string(good), `"name":"ep0-1"`)
	if i < 0 {
		t.Fatal("no endpoint record in the file")
	}
	bad := append([]byte(nil), good...)
	bad[i+len(`"name":"ep0-`)] = '7'
	opened, err := openDamaged(t, bad)
	if opened || !strings.Contains(err.Error(), "cannot be used") {
		t.Fatalf("got %v, want a refusal of records that disagree", err)
	}
}

func TestMissingStateFileIsAFirstStart(t *testing.T) {
	dir := t.TempDir()
	store, _, st, err := openState(StatePath(dir), filepath.Join(dir, "no-pins"), ipam.Options{})
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	defer store.Close()
	if len(st.networks)+len(st.endpoints)+len(st.ports) != 0 {
		t.Fatal("a new state file holds records")
	}
}

// TestMissingStateFileWithPinsRefused: pins say a datapath ran here.
func TestMissingStateFileWithPinsRefused(t *testing.T) {
	dir := t.TempDir()
	pins := filepath.Join(dir, "pins")
	os.MkdirAll(pins, 0o700)
	os.WriteFile(filepath.Join(pins, "bindings"), nil, 0o600)
	_, _, _, err := openState(StatePath(dir), pins, ipam.Options{})
	if !errors.Is(err, ErrStateDamaged) || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("got %v, want a refusal of a missing file over a datapath", err)
	}
	if _, err := os.Stat(StatePath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the refusal created the state file")
	}
}

// TestLastGoodCopy: the backup is a whole, consistent copy, and a refusal
// offers it.
func TestLastGoodCopy(t *testing.T) {
	dir := t.TempDir()
	path := StatePath(dir)
	writeStateFile(t, path, 1, 3)
	store, err := ipam.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	txid, err := store.Backup(LastGoodPath(path))
	store.Close()
	if err != nil || txid <= 0 {
		t.Fatalf("backup: txid %d, %v", txid, err)
	}
	if err := ipam.CheckBolt(LastGoodPath(path)); err != nil {
		t.Fatalf("the backup does not check out: %v", err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = openState(path, filepath.Join(dir, "no-pins"), ipam.Options{})
	if !errors.Is(err, ErrStateDamaged) || !strings.Contains(err.Error(), "cp "+LastGoodPath(path)+" "+path) {
		t.Fatalf("got %v, want a refusal offering the last good copy", err)
	}
	os.Rename(LastGoodPath(path), path)
	store, _, st, err := openState(path, filepath.Join(dir, "no-pins"), ipam.Options{})
	if err != nil {
		t.Fatalf("open the restored copy: %v", err)
	}
	store.Close()
	if len(st.endpoints) != 3 || len(st.ports) != 3 {
		t.Fatalf("restored copy holds %d endpoints, %d mappings, want 3 and 3", len(st.endpoints), len(st.ports))
	}
}

// TestBrokenStoreRefusesInsteadOfHanging: after a panic inside a
// transaction the store answers every call with the error, at once.
func TestBrokenStoreRefusesInsteadOfHanging(t *testing.T) {
	store, err := ipam.OpenBolt(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.Update(func(tx ipam.Tx) error { panic("bbolt: invalid freelist page") })
	if !errors.Is(err, ipam.ErrStoreBroken) {
		t.Fatalf("panicking update: %v, want ErrStoreBroken", err)
	}
	if err := store.View(func(ipam.Tx) error { return nil }); !errors.Is(err, ipam.ErrStoreBroken) {
		t.Fatalf("view after the panic: %v, want ErrStoreBroken", err)
	}
	if store.Broken() == nil {
		t.Fatal("Broken() is nil after a panic")
	}
}

// FuzzStateFile opens truncations and byte flips of a real state file as
// the agent does: it refuses with one clear line or opens records that
// agree, and never panics. The seeds run in every `go test`; explore with
// go test -run '^$' -fuzz FuzzStateFile ./control.
func FuzzStateFile(f *testing.F) {
	good := writeStateFile(f, filepath.Join(f.TempDir(), "base.db"), 2, 30)
	n := int64(len(good))
	for _, cut := range []int64{0, 1, 100, 4096, 8191, 8192, 12288, 64 << 10, n / 2, n - 4096, n - 1} {
		f.Add(cut, uint32(0), byte(0))
	}
	for page := range uint32(n / 4096) {
		for _, off := range []uint32{10, 17, 40, 2048} {
			f.Add(int64(-1), page*4096+off, byte(0x5a))
		}
	}
	f.Fuzz(func(t *testing.T, cut int64, at uint32, xor byte) {
		data := append([]byte(nil), good...)
		if cut >= 0 && cut < int64(len(data)) {
			data = data[:cut]
		}
		if xor != 0 && len(data) > 0 {
			data[int(at)%len(data)] ^= xor
		}
		openDamaged(t, data)
	})
}

// BenchmarkStateFileCheck is what the start-up check (openState) and one
// last-good copy cost on a state file holding 30,000 port mappings.
func BenchmarkStateFileCheck(b *testing.B) {
	path := StatePath(b.TempDir())
	store, err := ipam.OpenBolt(path)
	if err != nil {
		b.Fatal(err)
	}
	sub := netip.MustParsePrefix("10.100.0.0/16")
	n := &Network{Name: "net", Subnet: sub, Gateway: sub.Addr().Next(), Bridge: "pt-net", MTU: 1500}
	err = store.Update(func(tx ipam.Tx) error {
		if err := put(tx, bucketNetworks, n.Name, n); err != nil {
			return err
		}
		ip := n.Gateway
		for i := range 30000 {
			if i%100 == 0 {
				ip = ip.Next()
				e := &Endpoint{Name: fmt.Sprintf("ep%d", i/100), Network: n.Name, HostIf: hostIfName(fmt.Sprintf("ep%d", i/100)), IP: ip, PrefixLen: 16, Gateway: n.Gateway}
				if err := put(tx, bucketEndpoints, e.Name, e); err != nil {
					return err
				}
			}
			port := ipam.PortRange{First: uint16(20000 + i), Last: uint16(20000 + i)}
			m := &PortMapping{Endpoint: fmt.Sprintf("ep%d", i/100), Proto: "tcp", HostIP: netip.IPv4Unspecified(), Host: port, Container: port, Backend: ip, ID: uint32(i + 1)}
			if err := put(tx, bucketPorts, portKey(m), m); err != nil {
				return err
			}
		}
		return putNextID(tx, 30001)
	})
	if err != nil {
		b.Fatal(err)
	}
	store.Close()
	if fi, err := os.Stat(path); err == nil {
		b.Logf("state file of %d bytes", fi.Size())
	}
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := ipam.CheckBolt(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			store, _, _, err := openState(path, filepath.Join(b.TempDir(), "no-pins"), ipam.Options{})
			if err != nil {
				b.Fatal(err)
			}
			store.Close()
		}
	})
	b.Run("last-good copy", func(b *testing.B) {
		store, err := ipam.OpenBolt(path)
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		for b.Loop() {
			if _, err := store.Backup(LastGoodPath(path)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
