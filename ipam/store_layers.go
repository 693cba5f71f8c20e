package ipam

import (
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A BoltStore transaction reads through layers of changes not yet in
// bbolt, newest first: its own, the log's records the flusher has not
// taken (fresh), those it is writing into bbolt (flushing), then bbolt.

// entry is a key's value in a layer, or its deletion.
type entry struct {
	val []byte
	del bool
}

// layer holds the last change to each key, by bucket.
type layer map[string]map[string]entry

func (l layer) get(bucket string, key []byte) (entry, bool) {
	e, ok := l[bucket][string(key)]
	return e, ok
}

func (l layer) apply(ops []logOp) {
	for _, op := range ops {
		l.set(op.bucket, string(op.key), entry{val: op.val, del: op.del})
	}
}

func (l layer) set(bucket, key string, e entry) {
	b := l[bucket]
	if b == nil {
		b = make(map[string]entry)
		l[bucket] = b
	}
	b[key] = e
}

// writeTo puts the layer's changes into a bbolt transaction.
func (l layer) writeTo(tx *bolt.Tx) error {
	for bucket, keys := range l {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", bucket, err)
		}
		for k, e := range keys {
			if e.del {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), e.val)
			}
			if err != nil {
				return fmt.Errorf("write %x of %s: %w", k, bucket, err)
			}
		}
	}
	return nil
}

// layeredTx is a transaction of a BoltStore. A writable one records its
// changes as ops, which Update logs and hands to the store's fresh layer.
type layeredTx struct {
	own             layer
	fresh, flushing layer
	bolt            *bolt.Tx
	writable        bool
	ops             []logOp
}

func (t *layeredTx) Get(bucket string, key []byte) []byte {
	for _, l := range [...]layer{t.own, t.fresh, t.flushing} {
		if e, ok := l.get(bucket, key); ok {
			if e.del {
				return nil
			}
			return e.val
		}
	}
	if b := t.bolt.Bucket([]byte(bucket)); b != nil {
		return b.Get(key)
	}
	return nil
}

// The limits bbolt would refuse at the flusher's commit, refused here,
// where the caller can still be told.
var errBucketName = errors.New("bucket name required")

func (t *layeredTx) Put(bucket string, key, value []byte) error {
	switch {
	case !t.writable:
		return errReadOnly
	case bucket == "":
		return errBucketName
	case len(key) == 0:
		return fmt.Errorf("put in %s: %w", bucket, bolt.ErrKeyRequired)
	case len(key) > bolt.MaxKeySize:
		return fmt.Errorf("put %x in %s: %w", key[:16], bucket, bolt.ErrKeyTooLarge)
	case len(value) > bolt.MaxValueSize:
		return fmt.Errorf("put %x in %s: %w", key, bucket, bolt.ErrValueTooLarge)
	}
	// The caller may reuse both once the transaction ends; the layers
	// keep them until the flusher has written them.
	t.record(logOp{bucket: bucket, key: slices.Clone(key), val: append(make([]byte, 0, len(value)), value...)})
	return nil
}

func (t *layeredTx) Delete(bucket string, key []byte) error {
	if !t.writable {
		return errReadOnly
	}
	if t.Get(bucket, key) == nil {
		return nil
	}
	t.record(logOp{bucket: bucket, key: slices.Clone(key), del: true})
	return nil
}

func (t *layeredTx) record(op logOp) {
	if t.own == nil {
		t.own = make(layer)
	}
	t.ops = append(t.ops, op)
	t.own.apply(t.ops[len(t.ops)-1:])
}

// ForEach visits bbolt's keys and the layers' in one ordered pass.
func (t *layeredTx) ForEach(bucket string, fn func(key, value []byte) error) error {
	changed := make(map[string]entry)
	for _, l := range [...]layer{t.flushing, t.fresh, t.own} {
		for k, e := range l[bucket] {
			changed[k] = e
		}
	}
	keys := make([]string, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var bk, bv []byte
	var c *bolt.Cursor
	if b := t.bolt.Bucket([]byte(bucket)); b != nil {
		c = b.Cursor()
		bk, bv = c.First()
	}
	for bk != nil || len(keys) > 0 {
		if len(keys) == 0 || (bk != nil && string(bk) < keys[0]) {
			if err := fn(bk, bv); err != nil {
				return err
			}
			bk, bv = c.Next()
			continue
		}
		k := keys[0]
		keys = keys[1:]
		if bk != nil && string(bk) == k {
			bk, bv = c.Next()
		}
		if e := changed[k]; !e.del {
			if err := fn([]byte(k), e.val); err != nil {
				return err
			}
		}
	}
	return nil
}
