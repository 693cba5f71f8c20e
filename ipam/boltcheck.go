package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// bbolt's on-disk layout (go.etcd.io/bbolt/internal/common), read here
// from the file's bytes so that nothing reaches bbolt, whose reader trusts
// every offset, before every page it would follow is known to be in the
// file and shaped as its parent says.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	elementSize      = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	metaSize         = 64 // magic, version, pageSize, flags u32; root, seq, freelist, pgid, txid, checksum u64
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	noFreelist       = ^uint64(0)
	maxTreeDepth     = 64
)

var le = binary.LittleEndian

// boltMeta is the part of a meta page the walk needs.
type boltMeta struct {
	pageSize                   int
	root, freelist, pgid, txid uint64
}

// readMeta reads the meta page at off, nil when it does not validate.
func readMeta(data []byte, off int) *boltMeta {
	if off+pageHeaderSize+metaSize > len(data) {
		return nil
	}
	m := data[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	h := fnv.New64a()
	h.Write(m[:56])
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion || le.Uint64(m[56:]) != h.Sum64() {
		return nil
	}
	return &boltMeta{pageSize: int(le.Uint32(m[8:])), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
}

// checkPages walks the tree bbolt would read, as bbolt picks its meta
// page (the valid one with the higher transaction id). Its errors wrap
// ErrDamaged and say what is wrong.
func checkPages(data []byte) error {
	m0 := readMeta(data, 0)
	ps := 4096
	if m0 != nil {
		ps = m0.pageSize
	}
	m1 := readMeta(data, ps)
	m := m0
	if m == nil || (m1 != nil && m1.txid > m0.txid) {
		m = m1
	}
	if m == nil || m.pageSize < 1024 || m.pageSize > 1<<16 {
		return fmt.Errorf("%w: not a readable bbolt file (neither meta page is valid)", ErrDamaged)
	}
	if need := m.pgid * uint64(m.pageSize); uint64(len(data)) < need {
		return fmt.Errorf("%w: truncated (%d bytes; its pages reach %d)", ErrDamaged, len(data), need)
	}
	c := &pageChecker{data: data, ps: uint64(m.pageSize), pgid: m.pgid, reached: map[uint64]bool{}}
	if err := c.tree(m.root, 0); err != nil {
		return fmt.Errorf("%w: corrupt (%v)", ErrDamaged, err)
	}
	if m.freelist != noFreelist {
		if err := c.freelist(m.freelist); err != nil {
			return fmt.Errorf("%w: corrupt (%v)", ErrDamaged, err)
		}
	}
	return nil
}

type pageChecker struct {
	data    []byte
	ps      uint64
	pgid    uint64
	reached map[uint64]bool
}

// page returns page id with its overflow pages, once every id is in range.
func (c *pageChecker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= c.pgid {
		return nil, fmt.Errorf("page %d: outside pages 2-%d", id, c.pgid-1)
	}
	off := id * c.ps
	overflow := uint64(le.Uint32(c.data[off+12:]))
	if id+overflow >= c.pgid {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the last page %d", id, overflow, c.pgid-1)
	}
	for i := id; i <= id+overflow; i++ {
		if c.reached[i] {
			return nil, fmt.Errorf("page %d: reached twice", i)
		}
		c.reached[i] = true
	}
	return c.data[off : (id+overflow+1)*c.ps], nil
}

func (c *pageChecker) tree(id uint64, depth int) error {
	if depth > maxTreeDepth {
		return errors.New("tree deeper than any bbolt writes")
	}
	p, err := c.page(id)
	if err != nil {
		return err
	}
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	switch flags {
	case branchPageFlag:
		if count == 0 || pageHeaderSize+count*elementSize > len(p) {
			return fmt.Errorf("page %d: %d branch elements do not fit", id, count)
		}
		for i := range count {
			el := pageHeaderSize + i*elementSize
			end := uint64(el) + uint64(le.Uint32(p[el:])) + uint64(le.Uint32(p[el+4:]))
			if end > uint64(len(p)) {
				return fmt.Errorf("page %d: branch key %d runs off the page", id, i)
			}
			if err := c.tree(le.Uint64(p[el+8:]), depth+1); err != nil {
				return err
			}
		}
		return nil
	case leafPageFlag:
		return c.leaf(p, id, depth)
	}
	return fmt.Errorf("page %d: type %#x where a branch or leaf page belongs", id, flags)
}

// leaf checks a leaf page, or an inline bucket's page (id 0), and the
// buckets its elements hold.
func (c *pageChecker) leaf(p []byte, id uint64, depth int) error {
	if len(p) < pageHeaderSize || le.Uint16(p[8:]) != leafPageFlag {
		return fmt.Errorf("page %d: not a leaf page", id)
	}
	count := int(le.Uint16(p[10:]))
	if pageHeaderSize+count*elementSize > len(p) {
		return fmt.Errorf("page %d: %d leaf elements do not fit", id, count)
	}
	for i := range count {
		el := pageHeaderSize + i*elementSize
		start := uint64(el) + uint64(le.Uint32(p[el+4:])) + uint64(le.Uint32(p[el+8:]))
		end := start + uint64(le.Uint32(p[el+12:]))
		if end > uint64(len(p)) {
			return fmt.Errorf("page %d: value %d runs off the page", id, i)
		}
		if le.Uint32(p[el:])&bucketLeafFlag == 0 {
			continue
		}
		v := p[start:end]
		if len(v) < 16 {
			return fmt.Errorf("page %d: bucket %d has a short header", id, i)
		}
		if depth >= maxTreeDepth {
			return errors.New("buckets nested deeper than any bbolt writes")
		}
		var err error
		if root := le.Uint64(v); root == 0 {
			err = c.leaf(v[16:], 0, depth+1)
		} else {
			err = c.tree(root, depth+1)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *pageChecker) freelist(id uint64) error {
	p, err := c.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %v", err)
	}
	if le.Uint16(p[8:]) != freelistPageFlag {
		return fmt.Errorf("freelist page %d: type %#x", id, le.Uint16(p[8:]))
	}
	idx, count := uint64(pageHeaderSize), uint64(le.Uint16(p[10:]))
	if count == 0xFFFF {
		count, idx = le.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > uint64(len(p)) || idx+count*8 > uint64(len(p)) {
		return fmt.Errorf("freelist page %d: %d ids do not fit", id, count)
	}
	for i := range count {
		free := le.Uint64(p[idx+i*8:])
		if free < 2 || free >= c.pgid {
			return fmt.Errorf("freelist page %d: free page %d outside pages 2-%d", id, free, c.pgid-1)
		}
		if c.reached[free] {
			return fmt.Errorf("page %d: in use and free", free)
		}
	}
	return nil
}
