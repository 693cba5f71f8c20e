package ipam

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// putPages writes pas as page records, the way a test seeds a store.
func putPages(tx Tx, pas ...PortAllocation) error {
	pas = slices.Clone(pas)
	slices.SortFunc(pas, func(x, y PortAllocation) int {
		return cmp.Or(cmp.Compare(x.Proto, y.Proto), x.HostIP.Compare(y.HostIP), cmp.Compare(x.Ports.First, y.Ports.First))
	})
	for _, g := range groupPages(pas) {
		k, v := encodeGroup(g)
		if err := tx.Put(bucketPorts, k, v); err != nil {
			return err
		}
	}
	return nil
}

// groupPages splits sorted allocations by the page record they belong in.
func groupPages(pas []PortAllocation) [][]PortAllocation {
	var out [][]PortAllocation
	for i := 0; i < len(pas); {
		j := i + 1
		for j < len(pas) && pas[j].Proto == pas[i].Proto && pas[j].HostIP == pas[i].HostIP && pas[j].Ports.First>>8 == pas[i].Ports.First>>8 {
			j++
		}
		out = append(out, pas[i:j])
		i = j
	}
	return out
}

func encodeGroup(g []PortAllocation) (k, v []byte) {
	var e pageEncoder
	e.begin()
	for _, pa := range g {
		e.add(pa.Ports.First, pa.Ports.Last, pa.Owner)
	}
	return pageKey(poolKey{g[0].Proto, g[0].HostIP}, uint8(g[0].Ports.First>>8)), e.finish()
}

func decodeAll(t testing.TB, k, v []byte) []PortAllocation {
	t.Helper()
	var got []PortAllocation
	if err := decodePage(k, v, func(pa PortAllocation) error { got = append(got, pa); return nil }); err != nil {
		t.Fatalf("decode %x=%x: %v", k, v, err)
	}
	return got
}

// TestPageRecordRoundTrip encodes pages of every shape the allocator
// makes and decodes them back to the same allocations; encoding again
// gives the same bytes.
func TestPageRecordRoundTrip(t *testing.T) {
	long := strings.Repeat("o", maxIDLen)
	var full, distinct, mixed []PortAllocation
	for i := range 256 {
		full = append(full, PortAllocation{Owner: "web", Proto: TCP, HostIP: any4, Ports: Port(uint16(0x1200 + i))})
		distinct = append(distinct, PortAllocation{Owner: fmt.Sprint("ep", i), Proto: UDP, HostIP: mustAddr("2001:db8::7"), Ports: Port(uint16(0xff00 + i))})
		if i%3 == 0 {
			mixed = append(mixed, PortAllocation{Owner: []string{"a", long, "c", "a", "b"}[i%5], Proto: SCTP, HostIP: mustAddr("192.0.2.1"), Ports: Port(uint16(0x300 + i))})
		}
	}
	distinct = distinct[:255] // 65535 is the last port
	tests := map[string][]PortAllocation{
		"one port":               {{Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(80)}},
		"range past the page":    {{Owner: "a", Proto: TCP, HostIP: any6, Ports: PortRange{250, 9000}}, {Owner: "b", Proto: TCP, HostIP: any6, Ports: Port(1)}},
		"one owner, full page":   full,
		"a page of 255 owners":   distinct,
		"owners reused, longest": mixed,
		"ranges back to back": {{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{10, 12}}, {Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{13, 15}},
			{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{16, 18}}, {Owner: "b", Proto: TCP, HostIP: any4, Ports: PortRange{19, 21}},
			{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{22, 24}}, {Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{25, 26}},
			{Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(30)}, {Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(31)}},
		"last port": {{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{0xff00, 0xfffe}}, {Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(0xffff)}},
	}
	for name, pas := range tests {
		t.Run(name, func(t *testing.T) {
			slices.SortFunc(pas, func(x, y PortAllocation) int { return cmp.Compare(x.Ports.First, y.Ports.First) })
			if g := groupPages(pas); len(g) != 1 {
				t.Fatalf("test data spans %d pages", len(g))
			}
			k, v := encodeGroup(pas)
			if got := decodeAll(t, k, v); !reflect.DeepEqual(got, pas) {
				t.Fatalf("decoded %v, want %v", got, pas)
			}
			if _, again := encodeGroup(decodeAll(t, k, v)); !bytes.Equal(again, v) {
				t.Errorf("encoding again gave %x, want %x", again, v)
			}
		})
	}
	k, v := encodeGroup(full)
	if want := 2 + pageRunSize + 1 + len("web"); len(v) != want {
		t.Errorf("a page of one owner's 256 ports is %d bytes, want %d (one run)", len(v), want)
	}
	if want := []byte{byte(TCP), 0, 0, 0, 0, 0x12}; !bytes.Equal(k, want) {
		t.Errorf("key %x, want %x", k, want)
	}
}

// TestPageRecordMalformed: a page record that is not as the encoder
// writes it is refused by an error naming it, and never half read.
func TestPageRecordMalformed(t *testing.T) {
	key := pageKey(poolKey{TCP, any4}, 1)
	_, good := encodeGroup([]PortAllocation{{Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(256)}, {Owner: "b", Proto: TCP, HostIP: any4, Ports: Port(300)}})
	// good: 0002 | 00 0000 00 00 | 2c 0000 01 00 | 01 'a' | 01 'b'
	edit := func(f func(v []byte) []byte) []byte { return f(slices.Clone(good)) }
	top := pageKey(poolKey{TCP, any4}, 0xff)
	tests := []struct {
		name    string
		k, v    []byte
		message string
	}{
		{"short key", key[:5], good, "port record 0600000000: malformed (key of 5 bytes"},
		{"empty value", key, nil, "value of 0 bytes"},
		{"no runs", key, []byte{0, 0}, "0 runs, want 1-256"},
		{"too many runs", key, edit(func(v []byte) []byte { v[0] = 1; v[1] = 1; return v }), "257 runs"},
		{"runs cut", key, good[:8], "2 runs in 6 bytes"},
		{"owner cut", key, good[:len(good)-1], "owner 1 runs past the end"},
		{"owner missing", key, good[:len(good)-2], "owner 1 of a table of 1"},
		{"extra owner", key, append(slices.Clone(good), 1, 'c'), "3 owners in the table, 2 named"},
		{"owner index past the table", key, edit(func(v []byte) []byte { v[10] = 7; return v }), "owner 7 of a table of 2"},
		{"owners out of order", key, edit(func(v []byte) []byte { v[5] = 1; v[10] = 0; return v }), "owner 1 named before owner 0"},
		{"ports out of order", key, edit(func(v []byte) []byte { v[2] = 0x30; return v }), "out of port order"},
		{"same port twice", key, edit(func(v []byte) []byte { v[7] = 0; return v }), "out of port order"},
		{"inside the run before", key, edit(func(v []byte) []byte { v[6] = 0x2c; return v }), "out of port order"},
		{"owner twice", key, edit(func(v []byte) []byte { v[len(v)-1] = 'a'; return v }), `owner "a" listed twice`},
		{"run leaves the page", key, edit(func(v []byte) []byte { v[11] = 0xd4; return v }), "run at 300 of 213 allocations of 1 ports leaves the page"},
		{"past port 65535", top, []byte{0, 1, 0, 0xff, 0xff, 0, 0, 1, 'a'}, "allocation at 65280 of 65536 ports runs past port 65535"},
		{"runs not merged", key, edit(func(v []byte) []byte { v[7] = 1; v[10] = 0; return v }), "run at 257 continues the one before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			err := decodePage(tt.k, tt.v, func(PortAllocation) error { called = true; return nil })
			if err == nil || !strings.Contains(err.Error(), tt.message) || !strings.Contains(err.Error(), "malformed") {
				t.Fatalf("decode = %v, want a malformed-record error saying %q", err, tt.message)
			}
			if name := pageName(tt.k); len(tt.k) == 6 && !strings.HasPrefix(err.Error(), name+": ") {
				t.Errorf("error %q does not name the record", err)
			}
			if called {
				t.Error("a malformed record handed out allocations")
			}
		})
	}
	// The same damage found in a store fails the open by that message.
	s := NewMemStore()
	if err := s.Update(func(tx Tx) error { return tx.Put(bucketPorts, key, good[:len(good)-1]) }); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s, Options{DynamicPorts: testPorts}); err == nil || !strings.Contains(err.Error(), "port record tcp 0.0.0.0:256-511: malformed") {
		t.Errorf("Open = %v, want the malformed record named", err)
	}
}

// FuzzPageRecord: any key and value decode to an error, or to allocations
// that encode back to exactly that value (the format has one encoding per
// state, so a value that decodes is one the encoder writes).
func FuzzPageRecord(f *testing.F) {
	k, v := encodeGroup([]PortAllocation{{Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(256)}, {Owner: "bb", Proto: TCP, HostIP: any4, Ports: PortRange{300, 310}}, {Owner: "a", Proto: TCP, HostIP: any4, Ports: Port(511)}})
	f.Add(k, v)
	k, v = encodeGroup([]PortAllocation{{Owner: "x", Proto: UDP, HostIP: mustAddr("2001:db8::1"), Ports: Port(65535)}})
	f.Add(k, v)
	f.Add([]byte{6, 0, 0, 0, 0, 1}, []byte{0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		var got []PortAllocation
		if err := decodePage(k, v, func(pa PortAllocation) error { got = append(got, pa); return nil }); err != nil {
			if !strings.Contains(err.Error(), "malformed") || !strings.HasPrefix(err.Error(), "port record ") {
				t.Fatalf("error %q does not name a malformed port record", err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("a record decoded to no allocations")
		}
		k2, v2 := encodeGroup(got)
		if !bytes.Equal(k2, k) || !bytes.Equal(v2, v) {
			t.Fatalf("%x=%x decoded to %v, which encodes as %x=%x", k, v, got, k2, v2)
		}
	})
}

// v1PortRecord is a schema 1 port record, byte for byte as that version
// wrote it: proto, host address, first port -> last port, owner.
func v1PortRecord(pa PortAllocation) (k, v []byte) {
	k = append([]byte{byte(pa.Proto)}, pa.HostIP.AsSlice()...)
	k = append(k, byte(pa.Ports.First>>8), byte(pa.Ports.First))
	v = append([]byte{byte(pa.Ports.Last >> 8), byte(pa.Ports.Last)}, pa.Owner...)
	return k, v
}

// v1Allocations are what the schema 1 file of the migration tests holds:
// pools of both families, wildcard and specific, ranges, several owners,
// and an IPv6 address whose first bytes are an IPv4 one's, so its key
// sorts among that address's.
func v1Allocations() []PortAllocation {
	v4 := mustAddr("192.0.2.1")
	twin := netip.AddrFrom16([16]byte{192, 0, 2, 1, 0x01, 0x10})
	var pas []PortAllocation
	for p := 50000; p < 50700; p++ {
		pas = append(pas, PortAllocation{Owner: fmt.Sprint("ep", p%7), Proto: TCP, HostIP: any4, Ports: Port(uint16(p))})
	}
	pas = append(pas,
		PortAllocation{Owner: "web", Proto: TCP, HostIP: any4, Ports: PortRange{8000, 8010}},
		PortAllocation{Owner: "web", Proto: TCP, HostIP: any4, Ports: Port(65535)},
		PortAllocation{Owner: "dns", Proto: UDP, HostIP: v4, Ports: Port(53)},
		PortAllocation{Owner: "dns", Proto: UDP, HostIP: v4, Ports: PortRange{0x110, 0x11f}},
		PortAllocation{Owner: "dns", Proto: UDP, HostIP: v4, Ports: Port(0x120)},
		PortAllocation{Owner: "six", Proto: UDP, HostIP: twin, Ports: Port(0x118)},
		PortAllocation{Owner: "six", Proto: UDP, HostIP: twin, Ports: Port(0x11a)},
		PortAllocation{Owner: "six", Proto: SCTP, HostIP: any6, Ports: Port(9)},
	)
	return pas
}

// writeV1File makes a schema 1 state file holding pas and a dynamic
// cursor, written with that version's bytes.
func writeV1File(t *testing.T, path string, pas []PortAllocation) {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx Tx) error {
		if err := tx.Put(bucketMeta, keySchema, []byte{1}); err != nil {
			return err
		}
		for _, pa := range pas {
			k, v := v1PortRecord(pa)
			if err := tx.Put(bucketPorts, k, v); err != nil {
				return err
			}
		}
		return tx.Put(bucketPortCursors, []byte{byte(TCP), 0, 0, 0, 0}, []byte{50699 >> 8, 50699 & 0xff})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func readSchema(t *testing.T, s Store) []byte {
	t.Helper()
	var v []byte
	if err := s.View(func(tx Tx) error { v = slices.Clone(tx.Get(bucketMeta, keySchema)); return nil }); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMigrateSchema1 opens a real schema 1 file: every allocation
// survives as page records, the file says schema 2, the dynamic cursor
// holds, and the file opens again as it is.
func TestMigrateSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	want := v1Allocations()
	writeV1File(t, path, want)
	sortPorts(want)

	s := openBoltFast(t, path)
	a, err := Open(s, Options{DynamicPorts: PortRange{50000, 60000}})
	if err != nil {
		t.Fatalf("open a schema 1 file: %v", err)
	}
	samePorts(t, "after the upgrade", a.Ports(""), want)
	if v := readSchema(t, s); !bytes.Equal(v, []byte{2}) {
		t.Errorf("schema %x after the upgrade, want 02", v)
	}
	var onDisk []PortAllocation
	records := 0
	err = s.View(func(tx Tx) error {
		return tx.ForEach(bucketPorts, func(k, v []byte) error {
			records++
			return decodePage(k, v, func(pa PortAllocation) error { onDisk = append(onDisk, pa); return nil })
		})
	})
	if err != nil {
		t.Fatalf("read the upgraded records: %v", err)
	}
	sortPorts(onDisk)
	samePorts(t, "in the file", onDisk, want)
	// 50000-50699 span pages 195-198; then 8000 (page 31), 65535, two
	// pages of 192.0.2.1, one of the twin, one of [::].
	if records != 4+1+1+2+1+1 {
		t.Errorf("%d page records, want 10", records)
	}
	if pa := allocPorts(t, a, PortRequest{Owner: "new", Proto: TCP, HostIP: any4}); pa.Ports != Port(50700) {
		t.Errorf("next dynamic port %s, want 50700 after the cursor", pa.Ports)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openBoltFast(t, path)
	b, err := Open(s, Options{DynamicPorts: PortRange{50000, 60000}})
	if err != nil {
		t.Fatalf("reopen the upgraded file: %v", err)
	}
	if got := b.Ports(""); len(got) != len(want)+1 {
		t.Errorf("reopened with %d allocations, want %d", len(got), len(want)+1)
	}
}

// TestMigrateSchema1Refused: a schema 1 file whose records the allocator
// refuses is left exactly as it was, still schema 1.
func TestMigrateSchema1Refused(t *testing.T) {
	for name, tt := range map[string]struct {
		pas     []PortAllocation
		message string
	}{
		"overlap":     {[]PortAllocation{{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{80, 90}}, {Owner: "b", Proto: TCP, HostIP: any4, Ports: Port(85)}}, "port record tcp 0.0.0.0:85: overlaps tcp 0.0.0.0:80-90"},
		"long owner":  {[]PortAllocation{{Owner: strings.Repeat("x", 300), Proto: TCP, HostIP: any4, Ports: Port(80)}}, "port record tcp 0.0.0.0:80: invalid owner: 300 bytes long"},
		"empty owner": {[]PortAllocation{{Owner: "", Proto: TCP, HostIP: any4, Ports: Port(80)}}, "port record tcp 0.0.0.0:80: invalid owner: empty"},
		"reversed":    {[]PortAllocation{{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{90, 80}}}, "port record tcp 0.0.0.0:90-80: invalid port range 90-80: reversed"},
		"port 0":      {[]PortAllocation{{Owner: "a", Proto: TCP, HostIP: any4, Ports: PortRange{0, 5}}}, "port record tcp 0.0.0.0:0-5: invalid port range 0-5: port 0"},
		"malformed":   {nil, "schema 1 port record 0600000000=00: malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.db")
			writeV1File(t, path, tt.pas)
			s := openBoltFast(t, path)
			if tt.pas == nil {
				if err := s.Update(func(tx Tx) error { return tx.Put(bucketPorts, []byte{6, 0, 0, 0, 0}, []byte{0}) }); err != nil {
					t.Fatal(err)
				}
			}
			before := dumpStore(t, s)
			_, err := Open(s, Options{DynamicPorts: testPorts})
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("Open = %v, want a one-line error saying %q", err, tt.message)
			}
			sameStore(t, before, dumpStore(t, s))
			if v := readSchema(t, s); !bytes.Equal(v, []byte{1}) {
				t.Errorf("schema %x after the refusal, want 01", v)
			}
		})
	}
}

func sameStore(t *testing.T, before, after map[string]string) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("store changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestNewerSchemaRefused: a file from a later pontoon is refused in one
// line and not touched.
func TestNewerSchemaRefused(t *testing.T) {
	s := openBoltFast(t, filepath.Join(t.TempDir(), "ipam.db"))
	if err := s.Update(func(tx Tx) error { return tx.Put(bucketMeta, keySchema, []byte{3}) }); err != nil {
		t.Fatal(err)
	}
	_, err := Open(s, Options{DynamicPorts: testPorts})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "store schema 03: this pontoon reads schemas 1 to 2 only") {
		t.Fatalf("Open = %v, want a one-line refusal of schema 3", err)
	}
	if v := readSchema(t, s); !bytes.Equal(v, []byte{3}) {
		t.Errorf("schema %x after the refusal, want 03", v)
	}
}

// TestOneOperationOnePage: a one-port allocation or release rewrites the
// one page record its port is in, and the last release of a page removes
// it; a batch writes each page it changed once.
func TestOneOperationOnePage(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		a, err := Open(s, Options{DynamicPorts: PortRange{1000, 2999}})
		if err != nil {
			t.Fatal(err)
		}
		reqs := make([]PortRequest, 1200)
		for i := range reqs {
			reqs[i] = PortRequest{Owner: "fill", Proto: TCP, HostIP: any4}
		}
		if _, err := a.AllocatePortsBatch(reqs, nil); err != nil {
			t.Fatal(err)
		}
		// 1000-2199: pages 3 (1000-1023) to 8 (2048-2199).
		before := portRecords(t, s)
		if len(before) != 6 {
			t.Fatalf("a batch of 1000-2199 left %d page records, want 6", len(before))
		}
		pa := allocPorts(t, a, PortRequest{Owner: "one", Proto: TCP, HostIP: any4})
		after := portRecords(t, s)
		if changed := diffRecords(before, after); len(changed) != 1 || changed[0] != fmt.Sprintf("%x", pageKey(poolKey{TCP, any4}, uint8(pa.Ports.First>>8))) {
			t.Errorf("allocating %s changed records %v, want its page only", pa, changed)
		}
		if _, err := a.ReleasePorts(TCP, any4, Port(1500)); err != nil {
			t.Fatal(err)
		}
		if changed := diffRecords(after, portRecords(t, s)); len(changed) != 1 {
			t.Errorf("releasing port 1500 changed records %v, want one", changed)
		}
		for p := 1000; p < 1024; p++ {
			if _, err := a.ReleasePorts(TCP, any4, Port(uint16(p))); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := portRecords(t, s)[fmt.Sprintf("%x", pageKey(poolKey{TCP, any4}, 3))]; ok {
			t.Error("page 3 is still stored after its last port was released")
		}
		if _, err := a.ReleaseOwnerPorts("fill"); err != nil {
			t.Fatal(err)
		}
		left := portRecords(t, s)
		if len(left) != 1 {
			t.Errorf("after releasing the fill %d page records are left, want the one of %s", len(left), pa)
		}
	})
}

func portRecords(t *testing.T, s Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.View(func(tx Tx) error {
		return tx.ForEach(bucketPorts, func(k, v []byte) error {
			out[fmt.Sprintf("%x", k)] = fmt.Sprintf("%x", v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffRecords(before, after map[string]string) []string {
	var out []string
	for k, v := range after {
		if before[k] != v {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// samePorts reports the first difference of two sorted lists.
func samePorts(t *testing.T, where string, got, want []PortAllocation) {
	t.Helper()
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			t.Fatalf("%s: %d allocations, want %d; missing %s", where, len(got), len(want), want[i])
		case i >= len(want):
			t.Fatalf("%s: %d allocations, want %d; extra %s", where, len(got), len(want), got[i])
		case got[i] != want[i]:
			t.Fatalf("%s: allocation %d is %s of %q, want %s of %q", where, i, got[i], got[i].Owner, want[i], want[i].Owner)
		}
	}
}
