package ipam

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestStoreBasics(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		err := s.Update(func(tx Tx) error {
			for _, k := range []string{"b", "c", "a"} {
				if err := tx.Put("x", []byte(k), []byte("v"+k)); err != nil {
					return err
				}
			}
			if got := tx.Get("x", []byte("a")); string(got) != "va" {
				t.Errorf("get in the same transaction = %q, want va", got)
			}
			return tx.Delete("x", []byte("c"))
		})
		if err != nil {
			t.Fatal(err)
		}
		err = s.View(func(tx Tx) error {
			if tx.Get("x", []byte("c")) != nil {
				t.Error("deleted key still there")
			}
			if tx.Get("missing", []byte("a")) != nil || tx.Get("x", []byte("zz")) != nil {
				t.Error("missing bucket or key returned a value")
			}
			var keys []string
			err := tx.ForEach("x", func(k, v []byte) error {
				keys = append(keys, string(k)+"="+string(v))
				return nil
			})
			if got := strings.Join(keys, ","); got != "a=va,b=vb" {
				t.Errorf("ForEach visited %s, want a=va,b=vb in key order", got)
			}
			if err := tx.ForEach("missing", func(k, v []byte) error { return errors.New("called") }); err != nil {
				t.Errorf("ForEach over a missing bucket: %v", err)
			}
			if err := tx.Put("x", []byte("d"), []byte("vd")); err == nil {
				t.Error("Put inside View succeeded")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestStoreRollback(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		if err := s.Update(func(tx Tx) error { return tx.Put("x", []byte("keep"), []byte("1")) }); err != nil {
			t.Fatal(err)
		}
		before := dumpAll(t, s, "x", "y")
		boom := errors.New("boom")
		err := s.Update(func(tx Tx) error {
			tx.Put("x", []byte("keep"), []byte("2"))
			tx.Put("x", []byte("new"), []byte("3"))
			tx.Put("y", []byte("other"), []byte("4"))
			tx.Delete("x", []byte("keep"))
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update returned %v, want the function's error", err)
		}
		if after := dumpAll(t, s, "x", "y"); after != before {
			t.Errorf("failed Update left changes: before %q after %q", before, after)
		}
	})
}

func TestMemStoreRollbackOnPanic(t *testing.T) {
	s := NewMemStore()
	func() {
		defer func() { recover() }()
		s.Update(func(tx Tx) error {
			tx.Put("x", []byte("k"), []byte("v"))
			panic("boom")
		})
	}()
	if got := dumpAll(t, s, "x"); got != "" {
		t.Errorf("panicking Update left %q", got)
	}
}

func dumpAll(t *testing.T, s Store, buckets ...string) string {
	t.Helper()
	var b strings.Builder
	s.View(func(tx Tx) error {
		for _, name := range buckets {
			tx.ForEach(name, func(k, v []byte) error {
				b.WriteString(name + "/" + string(k) + "=" + string(v) + ";")
				return nil
			})
		}
		return nil
	})
	return b.String()
}

func TestBoltPersistsAndLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error { return tx.Put("x", []byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	old := lockTimeout
	lockTimeout = 50 * time.Millisecond
	defer func() { lockTimeout = old }()
	if s2, err := OpenBolt(path); err == nil {
		s2.Close()
		t.Error("second open of a held file succeeded")
	} else if !strings.Contains(err.Error(), "another process holds its lock") {
		t.Errorf("second open: %v, want a message about the lock", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := dumpAll(t, s, "x"); got != "x/k=v;" {
		t.Errorf("after reopen the store holds %q, want x/k=v;", got)
	}
	if _, err := OpenBolt(filepath.Join(t.TempDir(), "missing-dir", "ipam.db")); err == nil {
		t.Error("open in a missing directory succeeded")
	}
}

// TestBoltFreelistNotSynced: commits leave the freelist out of the file
// (both meta pages say none was written), the file still passes CheckBolt
// and keeps its data, and a bbolt that writes the freelist opens it too.
func TestBoltFreelistNotSynced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20<<10)
	for i := range 20 {
		// Pages freed by each delete: a freelist a synced one would write.
		err := s.Update(func(tx Tx) error {
			if err := tx.Put("x", []byte{byte(i)}, big); err != nil {
				return err
			}
			if i > 0 {
				return tx.Delete("x", []byte{byte(i - 1)})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt's meta: a 16-byte page header, then magic, version, page
	// size, flags (4 bytes each), the root bucket (16), the freelist's
	// page id: all ones when none was written.
	pageSize := int(binary.LittleEndian.Uint32(raw[16+8:]))
	for _, meta := range []int{0, pageSize} {
		if fl := binary.LittleEndian.Uint64(raw[meta+48:]); fl != math.MaxUint64 {
			t.Errorf("meta page at %d names freelist page %d; want none written", meta, fl)
		}
	}
	if err := CheckBolt(path); err != nil {
		t.Fatalf("check a file without a synced freelist: %v", err)
	}
	// An agent built before this opens the file and writes its freelist.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		t.Fatalf("open without NoFreelistSync: %v", err)
	}
	db.Close()
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx Tx) error {
		if got := tx.Get("x", []byte{19}); len(got) != len(big) {
			t.Errorf("last value has %d bytes, want %d", len(got), len(big))
		}
		if got := tx.Get("x", []byte{18}); got != nil {
			t.Errorf("deleted value still there (%d bytes)", len(got))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckBolt(path); err != nil {
		t.Fatalf("check after reopening: %v", err)
	}
}
