package ipam

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// lockTimeout bounds the wait for the file lock, so a second agent on the
// same file fails with a message instead of hanging.
var lockTimeout = 2 * time.Second

// ErrStoreBroken: bbolt panicked or faulted inside a transaction. The
// store refuses every later call instead of touching the file again (a
// panic may leave bbolt's locks held); restart the process.
var ErrStoreBroken = errors.New("state store broken")

// ErrDamaged: the store file cannot be trusted (empty, truncated or
// corrupt). CheckBolt's error says which.
var ErrDamaged = errors.New("damaged")

// BoltStore is a Store in one bbolt file and its log (see stateLog).
// Every Update is in the log, synced, before it returns, which is what
// makes an allocation survive kill -9; bbolt has it shortly after.
type BoltStore struct {
	db *bolt.DB
	// broken holds the first panic's error; once set, nothing reaches db.
	broken atomic.Pointer[error]

	// mu orders transactions: Update holds it to write, View to read,
	// the flusher only to take the fresh layer.
	mu              sync.RWMutex
	log             *stateLog
	lineage, seq    uint64
	fresh, flushing layer
	// flushFailed: the last flush did not commit, so both log files may
	// hold records bbolt lacks.
	flushFailed bool
	// closed: Close has begun. Updates are refused from then: one logged
	// after Close's last flush would go with the log Close removes.
	closed bool
	// flushMu makes flushes one at a time, the flusher's and those of
	// Backup and Close.
	flushMu  sync.Mutex
	wake     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

// initialMmapSize is how much of the state file bbolt maps at open.
const initialMmapSize = 128 << 20

// growStep is how far past its last page the state file grows at a time.
const growStep = 256 << 10

// OpenBolt opens or creates the store file at path. It trusts the file:
// call CheckBolt first on one that may be damaged.
func OpenBolt(path string) (*BoltStore, error) {
	db, err := openBolt(path, &bolt.Options{
		Timeout: lockTimeout,
		// The hashmap freelist stays fast as the file fragments.
		FreelistType: bolt.FreelistMapType,
		// A file that outgrows its mapping is mapped again mid-commit,
		// and bbolt first copies every node the transaction holds out of
		// the old mapping: a quarter of a 60,000-port publish's CPU, and
		// the file grows (and is mapped again) at every doubling. This
		// covers a state file of 60,000 mappings several times over; it
		// is address space only, and the file itself grows as it fills
		// (in steps of growStep).
		InitialMmapSize: initialMmapSize,
		// The freelist is not written at each commit (etcd does the
		// same): on a file of 60,000 mappings it was pages of its own,
		// written and fsynced by every one-port publish. Open rebuilds
		// it from a walk of the pages instead; what a commit makes
		// durable (its pages, then its meta page) is unchanged.
		NoFreelistSync: true,
	})
	if err != nil {
		return nil, err
	}
	// bbolt grows a file mapped past its AllocSize (16 MiB) by that much
	// at a time: every state file would be 16 MiB long, and the checks
	// that read it whole at each start 16 MiB slower.
	db.AllocSize = growStep
	s := &BoltStore{db: db, fresh: make(layer), wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	if err := s.recover(path); err != nil {
		db.Close()
		return nil, err
	}
	go s.flushLoop()
	return s, nil
}

// openBolt is bolt.Open with its panics and memory faults (a damaged file
// read through mmap) turned into errors.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	err = contain(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open ipam store %s: %w: another process holds its lock; stop it or use another file", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open ipam store %s: %w", path, err)
	}
	return db, nil
}

// panicError is a recovered panic or memory fault.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("panicked: %v", p.v) }

// contain runs fn, turning a panic, or a fault reading the mmapped file,
// into a panicError.
func contain(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return fn()
}

// CheckBolt reads the whole file at path without changing it, first by
// its bytes (checkPages) and then through bbolt, and returns
// an error wrapping ErrDamaged, saying what is wrong, when it is empty,
// shorter than its pages, unreadable as bbolt, or fails bbolt's
// consistency check. It never panics.
func CheckBolt(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("check state file: %w", err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%w: empty (0 bytes)", ErrDamaged)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check state file: %w", err)
	}
	defer f.Close()
	// Shared, as bbolt's read-only open takes it: a writer holds it
	// exclusively, and its half-written file is no damage.
	if err := flockShared(f); err != nil {
		return fmt.Errorf("check state file %s: %w", path, err)
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return fmt.Errorf("check state file: %w", err)
	}
	if err := contain(func() error { return checkPages(data) }); err != nil {
		var pe panicError
		if errors.As(err, &pe) {
			return fmt.Errorf("%w: corrupt (reading it %v)", ErrDamaged, pe)
		}
		return err
	}
	// PreLoadFreelist reads the freelist here, under contain, rather than
	// in the goroutine Tx.Check runs in, where a fault cannot be caught.
	db, err := openChecked(path, &bolt.Options{ReadOnly: true, Timeout: lockTimeout, PreLoadFreelist: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	damage := contain(func() error {
		return db.View(func(tx *bolt.Tx) error {
			// Every page Check reads is read here first, where a fault
			// is caught: walk every bucket, key and value.
			if err := walk(tx.Cursor(), tx.Bucket); err != nil {
				return err
			}
			var problems []error
			for err := range tx.Check() {
				problems = append(problems, err)
			}
			if len(problems) > 0 {
				return fmt.Errorf("%w: corrupt (%v; %d problems in all)", ErrDamaged, problems[0], len(problems))
			}
			return nil
		})
	})
	return closeChecked(db, damage)
}

// flockShared takes a shared lock on f, waiting up to lockTimeout.
func flockShared(f *os.File) error {
	deadline := time.Now().Add(lockTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: another process holds its lock; stop it or use another file", bolt.ErrTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openChecked opens a file under check, read-only, and says how it is
// damaged when bbolt cannot open it.
func openChecked(path string, opts *bolt.Options) (*bolt.DB, error) {
	db, err := openBolt(path, opts)
	var pe panicError
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolt.ErrTimeout):
		return nil, err
	case errors.As(err, &pe):
		return nil, fmt.Errorf("%w: corrupt (reading it %v)", ErrDamaged, pe)
	}
	return nil, fmt.Errorf("%w: not a readable bbolt file (%v)", ErrDamaged, errors.Unwrap(err))
}

// closeChecked closes a file under check and returns what the check found.
func closeChecked(db *bolt.DB, damage error) error {
	var pe panicError
	if errors.As(damage, &pe) {
		// A panic may leave bbolt's locks held: do not wait on Close.
		go db.Close()
		return fmt.Errorf("%w: corrupt (reading it %v)", ErrDamaged, pe)
	}
	if err := db.Close(); err != nil && damage == nil {
		return fmt.Errorf("close %s after checking it: %w", db.Path(), err)
	}
	return damage
}

// walk reads every key and value under c, descending into nested buckets.
func walk(c *bolt.Cursor, bucket func([]byte) *bolt.Bucket) error {
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			b := bucket(k)
			if b == nil {
				return fmt.Errorf("%w: corrupt (bucket %q unreadable)", ErrDamaged, k)
			}
			if err := walk(b.Cursor(), b.Bucket); err != nil {
				return err
			}
			continue
		}
		if len(v) > 0 {
			walkSink ^= v[0] ^ v[len(v)-1]
		}
	}
	return nil
}

// walkSink keeps walk's reads of each value's ends from being optimised
// away: they are what faults when a value points past the file.
var walkSink byte

// Path is the file the store lives in.
func (s *BoltStore) Path() string { return s.db.Path() }

// Broken is the error that broke the store, nil while it works.
func (s *BoltStore) Broken() error {
	if b := s.broken.Load(); b != nil {
		return *b
	}
	return nil
}

// Close writes the log into bbolt, removes it, and releases the file and
// its lock; it refuses Updates from its start. A broken store is left
// open: its locks may be held forever, and the process is about to exit
// anyway. So is one whose log could not be written into bbolt (a full
// disk): the next open replays it.
func (s *BoltStore) Close() error {
	if s.Broken() != nil {
		return nil
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if err := s.stopFlusher(); err != nil {
		return err
	}
	if err := s.log.remove(); err != nil {
		return err
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close ipam store %s: %w", s.db.Path(), err)
	}
	return nil
}

// guard runs fn unless the store is broken, and breaks it when fn (bbolt,
// or a caller's function inside a transaction) panics.
func (s *BoltStore) guard(fn func() error) error {
	if err := s.Broken(); err != nil {
		return err
	}
	err := contain(fn)
	var pe panicError
	if errors.As(err, &pe) {
		return s.breakWith(fmt.Errorf("%w: a transaction on %s %v; restart the agent", ErrStoreBroken, s.db.Path(), pe))
	}
	return err
}

// Update implements Store: fn's changes are one record of the log,
// written and synced before Update returns.
func (s *BoltStore) Update(fn func(Tx) error) error {
	return s.guard(func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return fmt.Errorf("update %s: %w: it is being closed (the agent is stopping); retry once it runs again", s.db.Path(), bolt.ErrDatabaseNotOpen)
		}
		tx, err := s.begin(true)
		if err != nil {
			return err
		}
		defer tx.bolt.Rollback()
		if err := fn(tx); err != nil || len(tx.ops) == 0 {
			return err
		}
		if err := s.log.append(appendRecord(nil, s.lineage, s.seq+1, tx.ops)); errors.Is(err, errLogSync) {
			return s.breakWith(fmt.Errorf("%w: %v; restart the agent", ErrStoreBroken, err))
		} else if err != nil {
			return err
		}
		s.seq++
		s.fresh.apply(tx.ops)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return nil
	})
}

// View implements Store.
func (s *BoltStore) View(fn func(Tx) error) error {
	return s.guard(func() error {
		s.mu.RLock()
		defer s.mu.RUnlock()
		tx, err := s.begin(false)
		if err != nil {
			return err
		}
		defer tx.bolt.Rollback()
		return fn(tx)
	})
}

// begin starts a transaction over the layers; the caller holds mu.
func (s *BoltStore) begin(writable bool) (*layeredTx, error) {
	btx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.db.Path(), err)
	}
	return &layeredTx{fresh: s.fresh, flushing: s.flushing, bolt: btx, writable: writable}, nil
}

// breakWith sets the store broken (first error wins) and returns why.
func (s *BoltStore) breakWith(err error) error {
	s.broken.CompareAndSwap(nil, &err)
	return s.Broken()
}

// Backup writes a consistent copy of the store to path (through a
// temporary file and a rename, so path is always a whole copy) and returns
// the transaction id it copied.
func (s *BoltStore) Backup(path string) (txid int, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("create backup of %s: %w", s.Path(), err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := s.flush(); err != nil {
		return 0, err
	}
	err = s.guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			txid = tx.ID()
			_, err := tx.WriteTo(tmp)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", s.Path(), err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("sync backup of %s: %w", s.Path(), err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("close backup of %s: %w", s.Path(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("put backup of %s in place: %w", s.Path(), err)
	}
	return txid, nil
}

// TxID is the id of the last committed transaction: it changes with every
// write, so a backup of the same id is still current.
func (s *BoltStore) TxID() (txid int, err error) {
	if err := s.flush(); err != nil {
		return 0, err
	}
	err = s.guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error { txid = tx.ID(); return nil })
	})
	return txid, err
}
