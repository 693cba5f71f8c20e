package ipam

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
)

// Port allocations are stored a page at a time, as the in-memory view holds
// them: one record per 256 ports of a pool, so a fill of 65,535 ports
// writes 256 records and a one-port change rewrites one. Allocations are
// written as runs (an owner's allocations of one length, back to back), so
// a page one owner filled a port at a time is a dozen bytes, and the most a
// page can take, 256 allocations of 256 owners, is under 70 KiB.
//
// Key: proto (1 byte), host address (4 or 16 bytes), page (1 byte: the
// high byte of the first ports it holds).
//
// Value: the number of runs n (uint16, 1-256); n runs of 5 bytes in
// ascending port order: the low byte of the first allocation's first port,
// the allocations' length less one (uint16; an allocation may run past its
// page, but not past port 65535), the owner's index in the owner table (1
// byte), and how many more allocations follow the first (1 byte: each
// starts after the one before ends, and all start in the page); then the
// owner table to the end of the value: each owner as a length byte and its
// bytes, in the order the runs first name them, each owner once. Integers
// are big-endian. The encoding is canonical (runs as long as they can be),
// so equal state gives equal files, and a value that decodes is one the
// encoder writes.
const (
	pageRunSize   = 5
	maxPageRuns   = 256
	maxPageOwners = 256
)

// pageKey is the key of the record holding the allocations of pool whose
// first port is in page.
func pageKey(pool poolKey, page uint8) []byte {
	k := make([]byte, 0, 18)
	k = appendAddr(append(k, byte(pool.proto)), pool.ip)
	return append(k, page)
}

// pageEncoder builds page values; it keeps its owner table between pages
// so that writing many pages allocates only the values.
type pageEncoder struct {
	owners []string
	index  map[string]uint8 // owners by name, once the table is long
	buf    []byte
	run    pageRun
	inRun  bool
}

// pageRun is one run of a page value; next is where an allocation that
// extends it starts.
type pageRun struct {
	first, span, next int
	owner             uint8
	more              int
}

// ownersScanned is how long the owner table is searched in order before
// the encoder indexes it by name.
const ownersScanned = 8

func (e *pageEncoder) ownerIndex(owner string) uint8 {
	if n := len(e.owners); n > 0 && e.owners[n-1] == owner {
		return uint8(n - 1)
	}
	if len(e.owners) <= ownersScanned {
		for i, o := range e.owners {
			if o == owner {
				return uint8(i)
			}
		}
	} else if i, ok := e.index[owner]; ok {
		return i
	}
	i := uint8(len(e.owners))
	e.owners = append(e.owners, owner)
	if len(e.owners) > ownersScanned {
		if e.index == nil {
			e.index = make(map[string]uint8)
		}
		if len(e.index) == 0 {
			for j, o := range e.owners {
				e.index[o] = uint8(j)
			}
		}
		e.index[owner] = i
	}
	return i
}

// begin starts a page value.
func (e *pageEncoder) begin() {
	e.owners = e.owners[:0]
	clear(e.index)
	e.buf = append(e.buf[:0], 0, 0)
	e.inRun = false
}

// add appends an allocation: valid (first <= last, port 0 never), in
// ascending first-port order, all of one page.
func (e *pageEncoder) add(first, last uint16, owner string) {
	span := int(last) - int(first) + 1
	r := &e.run
	// Most allocations extend the run before: no owner lookup for them.
	if e.inRun && int(first) == r.next && span == r.span && owner == e.owners[r.owner] && r.more < 255 {
		r.more++
		r.next += span
		return
	}
	e.flush()
	*r = pageRun{first: int(first), span: span, next: int(first) + span, owner: e.ownerIndex(owner)}
	e.inRun = true
}

func (e *pageEncoder) flush() {
	if !e.inRun {
		return
	}
	r := e.run
	e.buf = append(e.buf, byte(r.first), byte((r.span-1)>>8), byte(r.span-1), r.owner, byte(r.more))
	e.inRun = false
}

// finish returns the value, nil when no allocation was added. The value is
// the caller's: the encoder does not touch it again.
func (e *pageEncoder) finish() []byte {
	e.flush()
	n := (len(e.buf) - 2) / pageRunSize
	if n == 0 {
		return nil
	}
	size := len(e.buf)
	for _, o := range e.owners {
		size += 1 + len(o)
	}
	v := make([]byte, len(e.buf), size)
	copy(v, e.buf)
	binary.BigEndian.PutUint16(v, uint16(n))
	for _, o := range e.owners {
		v = append(append(v, byte(len(o))), o...)
	}
	return v
}

// encodePage encodes the allocations of one page of pool in s, leaving
// out those drop says go (drop may be nil); nil when none is left.
func (e *pageEncoder) encodePage(s *portState, pool *portPool, page uint8, drop func(id allocID, owner string) bool) []byte {
	e.begin()
	pg := pool.pages[page]
	if pg == nil {
		return nil
	}
	base := uint16(page) << 8
	for i := range pg {
		a := &pg[i]
		if a.owner == 0 {
			continue
		}
		first := base | uint16(i)
		owner := s.ownerTab[a.owner].name
		if drop != nil && drop(makeAllocID(pool, first), owner) {
			continue
		}
		e.add(first, a.last, owner)
	}
	return e.finish()
}

// pageName names a page record in messages, by its key's meaning when the
// key has the right shape.
func pageName(k []byte) string {
	if len(k) != 6 && len(k) != 18 {
		return fmt.Sprintf("port record %x", k)
	}
	ip, _ := netip.AddrFromSlice(k[1 : len(k)-1])
	first := uint16(k[len(k)-1]) << 8
	return fmt.Sprintf("port record %s %s", Proto(k[0]), hostPorts(ip, PortRange{first, first | 0xff}))
}

// decodePage checks a whole page record and then calls fn with each of its
// allocations in port order. Whether the allocations make sense (protocol,
// address, range, owner, overlaps) is the caller's to check; here the
// record need only be well formed and canonical, as the encoder writes it.
// A malformed one is an error naming it, never a panic.
func decodePage(k, v []byte, fn func(PortAllocation) error) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: malformed (%s)", pageName(k), fmt.Sprintf(format, args...))
	}
	if len(k) != 6 && len(k) != 18 {
		return bad("key of %d bytes, want 6 or 18", len(k))
	}
	if len(v) < 2 {
		return bad("value of %d bytes", len(v))
	}
	n := int(binary.BigEndian.Uint16(v))
	if n < 1 || n > maxPageRuns {
		return bad("%d runs, want 1-%d", n, maxPageRuns)
	}
	runs := v[2:]
	if len(runs) < n*pageRunSize {
		return bad("%d runs in %d bytes", n, len(runs))
	}
	runs, table := runs[:n*pageRunSize], runs[n*pageRunSize:]
	// The table is read in full first so a run's owner is checked against
	// its real length.
	var spans [maxPageOwners][2]int32
	owners := 0
	for off := 0; off < len(table); {
		l := int(table[off])
		if off+1+l > len(table) {
			return bad("owner %d runs past the end", owners)
		}
		if owners == maxPageOwners {
			return bad("more than %d owners", maxPageOwners)
		}
		spans[owners] = [2]int32{int32(off + 1), int32(off + 1 + l)}
		owners++
		off += 1 + l
	}
	names := make([]string, owners)
	for i := range names {
		names[i] = string(table[spans[i][0]:spans[i][1]])
	}
	if err := uniqueOwners(names); err != nil {
		return bad("%v", err)
	}
	base := int(k[len(k)-1]) << 8
	next := 0 // the index a new owner must have
	var prev pageRun
	for i := 0; i < len(runs); i += pageRunSize {
		r := pageRun{first: int(runs[i]), span: int(binary.BigEndian.Uint16(runs[i+1:])) + 1, owner: runs[i+3], more: int(runs[i+4])}
		lastFirst := r.first + r.more*r.span
		switch o := int(r.owner); {
		case i > 0 && r.first <= prev.next-prev.span:
			return bad("runs out of port order")
		case lastFirst > 0xff:
			return bad("run at %d of %d allocations of %d ports leaves the page", base|r.first, r.more+1, r.span)
		case (base|lastFirst)+r.span-1 > 0xffff:
			return bad("allocation at %d of %d ports runs past port 65535", base|lastFirst, r.span)
		case i > 0 && r.first == prev.next && r.span == prev.span && r.owner == prev.owner:
			return bad("run at %d continues the one before", base|r.first)
		case o >= owners:
			return bad("owner %d of a table of %d", o, owners)
		case o == next:
			next++
		case o > next:
			return bad("owner %d named before owner %d", o, next)
		}
		r.next = lastFirst + r.span
		prev = r
	}
	if next != owners {
		return bad("%d owners in the table, %d named", owners, next)
	}
	ip, _ := netip.AddrFromSlice(k[1 : len(k)-1])
	pa := PortAllocation{Proto: Proto(k[0]), HostIP: ip}
	for i := 0; i < len(runs); i += pageRunSize {
		first, span := base|int(runs[i]), int(binary.BigEndian.Uint16(runs[i+1:]))+1
		pa.Owner = names[runs[i+3]]
		for range int(runs[i+4]) + 1 {
			pa.Ports = PortRange{uint16(first), uint16(first + span - 1)}
			if err := fn(pa); err != nil {
				return err
			}
			first += span
		}
	}
	return nil
}

// uniqueOwners refuses an owner table naming someone twice.
func uniqueOwners(names []string) error {
	if len(names) <= ownersScanned {
		for i, o := range names {
			for _, p := range names[:i] {
				if o == p {
					return fmt.Errorf("owner %q listed twice", o)
				}
			}
		}
		return nil
	}
	seen := make(map[string]bool, len(names))
	for _, o := range names {
		if seen[o] {
			return fmt.Errorf("owner %q listed twice", o)
		}
		seen[o] = true
	}
	return nil
}

// dirtyPages collects the pages an operation changed, so each is written
// once at the end of it.
type dirtyPages struct {
	pools []*portPool
	pages [][4]uint64 // per pool, a bit per page
	last  int         // index of the pool marked last
}

// markID marks the page of allocation id.
func (d *dirtyPages) markID(s *portState, id allocID) { d.mark(s.byID[id>>16], uint16(id)) }

func (d *dirtyPages) mark(pool *portPool, first uint16) {
	i := d.last
	if i >= len(d.pools) || d.pools[i] != pool {
		i = 0
		for i < len(d.pools) && d.pools[i] != pool {
			i++
		}
		if i == len(d.pools) {
			d.pools = append(d.pools, pool)
			d.pages = append(d.pages, [4]uint64{})
		}
		d.last = i
	}
	page := first >> 8
	d.pages[i][page>>6] |= 1 << (page & 63)
}

// write puts each changed page as the in-memory view holds it, less what
// drop says goes, and deletes a page that is left empty.
func (d *dirtyPages) write(tx Tx, s *portState, drop func(id allocID, owner string) bool) error {
	var e pageEncoder
	for i, pool := range d.pools {
		for w, set := range d.pages[i] {
			for ; set != 0; set &= set - 1 {
				page := uint8(w<<6 | bits.TrailingZeros64(set))
				k := pageKey(pool.key, page)
				if v := e.encodePage(s, pool, page, drop); v != nil {
					if err := tx.Put(bucketPorts, k, v); err != nil {
						return err
					}
				} else if err := tx.Delete(bucketPorts, k); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
