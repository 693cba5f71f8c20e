package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The state log makes an Update durable with one write and one fdatasync
// of a file whose blocks already exist, where a bbolt commit costs several
// page writes and two fdatasyncs (pages, then meta page). bbolt still
// holds the whole state: a flusher commits the logged changes into it
// behind the requests, as etcd does with its WAL and backend. The log is
// two files used in turns: while the flusher writes one turn's records
// into bbolt, new records go to the other file, and a file is only written
// again from its start once bbolt holds all of its records.

// A record is a header and the transaction's operations:
//
//	magic u32 | crc32c u32 of what follows | lineage u64 | seq u64 | size u32 | ops
//
// each op being kind (1 put, 2 delete), then uvarint-prefixed bucket, key
// and, for a put, value. The lineage is a random number kept in the bbolt
// file: records of another file (one rebuilt, say) never apply to it.
// Sequence numbers count up by one, so a record left from an earlier turn
// never continues the chain of a newer one.
const (
	logMagic      = 0x50574c31 // "PWL1"
	logHeaderSize = 28
	opPut         = 1
	opDelete      = 2
)

// logPrealloc is how much of each log file is written with zeros when it
// is made: appends inside it overwrite blocks the file already has, which
// fdatasync makes durable without a journal commit (twice as fast here).
// A turn of one-port requests takes a few KiB; bigger ones grow the file.
const logPrealloc = 256 << 10

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// logOp is one Put or Delete of a transaction.
type logOp struct {
	bucket   string
	key, val []byte
	del      bool
}

// logRecord is one decoded record: a committed transaction.
type logRecord struct {
	seq uint64
	ops []logOp
}

// appendRecord encodes a transaction's ops as record seq of lineage.
func appendRecord(b []byte, lineage, seq uint64, ops []logOp) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, logMagic)
	b = append(b, 0, 0, 0, 0) // crc, below
	b = binary.LittleEndian.AppendUint64(b, lineage)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = append(b, 0, 0, 0, 0) // size, below
	for _, op := range ops {
		kind := byte(opPut)
		if op.del {
			kind = opDelete
		}
		b = append(b, kind)
		b = binary.AppendUvarint(b, uint64(len(op.bucket)))
		b = append(b, op.bucket...)
		b = binary.AppendUvarint(b, uint64(len(op.key)))
		b = append(b, op.key...)
		if !op.del {
			b = binary.AppendUvarint(b, uint64(len(op.val)))
			b = append(b, op.val...)
		}
	}
	rec := b[start:]
	binary.LittleEndian.PutUint32(rec[24:], uint32(len(rec)-logHeaderSize))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], crc32c))
	return b
}

// errNoRecord: what is at this offset is not a whole record (zeros, a
// torn write, or the remains of an older one).
var errNoRecord = errors.New("no record")

// decodeRecord reads the record at the start of b, returning its lineage
// and its length in b. Its ops' slices point into b.
func decodeRecord(b []byte) (lineage uint64, rec logRecord, n int, err error) {
	if len(b) < logHeaderSize || binary.LittleEndian.Uint32(b) != logMagic {
		return 0, rec, 0, errNoRecord
	}
	size := uint64(binary.LittleEndian.Uint32(b[24:]))
	if size > uint64(len(b)-logHeaderSize) {
		return 0, rec, 0, errNoRecord
	}
	n = logHeaderSize + int(size)
	if crc32.Checksum(b[8:n], crc32c) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, rec, 0, errNoRecord
	}
	lineage = binary.LittleEndian.Uint64(b[8:])
	rec.seq = binary.LittleEndian.Uint64(b[16:])
	ops := b[logHeaderSize:n]
	for len(ops) > 0 {
		var op logOp
		kind := ops[0]
		ops = ops[1:]
		var bucket []byte
		if bucket, ops, err = cutField(ops); err != nil {
			return 0, rec, 0, err
		}
		op.bucket = string(bucket)
		if op.key, ops, err = cutField(ops); err != nil {
			return 0, rec, 0, err
		}
		switch kind {
		case opPut:
			if op.val, ops, err = cutField(ops); err != nil {
				return 0, rec, 0, err
			}
		case opDelete:
			op.del = true
		default:
			return 0, rec, 0, fmt.Errorf("%w: operation %d", errNoRecord, kind)
		}
		rec.ops = append(rec.ops, op)
	}
	return lineage, rec, n, nil
}

// cutField splits a uvarint-prefixed field off the front of b.
func cutField(b []byte) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("%w: field overruns the record", errNoRecord)
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// readChain decodes the records of one lineage at the start of a log
// file, stopping at the first that is not whole or does not follow the
// one before it.
func readChain(data []byte, lineage uint64) []logRecord {
	var chain []logRecord
	for len(data) > 0 {
		lin, rec, n, err := decodeRecord(data)
		if err != nil || lin != lineage || (len(chain) > 0 && rec.seq != chain[len(chain)-1].seq+1) {
			break
		}
		chain = append(chain, rec)
		data = data[n:]
	}
	return chain
}

// stateLog is the two files of a store's log.
type stateLog struct {
	files  [2]*os.File
	active int   // the file records go to
	off    int64 // where the next record goes in it
	// noSync skips the fdatasync, for tests of logic, not durability.
	noSync bool
}

// logPaths are the log files of the state file at path.
func logPaths(path string) [2]string {
	return [2]string{path + ".log0", path + ".log1"}
}

// openLog opens (making and zero-filling, as needed) the log files of the
// state file at path, and returns what each held.
func openLog(path string) (*stateLog, [2][]byte, error) {
	l := &stateLog{}
	var held [2][]byte
	made := false
	for i, p := range logPaths(path) {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			l.close()
			return nil, held, fmt.Errorf("open state log: %w", err)
		}
		l.files[i] = f
		if held[i], err = os.ReadFile(p); err != nil {
			l.close()
			return nil, held, fmt.Errorf("read state log: %w", err)
		}
		if len(held[i]) < logPrealloc {
			made = true
			// Only a speed-up: on a full disk the log grows as it is
			// written, and a write that finds no room fails its request.
			if _, err := f.WriteAt(make([]byte, logPrealloc-len(held[i])), int64(len(held[i]))); err == nil {
				f.Sync()
			}
		}
	}
	if made {
		if err := syncDir(filepath.Dir(path)); err != nil {
			l.close()
			return nil, held, err
		}
	}
	return l, held, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// errLogSync: a record was written but could not be made durable. After
// a failed fdatasync the kernel may have dropped the pages it could not
// write, so nothing after can be trusted.
var errLogSync = errors.New("sync the state log")

// append writes rec after the active file's last record and makes it
// durable before returning. A write that fails (a full disk) leaves no
// record: the next one is written over whatever part of it got there.
func (l *stateLog) append(rec []byte) error {
	f := l.files[l.active]
	if _, err := f.WriteAt(rec, l.off); err != nil {
		return err
	}
	if !l.noSync {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("%w %s: %w", errLogSync, f.Name(), err)
		}
	}
	l.off += int64(len(rec))
	return nil
}

// turn sends the next records to the other file, from its start: the
// caller has every record of that file in bbolt.
func (l *stateLog) turn() {
	l.active ^= 1
	l.off = 0
}

func (l *stateLog) close() {
	for _, f := range l.files {
		if f != nil {
			f.Close()
		}
	}
}

// remove closes and deletes the files, once bbolt holds every record.
func (l *stateLog) remove() error {
	l.close()
	for _, f := range l.files {
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove state log: %w", err)
		}
	}
	return nil
}
