package ipam

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketLog holds, in bbolt, the store's lineage and the last log record
// bbolt has (applied).
const bucketLog = "state-log"

var (
	keyLineage = []byte("lineage")
	keyApplied = []byte("applied")
)

// flushDelay gathers a burst of Updates into one bbolt commit, rather
// than one commit (two fdatasyncs of its own) behind each.
var flushDelay = 5 * time.Millisecond

// recover opens the log of the state file at path and writes into bbolt
// the records it has that bbolt lacks: those of a process killed before
// its flusher wrote them.
func (s *BoltStore) recover(path string) error {
	var lineage, applied uint64
	err := contain(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket([]byte(bucketLog)); b != nil {
				lineage, applied = getUint64(b, keyLineage), getUint64(b, keyApplied)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read the log position of %s: %w", path, err)
	}
	log, held, err := openLog(path)
	if err != nil {
		return err
	}
	fresh := lineage == 0
	if fresh {
		// A file without one: new, or written before the log existed.
		var b [8]byte
		for lineage == 0 {
			rand.Read(b[:])
			lineage = binary.LittleEndian.Uint64(b[:])
		}
	}
	var records []logRecord
	if !fresh {
		records = append(readChain(held[0], lineage), readChain(held[1], lineage)...)
	}
	slices.SortStableFunc(records, func(a, b logRecord) int { return cmp.Compare(a.seq, b.seq) })
	// Replay the records that follow bbolt's without a gap. The log
	// position moves past every record seen, so one left from an older
	// turn (or from before a backup was restored) can never be taken for
	// a newer one.
	replay, seen := make(layer), applied
	next := applied + 1
	for _, r := range records {
		if r.seq == next {
			replay.apply(r.ops)
			next++
		}
		seen = max(seen, r.seq)
	}
	if fresh || len(replay) > 0 || seen > applied {
		err = contain(func() error {
			return s.db.Update(func(tx *bolt.Tx) error {
				if err := replay.writeTo(tx); err != nil {
					return err
				}
				return putLogPosition(tx, lineage, seen)
			})
		})
		if err != nil {
			log.close()
			return fmt.Errorf("write the state log into %s: %w", path, err)
		}
	}
	s.log, s.lineage, s.seq = log, lineage, seen
	return nil
}

func getUint64(b *bolt.Bucket, key []byte) uint64 {
	if v := b.Get(key); len(v) == 8 {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func putLogPosition(tx *bolt.Tx, lineage, applied uint64) error {
	b, err := tx.CreateBucketIfNotExists([]byte(bucketLog))
	if err != nil {
		return err
	}
	if err := b.Put(keyLineage, binary.LittleEndian.AppendUint64(nil, lineage)); err != nil {
		return err
	}
	return b.Put(keyApplied, binary.LittleEndian.AppendUint64(nil, applied))
}

// flushRetry spaces the attempts of a flush that failed (a full disk).
var flushRetry = time.Second

// flushLoop writes the log's records into bbolt shortly after they come,
// and again until it can while a flush fails.
func (s *BoltStore) flushLoop() {
	defer close(s.stopped)
	var retry <-chan time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-retry:
		}
		select {
		case <-s.stop:
			return
		case <-time.After(flushDelay):
		}
		retry = nil
		if err := s.flush(); s.Broken() != nil {
			return
		} else if err != nil {
			retry = time.After(flushRetry)
		}
	}
}

// stopFlusher ends flushLoop and writes what is left into bbolt.
func (s *BoltStore) stopFlusher() error {
	s.stopOnce.Do(func() {
		close(s.stop)
		<-s.stopped
	})
	return s.flush()
}

// flush commits every record logged so far into bbolt, with the log
// position, and sends later records to the other log file. When the
// commit fails (a full disk), the records stay in the log and in the
// layers, for the next flush, and no file is written over until one
// succeeds: the file the records would go to may hold some of them.
func (s *BoltStore) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if err := s.Broken(); err != nil {
		return err
	}
	s.mu.Lock()
	if len(s.fresh) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.flushing, s.fresh = s.fresh, make(layer)
	upTo := s.seq
	if !s.flushFailed {
		s.log.turn()
	}
	s.mu.Unlock()
	err := contain(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			if err := s.flushing.writeTo(tx); err != nil {
				return err
			}
			return putLogPosition(tx, s.lineage, upTo)
		})
	})
	var pe panicError
	if errors.As(err, &pe) {
		return s.breakWith(fmt.Errorf("%w: writing the state log into %s %v; restart the agent", ErrStoreBroken, s.db.Path(), pe))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		// Newer changes win over those that were being flushed.
		for bucket, keys := range s.fresh {
			for k, e := range keys {
				s.flushing.set(bucket, k, e)
			}
		}
		s.fresh, s.flushing = s.flushing, nil
		s.flushFailed = true
		return fmt.Errorf("write the state log into %s: %w", s.db.Path(), err)
	}
	s.flushing = nil
	s.flushFailed = false
	return nil
}
