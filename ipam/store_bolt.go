package ipam

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// lockTimeout bounds the wait for the file lock, so a second agent on the
// same file fails with a message instead of hanging.
var lockTimeout = 2 * time.Second

// BoltStore is a Store in one bbolt file. Every Update is fsynced before it
// returns, which is what makes an allocation survive kill -9.
type BoltStore struct {
	db *bolt.DB
}

// OpenBolt opens or creates the store file at path.
func OpenBolt(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The hashmap freelist stays fast as the file fragments.
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open ipam store %s: %w: another process holds its lock; stop it or use another file", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open ipam store %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Path is the file the store lives in.
func (s *BoltStore) Path() string { return s.db.Path() }

// Close releases the file and its lock.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close ipam store %s: %w", s.db.Path(), err)
	}
	return nil
}

// Update implements Store.
func (s *BoltStore) Update(fn func(Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// View implements Store.
func (s *BoltStore) View(fn func(Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) Get(bucket string, key []byte) []byte {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Get(key)
}

func (t boltTx) Put(bucket string, key, value []byte) error {
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	if err := b.Put(key, value); err != nil {
		return fmt.Errorf("put %x in %s: %w", key, bucket, err)
	}
	return nil
}

func (t boltTx) Delete(bucket string, key []byte) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("delete %x from %s: %w", key, bucket, err)
	}
	return nil
}

func (t boltTx) ForEach(bucket string, fn func(key, value []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.ForEach(fn)
}
