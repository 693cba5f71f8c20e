package ipam

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pontoon-net/pontoon/loader/testenv"
)

// crash leaves s as kill -9 would: its flusher stopped without writing
// what it had not, its files closed as they are.
func crash(s *BoltStore) {
	s.stopOnce.Do(func() {
		close(s.stop)
		<-s.stopped
	})
	s.log.close()
	s.db.Close()
}

// noFlusher keeps the log's records out of bbolt until a test flushes.
func noFlusher(t *testing.T) {
	old := flushDelay
	flushDelay = time.Hour
	t.Cleanup(func() { flushDelay = old })
}

func put(t *testing.T, s Store, bucket, key, val string) {
	t.Helper()
	if err := s.Update(func(tx Tx) error { return tx.Put(bucket, []byte(key), []byte(val)) }); err != nil {
		t.Fatal(err)
	}
}

// inBolt is what bbolt itself holds of a bucket, layers aside.
func inBolt(t *testing.T, s *BoltStore, bucket string) string {
	t.Helper()
	var b strings.Builder
	s.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(bucket)); bk != nil {
			bk.ForEach(func(k, v []byte) error {
				b.WriteString(bucket + "/" + string(k) + "=" + string(v) + ";")
				return nil
			})
		}
		return nil
	})
	return b.String()
}

// mustOpen opens a store the test closes or crashes itself.
func mustOpen(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reopen(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatalf("reopen after a crash: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestLogReplaysUnflushed: an Update that returned is in the store after
// a crash that came before bbolt had it; one that failed is not.
func TestLogReplaysUnflushed(t *testing.T) {
	noFlusher(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "a", "1")
	put(t, s, "x", "b", "2")
	put(t, s, "y", "c", "3")
	if err := s.Update(func(tx Tx) error { return tx.Delete("x", []byte("a")) }); err != nil {
		t.Fatal(err)
	}
	s.Update(func(tx Tx) error {
		tx.Put("x", []byte("failed"), []byte("9"))
		return errors.New("refused")
	})
	if got := dumpAll(t, s, "x", "y"); got != "x/b=2;y/c=3;" {
		t.Fatalf("store holds %q before the crash, want x/b=2;y/c=3;", got)
	}
	if got := inBolt(t, s, "x"); got != "" {
		t.Fatalf("bbolt already holds %q: the test needs the records only in the log", got)
	}
	crash(s)
	s = reopen(t, path)
	if got := dumpAll(t, s, "x", "y"); got != "x/b=2;y/c=3;" {
		t.Errorf("after the crash the store holds %q, want x/b=2;y/c=3;", got)
	}
	if got := inBolt(t, s, "x") + inBolt(t, s, "y"); got != "x/b=2;y/c=3;" {
		t.Errorf("after replay bbolt holds %q, want x/b=2;y/c=3;", got)
	}
}

// TestLogTornTail: a record cut short by the crash (its Update never
// returned) is left out; the records before it are replayed.
func TestLogTornTail(t *testing.T) {
	noFlusher(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "a", "1")
	put(t, s, "x", "b", "2")
	end := s.log.off
	crash(s)
	// Tear the last record: its final byte never reached the disk.
	f, err := os.OpenFile(logPaths(path)[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0x5a}, end-1)
	f.Close()
	s = reopen(t, path)
	if got := dumpAll(t, s, "x"); got != "x/a=1;" {
		t.Errorf("after a torn last record the store holds %q, want x/a=1;", got)
	}
	// The torn record never decoded, so the next one takes its number:
	// it must replay all the same.
	put(t, s, "x", "c", "3")
	crash(s)
	s = reopen(t, path)
	if got := dumpAll(t, s, "x"); got != "x/a=1;x/c=3;" {
		t.Errorf("after a second crash the store holds %q, want x/a=1;x/c=3;", got)
	}
}

// TestLogOfAnotherFileIgnored: log files left next to a state file that
// replaced the one they belong to (a rebuilt one) are not replayed into it.
func TestLogOfAnotherFileIgnored(t *testing.T) {
	noFlusher(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "old", "1")
	crash(s)
	other := filepath.Join(dir, "other.db")
	o := mustOpen(t, other)
	put(t, o, "x", "new", "2")
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	if got := dumpAll(t, s, "x"); got != "x/new=2;" {
		t.Errorf("the replaced file holds %q after open, want only its own x/new=2;", got)
	}
}

// TestLogRestoredCopy: a copy saved by Backup, put back after a crash,
// gets the log's records that follow it; records it already holds are
// not applied again over it.
func TestLogRestoredCopy(t *testing.T) {
	noFlusher(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "k", "1")
	put(t, s, "x", "k", "2")
	backup := filepath.Join(dir, "copy.db")
	if _, err := s.Backup(backup); err != nil {
		t.Fatal(err)
	}
	put(t, s, "x", "k", "3")
	put(t, s, "x", "later", "4")
	crash(s)
	if err := os.Rename(backup, path); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	if got := dumpAll(t, s, "x"); got != "x/k=3;x/later=4;" {
		t.Errorf("restored copy holds %q after open, want the log's later records on it: x/k=3;x/later=4;", got)
	}
}

// TestLogCloseRemovesFiles: a store closed cleanly has everything in
// bbolt and leaves no log behind.
func TestLogCloseRemovesFiles(t *testing.T) {
	noFlusher(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "k", "v")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range logPaths(path) {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Close: %v, want it removed", p, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("x")).Get([]byte("k")); string(v) != "v" {
			t.Errorf("bbolt holds %q after Close, want v", v)
		}
		return nil
	})
}

// midFlush runs flush (one that writes the log into bbolt) until it has
// taken the records it will commit, and keeps it from committing them
// (by holding bbolt's writer lock) until finish, which returns its error.
func midFlush(t *testing.T, s *BoltStore, flush func() error) (finish func() error) {
	t.Helper()
	btx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- flush() }()
	for taken := false; !taken; {
		time.Sleep(time.Millisecond)
		s.mu.RLock()
		taken = s.flushing != nil
		s.mu.RUnlock()
	}
	return func() error {
		btx.Rollback()
		return <-done
	}
}

// TestLogUpdateDuringClose: an Update that comes while Close writes the
// log into bbolt (as a request the API server's shutdown timed out on
// may) is either refused or in the file after Close. Close removes the
// log, so one answered after its last flush took the records is lost.
func TestLogUpdateDuringClose(t *testing.T) {
	noFlusher(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "a", "1")
	finish := midFlush(t, s, s.Close)
	errUpdate := s.Update(func(tx Tx) error { return tx.Put("x", []byte("b"), []byte("2")) })
	if err := finish(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path)
	want := "x/a=1;x/b=2;"
	if errUpdate != nil {
		want = "x/a=1;"
	}
	if got := dumpAll(t, s, "x"); got != want {
		t.Errorf("Update during Close returned %v, and the store holds %q after reopening, want %q", errUpdate, got, want)
	}
}

// TestLogCrashMidFlush: kill -9 while a flush commits, after the records
// that came meanwhile went to the other log file: bbolt has neither
// file's records, and both are replayed, the newer over the older.
func TestLogCrashMidFlush(t *testing.T) {
	noFlusher(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "a", "1")
	put(t, s, "x", "k", "old")
	finish := midFlush(t, s, s.flush)
	put(t, s, "x", "k", "new")
	put(t, s, "x", "b", "2")
	if s.log.active != 1 {
		t.Fatalf("records during the flush went to log file %d, want the other one (1)", s.log.active)
	}
	// The files now are what kill -9 would leave: every record synced,
	// bbolt's commit not begun.
	saved := filepath.Join(t.TempDir(), "state.db")
	logs, savedLogs := logPaths(path), logPaths(saved)
	src := []string{path, logs[0], logs[1]}
	dst := []string{saved, savedLogs[0], savedLogs[1]}
	for i := range src {
		b, err := os.ReadFile(src[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst[i], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := finish(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, saved)
	if got := dumpAll(t, s, "x"); got != "x/a=1;x/b=2;x/k=new;" {
		t.Errorf("after a crash mid-flush the store holds %q, want x/a=1;x/b=2;x/k=new;", got)
	}
}

// TestBoltMatchesMemStore runs the same random transactions, flushes and
// crashes against a BoltStore and a MemStore: after each step both hold
// the same keys, and every key reads the same.
func TestBoltMatchesMemStore(t *testing.T) {
	noFlusher(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	defer func() { s.Close() }()
	m := NewMemStore()
	rng := rand.New(rand.NewPCG(1, 2))
	buckets := []string{"p", "q"}
	keys := make([]string, 12)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
	}
	errRefused := errors.New("refused")
	for step := range 600 {
		switch r := rng.IntN(20); {
		case r == 0:
			if err := s.flush(); err != nil {
				t.Fatal(err)
			}
		case r == 1:
			crash(s)
			s = mustOpen(t, path)
		default:
			n := 1 + rng.IntN(4)
			fail := rng.IntN(6) == 0
			ops := make([]logOp, n)
			for i := range ops {
				ops[i] = logOp{bucket: buckets[rng.IntN(2)], key: []byte(keys[rng.IntN(len(keys))]), val: []byte(fmt.Sprint(step, i)), del: rng.IntN(3) == 0}
			}
			txn := func(tx Tx) error {
				for _, op := range ops {
					if op.del {
						tx.Delete(op.bucket, op.key)
					} else {
						tx.Put(op.bucket, op.key, op.val)
					}
				}
				if fail {
					return errRefused
				}
				return nil
			}
			errS, errM := s.Update(txn), m.Update(txn)
			if (errS == nil) != (errM == nil) {
				t.Fatalf("step %d: bolt %v, mem %v", step, errS, errM)
			}
		}
		want, got := dumpAll(t, m, buckets...), dumpAll(t, s, buckets...)
		if got != want {
			t.Fatalf("step %d: bolt store holds\n%s\nmemory store holds\n%s", step, got, want)
		}
		s.View(func(tx Tx) error {
			for _, b := range buckets {
				for _, k := range keys {
					var mv []byte
					m.View(func(mtx Tx) error { mv = slices.Clone(mtx.Get(b, []byte(k))); return nil })
					if v := tx.Get(b, []byte(k)); !bytes.Equal(v, mv) {
						t.Fatalf("step %d: %s/%s reads %q, memory store %q", step, b, k, v, mv)
					}
				}
			}
			return nil
		})
	}
}

func TestLogRecordRoundTrip(t *testing.T) {
	ops := []logOp{
		{bucket: "ports", key: []byte{1, 2}, val: bytes.Repeat([]byte{7}, 300)},
		{bucket: "ports", key: []byte("gone"), del: true},
		{bucket: "e", key: []byte("k"), val: []byte{}},
	}
	b := appendRecord([]byte("prefix"), 42, 7, ops)
	lineage, rec, n, err := decodeRecord(b[len("prefix"):])
	if err != nil || lineage != 42 || rec.seq != 7 || n != len(b)-len("prefix") {
		t.Fatalf("decode: lineage %d seq %d length %d err %v; want 42 7 %d nil", lineage, rec.seq, n, err, len(b)-len("prefix"))
	}
	if len(rec.ops) != len(ops) {
		t.Fatalf("decoded %d ops, want %d", len(rec.ops), len(ops))
	}
	for i, op := range rec.ops {
		if op.bucket != ops[i].bucket || !bytes.Equal(op.key, ops[i].key) || !bytes.Equal(op.val, ops[i].val) || op.del != ops[i].del {
			t.Errorf("op %d: %+v, want %+v", i, op, ops[i])
		}
	}
	// Every byte matters: a flipped one anywhere is no record.
	for i := range n {
		bad := slices.Clone(b[len("prefix"):])
		bad[i] ^= 0x10
		if _, _, _, err := decodeRecord(bad); err == nil {
			t.Errorf("record with byte %d flipped decoded", i)
		}
	}
}

func FuzzLogRecord(f *testing.F) {
	f.Add(appendRecord(nil, 1, 1, []logOp{{bucket: "b", key: []byte("k"), val: []byte("v")}}))
	f.Add(appendRecord(nil, 9, 3, []logOp{{bucket: "b", key: []byte("k"), del: true}}))
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		lineage, rec, n, err := decodeRecord(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("record length %d past the %d bytes given", n, len(b))
		}
		// What decodes encodes back to the same bytes.
		if again := appendRecord(nil, lineage, rec.seq, rec.ops); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded record differs:\n%x\n%x", again, b[:n])
		}
	})
}

// TestLayeredPutRefusesWhatBboltWould: what bbolt would refuse at the
// flusher's commit, which no caller could hear of, is refused at Put.
func TestLayeredPutRefusesWhatBboltWould(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	for _, c := range []struct {
		name        string
		bucket, key string
		want        error
	}{
		{"empty key", "x", "", bolt.ErrKeyRequired},
		{"key too large", "x", strings.Repeat("k", bolt.MaxKeySize+1), bolt.ErrKeyTooLarge},
		{"no bucket name", "", "k", errBucketName},
	} {
		err := s.Update(func(tx Tx) error { return tx.Put(c.bucket, []byte(c.key), []byte("v")) })
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Update returned %v, want %v", c.name, err, c.want)
		}
	}
	if got := dumpAll(t, s, "x", ""); got != "" {
		t.Errorf("refused puts left %q", got)
	}
	if err := s.Broken(); err != nil {
		t.Errorf("refused puts broke the store: %v", err)
	}
}

// TestLogOnFullDisk: on a full file system a change the log has room for
// is answered and read back while bbolt cannot take it; the flusher tries
// again until it can. A change the log has no room for fails alone, and
// the store goes on.
func TestLogOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	old := flushRetry
	flushRetry = 20 * time.Millisecond
	t.Cleanup(func() { flushRetry = old })
	dir := testenv.Tmpfs(t, "size=1m")
	path := filepath.Join(dir, "state.db")
	s := mustOpen(t, path)
	put(t, s, "x", "a", "1")
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	filler.Write(make([]byte, 2<<20)) // stops at ENOSPC
	filler.Close()

	// A value bbolt must grow its file for, in a record the log has
	// room for (its files were made before the disk filled).
	big := strings.Repeat("v", 100<<10)
	put(t, s, "x", "big", big)
	if err := s.flush(); err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush on a full disk: %v, want ENOSPC", err)
	}
	if err := s.Broken(); err != nil {
		t.Fatalf("a failed flush broke the store: %v", err)
	}
	if got := dumpAll(t, s, "x"); got != "x/a=1;x/big="+big+";" {
		t.Fatalf("after a failed flush the store reads %d bytes, want a=1 and big", len(got))
	}
	// A change the log has no room for fails, and changes nothing.
	huge := strings.Repeat("h", 400<<10)
	if err := s.Update(func(tx Tx) error { return tx.Put("x", []byte("huge"), []byte(huge)) }); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a change the log has no room for: %v, want ENOSPC", err)
	}
	if err := s.Broken(); err != nil {
		t.Fatalf("a failed log write broke the store: %v", err)
	}
	put(t, s, "x", "small", "2")

	os.Remove(filepath.Join(dir, "filler"))
	deadline := time.Now().Add(10 * time.Second)
	for inBolt(t, s, "x") != "x/a=1;x/big="+big+";x/small=2;" {
		if time.Now().After(deadline) {
			t.Fatalf("bbolt holds %d bytes of x after the disk has room again, want a, big and small", len(inBolt(t, s, "x")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Nothing was lost from the log meanwhile either.
	put(t, s, "x", "last", "3")
	crash(s)
	s = reopen(t, path)
	if got := dumpAll(t, s, "x"); got != "x/a=1;x/big="+big+";x/last=3;x/small=2;" {
		t.Errorf("after a crash the store reads %d bytes, want a, big, last and small", len(got))
	}
}
