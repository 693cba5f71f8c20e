package control

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLockRefusalLeavesNothing: a lock found held after others were taken
// (two agents starting at once) gives back those locks and removes what
// taking them created, and names the holder's pid.
func TestLockRefusalLeavesNothing(t *testing.T) {
	base := t.TempDir()
	held := filepath.Join(base, "held")
	if err := os.Mkdir(held, 0o700); err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(base, "a", "b", "state")
	targets := []lockTarget{
		{what: "the state directory", path: fresh, shown: fresh, flag: "--state-dir",
			create: func() error { return os.MkdirAll(fresh, 0o700) }},
		{what: "the pin directory", path: held, shown: held, flag: "--bpffs"},
	}
	l := &lockSet{}
	if err := l.lock(targets[0], true); err != nil {
		t.Fatal(err)
	}
	// What it created, it holds.
	probe := &lockSet{}
	if err := probe.lock(targets[0], false); err == nil {
		probe.release()
		t.Fatalf("%s was created but not locked", fresh)
	}
	refusal := l.lock(targets[1], true)
	var busy *busyError
	if !errors.As(refusal, &busy) {
		t.Fatalf("lock of a held directory: %v, want a busyError", refusal)
	}
	if busy.pid != os.Getpid() || !strings.Contains(refusal.Error(), "holds the pin directory "+held) ||
		!strings.Contains(refusal.Error(), "its own --bpffs") {
		t.Errorf("refusal %q (pid %d, want %d)", refusal, busy.pid, os.Getpid())
	}
	l.abandon()
	if _, err := os.Stat(filepath.Join(base, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refusal left %s behind: %v", filepath.Join(base, "a"), err)
	}
	// The lock taken on the way was given back.
	if err := os.MkdirAll(fresh, 0o700); err != nil {
		t.Fatal(err)
	}
	l2 := &lockSet{}
	defer l2.release()
	if err := l2.lock(targets[0], false); err != nil {
		t.Errorf("relock after the refusal: %v", err)
	}
}

func TestMissingPaths(t *testing.T) {
	base := t.TempDir()
	got := missingPaths(filepath.Join(base, "x", "y"))
	want := []string{filepath.Join(base, "x"), filepath.Join(base, "x", "y")}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("missingPaths = %v, want %v", got, want)
	}
	if got := missingPaths(base); len(got) != 0 {
		t.Errorf("missingPaths of an existing directory = %v", got)
	}
}

// TestRelockRecreatedDir: a locked directory removed and made again (heal
// recreating a pin directory after rm -rf) is a new inode the old lock
// does not cover; relock takes it, after which no one else can, and a
// recreated directory someone else locked first is refused, naming them.
func TestRelockRecreatedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pins")
	target := lockTarget{what: "the pin directory", path: dir, shown: dir, flag: "--bpffs"}
	recreate := func() {
		t.Helper()
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l := &lockSet{}
	defer l.release()
	if err := l.lock(target, false); err != nil {
		t.Fatal(err)
	}
	if again, err := l.relock(dir, target.what, target.flag); again || err != nil {
		t.Fatalf("relock of the directory still locked: took it anew %v, err %v", again, err)
	}

	recreate()
	probe := &lockSet{}
	if err := probe.lock(target, false); err != nil {
		t.Fatalf("the recreated directory should be free before relock (the gap relock closes): %v", err)
	}
	probe.release()
	if again, err := l.relock(dir, target.what, target.flag); !again || err != nil {
		t.Fatalf("relock of the recreated directory: took it anew %v, err %v", again, err)
	}
	var busy *busyError
	if err := probe.lock(target, false); !errors.As(err, &busy) {
		probe.release()
		t.Fatalf("another lock of the relocked directory: %v, want a busyError", err)
	}

	recreate()
	other := &lockSet{}
	defer other.release()
	if err := other.lock(target, false); err != nil {
		t.Fatal(err)
	}
	_, err := l.relock(dir, target.what, target.flag)
	if !errors.As(err, &busy) || !strings.Contains(err.Error(), "holds the pin directory "+dir) {
		t.Errorf("relock of a directory another holds: %v, want a busyError naming it", err)
	}
}
