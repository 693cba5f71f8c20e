package testenv

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Bulk transfers move a deterministic pseudo-random stream over TCP, and
// the receiving end compares what arrives with the stream it expects from
// the seed: a transfer passes only when every byte arrived, in order, and
// nothing else did. Either end can be the sender; the client says which,
// with the seed and the size, in a header.

// BulkSize is what the traffic tests move each way: enough for TCP to open
// its window fully and for GSO and GRO to build super-packets.
const BulkSize = 64 << 20

// Direction says which end of a bulk transfer sends.
type Direction byte

const (
	Upload   Direction = 'U' // the client sends
	Download Direction = 'D' // the server sends
)

func (d Direction) String() string {
	switch d {
	case Upload:
		return "upload"
	case Download:
		return "download"
	}
	return fmt.Sprintf("direction %q", byte(d))
}

// Transfer is one bulk transfer, as a client asks for it.
type Transfer struct {
	Dir  Direction
	Addr string // the server, as the client dials it
	Seed uint64 // picks the stream: give each transfer its own
	Size int64
	// Deadline bounds all of it, from the dial to the last byte checked.
	// It is there to catch a stall, not to time anything: make it generous.
	Deadline time.Duration
}

// TransferResult is what a transfer that passed moved, and how long it took.
type TransferResult struct {
	Bytes   int64
	Elapsed time.Duration
}

const (
	bulkHeaderLen = 1 + 8 + 8 // direction, seed, size
	bulkReportLen = 8 + 8     // received, first wrong byte
	bulkChunk     = 256 << 10
	// A connection that is not up in this time will not come up: it is
	// no stall, and waiting for the whole deadline would tell nothing more.
	bulkDialTimeout = 30 * time.Second
)

// A transfer's stream is a window onto a pseudo-random pattern, read round
// and round from an offset the seed picks. Both ends work from the same
// pattern without computing anything per byte, which halves a transfer's
// time under emulation. The pattern's length is odd, so no boundary of
// segments or buffers lines up with its repetition: bytes that arrive at
// the wrong offset, twice or not at all show at the byte.
const patternLen = 1<<20 + 7

var pattern = sync.OnceValue(func() []byte {
	p := make([]byte, patternLen)
	rand.NewChaCha8([32]byte{'p', 'o', 'n', 't', 'o', 'o', 'n'}).Read(p)
	return p
})

type stream struct{ pos int }

func newStream(seed uint64) *stream {
	// Spread the seeds over the pattern: the streams of two transfers
	// must not be each other shifted by a byte or two.
	return &stream{pos: int(seed * 0x9e3779b97f4a7c15 % patternLen)}
}

// next returns the stream's next bytes, at most n of them, without copying.
func (s *stream) next(n int) []byte {
	p := pattern()
	end := min(s.pos+n, len(p))
	b := p[s.pos:end]
	s.pos = end % len(p)
	return b
}

// read fills b with the stream's next bytes.
func (s *stream) read(b []byte) {
	for len(b) > 0 {
		b = b[copy(b, s.next(len(b))):]
	}
}

// send writes size bytes of the stream and returns how many the kernel took.
func send(c net.Conn, seed uint64, size int64) (int64, error) {
	src := newStream(seed)
	var sent int64
	for sent < size {
		n, err := c.Write(src.next(int(min(size-sent, bulkChunk))))
		sent += int64(n)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// received is what the receiving end saw.
type received struct {
	Bytes      int64
	FirstWrong int64 // offset of the first byte that differs from the stream, -1 if none
}

// receive reads until EOF and compares what it reads with the stream.
func receive(c net.Conn, seed uint64) (received, error) {
	want := newStream(seed)
	buf := make([]byte, bulkChunk)
	r := received{FirstWrong: -1}
	for {
		n, err := c.Read(buf)
		for got := buf[:n]; len(got) > 0 && r.FirstWrong < 0; {
			expected := want.next(len(got))
			if i := firstDifference(got[:len(expected)], expected); i >= 0 {
				r.FirstWrong = r.Bytes + int64(n-len(got)+i)
			}
			got = got[len(expected):]
		}
		r.Bytes += int64(n)
		if errors.Is(err, io.EOF) {
			return r, nil
		}
		if err != nil {
			return r, err
		}
	}
}

func firstDifference(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// check says what is wrong with what arrived, if anything.
func (r received) check(size int64) error {
	switch {
	case r.FirstWrong >= 0:
		return fmt.Errorf("received %d of %d bytes, differing from what was sent from byte %d on", r.Bytes, size, r.FirstWrong)
	case r.Bytes != size:
		return fmt.Errorf("received %d bytes, %d were sent", r.Bytes, size)
	}
	return nil
}

// run is the client's side.
func (tr Transfer) run() (TransferResult, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp"+family(tr.Addr), tr.Addr, min(tr.Deadline, bulkDialTimeout))
	if err != nil {
		return TransferResult{}, fmt.Errorf("%s: connect to %s: %w", tr.Dir, tr.Addr, err)
	}
	defer c.Close()
	c.SetDeadline(start.Add(tr.Deadline))
	var hdr [bulkHeaderLen]byte
	hdr[0] = byte(tr.Dir)
	binary.BigEndian.PutUint64(hdr[1:], tr.Seed)
	binary.BigEndian.PutUint64(hdr[9:], uint64(tr.Size))
	if _, err := c.Write(hdr[:]); err != nil {
		return TransferResult{}, fmt.Errorf("%s: send header to %s: %w", tr.Dir, tr.Addr, err)
	}
	elapsed := func() time.Duration { return time.Since(start).Round(time.Millisecond) }

	switch tr.Dir {
	case Upload:
		if sent, err := send(c, tr.Seed, tr.Size); err != nil {
			return TransferResult{}, fmt.Errorf("upload to %s: sent %d of %d bytes in %s: %w", tr.Addr, sent, tr.Size, elapsed(), err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return TransferResult{}, fmt.Errorf("upload to %s: close after sending: %w", tr.Addr, err)
		}
		var report [bulkReportLen]byte
		if _, err := io.ReadFull(c, report[:]); err != nil {
			return TransferResult{}, fmt.Errorf("upload to %s: sent all %d bytes, then no report from the server in %s: %w", tr.Addr, tr.Size, elapsed(), err)
		}
		got := received{
			Bytes:      int64(binary.BigEndian.Uint64(report[:8])),
			FirstWrong: int64(binary.BigEndian.Uint64(report[8:])),
		}
		if err := got.check(tr.Size); err != nil {
			return TransferResult{}, fmt.Errorf("upload to %s: the server %w", tr.Addr, err)
		}
	case Download:
		got, err := receive(c, tr.Seed)
		if err != nil {
			return TransferResult{}, fmt.Errorf("download from %s: received %d of %d bytes in %s: %w", tr.Addr, got.Bytes, tr.Size, elapsed(), err)
		}
		if err := got.check(tr.Size); err != nil {
			return TransferResult{}, fmt.Errorf("download from %s: %w", tr.Addr, err)
		}
	default:
		return TransferResult{}, fmt.Errorf("unknown direction %q", byte(tr.Dir))
	}
	return TransferResult{Bytes: tr.Size, Elapsed: elapsed()}, nil
}

// serveBulk is the server's side of one connection. It reports nothing of
// its own: the client's error says what went wrong.
func serveBulk(c net.Conn) {
	defer c.Close()
	var hdr [bulkHeaderLen]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	seed := binary.BigEndian.Uint64(hdr[1:])
	size := int64(binary.BigEndian.Uint64(hdr[9:]))
	switch Direction(hdr[0]) {
	case Upload:
		got, err := receive(c, seed)
		if err != nil {
			return
		}
		var report [bulkReportLen]byte
		binary.BigEndian.PutUint64(report[:8], uint64(got.Bytes))
		binary.BigEndian.PutUint64(report[8:], uint64(got.FirstWrong))
		c.Write(report[:])
	case Download:
		send(c, seed, size) // closing afterwards marks the end
	}
}

// ServeBulk runs a bulk transfer server inside the namespace until cleanup.
func (n *Netns) ServeBulk(t testing.TB, addr string) {
	t.Helper()
	n.serveConns(t, addr, serveBulk)
}

// Transfer runs a bulk transfer from inside the namespace (in this
// process: no cgroup).
func (n *Netns) Transfer(tr Transfer) (TransferResult, error) {
	var res TransferResult
	err := n.Do(func() (err error) {
		res, err = tr.run()
		return err
	})
	return res, err
}

// TransferFrom runs a bulk transfer from a helper process in the namespace
// and cgroup, so the cgroup's socket hooks apply.
func (n *Netns) TransferFrom(t testing.TB, cgroup string, tr Transfer) (TransferResult, error) {
	t.Helper()
	arg, err := json.Marshal(tr)
	if err != nil {
		return TransferResult{}, err
	}
	// The helper gets time to start on top of the transfer's deadline, so
	// that a stall is reported by the transfer, with what it moved.
	var res TransferResult
	err = n.helperWithin(t, tr.Deadline+helperTimeout, cgroup, &res, "bulk", string(arg))
	return res, err
}

func bulkHelper(args []string) (any, error) {
	if len(args) != 1 {
		return nil, errors.New("bulk wants one transfer, as JSON")
	}
	var tr Transfer
	if err := json.Unmarshal([]byte(args[0]), &tr); err != nil {
		return nil, fmt.Errorf("bulk transfer %q: %w", args[0], err)
	}
	return tr.run()
}
