package ipam

// Store keeps the allocator's state as named buckets of key/value pairs.
// Each allocator operation is exactly one Update, so after a crash an
// operation is either wholly in the store or not at all.
type Store interface {
	// Update runs fn in one read-write transaction and commits when fn
	// returns nil; an error from fn discards every change fn made.
	Update(fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
}

// Tx is one transaction. Slices it returns are valid only until the
// transaction ends, and values passed to Put must not change before then.
type Tx interface {
	// Get returns nil when the bucket or key is missing.
	Get(bucket string, key []byte) []byte
	// Put creates the bucket on first use.
	Put(bucket string, key, value []byte) error
	// Delete of a missing key is not an error.
	Delete(bucket string, key []byte) error
	// ForEach visits the bucket in key order; fn must not change the bucket.
	ForEach(bucket string, fn func(key, value []byte) error) error
}
