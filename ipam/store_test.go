package ipam

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
