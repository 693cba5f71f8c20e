package ipam

import (
	"errors"
	"slices"
	"sync"
)

var errReadOnly = errors.New("write in a read-only transaction")

// MemStore is a Store in memory, for tests and for callers that want no
// persistence. Transactions are serialised; a failed Update is undone.
type MemStore struct {
	mu      sync.RWMutex
	buckets map[string]map[string][]byte
	undo    []undoEntry
	// The transactions are fields so handing one out allocates nothing.
	rtx, wtx memTx
}

type undoEntry struct {
	bucket, key string
	old         []byte
	existed     bool
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	s := &MemStore{buckets: make(map[string]map[string][]byte)}
	s.rtx, s.wtx = memTx{s: s}, memTx{s: s, writable: true}
	return s
}

// Update implements Store.
func (s *MemStore) Update(fn func(Tx) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.undo = s.undo[:0]
	committed := false
	// A panic inside fn must not leave half a transaction behind.
	defer func() {
		if !committed {
			s.rollback()
		}
	}()
	if err := fn(&s.wtx); err != nil {
		return err
	}
	committed = true
	return nil
}

// View implements Store.
func (s *MemStore) View(fn func(Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn(&s.rtx)
}

func (s *MemStore) rollback() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		u := s.undo[i]
		if u.existed {
			s.buckets[u.bucket][u.key] = u.old
		} else {
			delete(s.buckets[u.bucket], u.key)
		}
	}
	s.undo = s.undo[:0]
}

type memTx struct {
	s        *MemStore
	writable bool
}

func (t *memTx) Get(bucket string, key []byte) []byte {
	return t.s.buckets[bucket][string(key)]
}

func (t *memTx) Put(bucket string, key, value []byte) error {
	if !t.writable {
		return errReadOnly
	}
	b := t.s.buckets[bucket]
	if b == nil {
		b = make(map[string][]byte)
		t.s.buckets[bucket] = b
	}
	k := string(key)
	old, ok := b[k]
	t.s.undo = append(t.s.undo, undoEntry{bucket: bucket, key: k, old: old, existed: ok})
	b[k] = append([]byte{}, value...)
	return nil
}

func (t *memTx) Delete(bucket string, key []byte) error {
	if !t.writable {
		return errReadOnly
	}
	b := t.s.buckets[bucket]
	old, ok := b[string(key)]
	if !ok {
		return nil
	}
	k := string(key)
	t.s.undo = append(t.s.undo, undoEntry{bucket: bucket, key: k, old: old, existed: true})
	delete(b, k)
	return nil
}

func (t *memTx) ForEach(bucket string, fn func(key, value []byte) error) error {
	b := t.s.buckets[bucket]
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn([]byte(k), b[k]); err != nil {
			return err
		}
	}
	return nil
}
