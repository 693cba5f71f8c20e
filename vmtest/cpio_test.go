package vmtest

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	name       string
	mode       uint32
	rmaj, rmin uint32
	body       []byte
}

// readCPIO parses a newc archive as the kernel does: 110-byte header, name
// padded to 4, body padded to 4, up to the trailer.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("archive ends inside a header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatalf("header field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nameSize := field(1), int(field(6)), field(9), field(10), int(field(11))
		nameStart := off + 110
		name := string(b[nameStart : nameStart+nameSize-1])
		if b[nameStart+nameSize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		bodyStart := align(nameStart + nameSize)
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{name: name, mode: mode, rmaj: rmaj, rmin: rmin, body: b[bodyStart : bodyStart+size]})
		off = align(bodyStart + size)
	}
}

func TestCPIOWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("bin", 0o755)
	c.File("bin/busybox", 0o755, []byte("odd-length"))
	c.Symlink("bin/sh", "busybox")
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("empty", 0o644, nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", buf.Len())
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{name: "bin", mode: sIFDIR | 0o755},
		{name: "bin/busybox", mode: sIFREG | 0o755, body: []byte("odd-length")},
		{name: "bin/sh", mode: sIFLNK | 0o777, body: []byte("busybox")},
		{name: "dev/console", mode: sIFCHR | 0o600, rmaj: 5, rmin: 1},
		{name: "empty", mode: sIFREG | 0o644},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.mode != w.mode || g.rmaj != w.rmaj || g.rmin != w.rmin || !bytes.Equal(g.body, w.body) {
			t.Errorf("entry %d = %s, want %s", i, fmtEntry(g), fmtEntry(w))
		}
	}
}

func fmtEntry(e cpioEntry) string {
	return fmt.Sprintf("{%s %o %d:%d %q}", e.name, e.mode, e.rmaj, e.rmin, e.body)
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, fmt.Errorf("disk full")
	}
	f.after--
	return len(p), nil
}

func TestCPIOWriterReportsWriteErrors(t *testing.T) {
	c := newCPIOWriter(&failWriter{after: 3})
	c.File("a", 0o644, []byte("x"))
	c.File("b", 0o644, []byte("y"))
	if err := c.Close(); err == nil {
		t.Fatal("Close returned no error after a failed write")
	}
}
