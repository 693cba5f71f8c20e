package loader_test

import (
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestInNetnsComesBack: fn runs inside the namespace, and afterwards no
// thread of the process is left there, the first one included (which is
// what /proc/PID/ns/net names, and which Go never ends). Threads that died
// inside would linger as well, until the kernel reaped them.
func TestInNetnsComesBack(t *testing.T) {
	testenv.RequirePrivileges(t)
	ns := testenv.NewNetns(t, "pt-inns-"+testenv.UniqueID(t))
	target := inode(t, ns.Path())
	home := inode(t, "/proc/self/ns/net")

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- loader.InNetns(ns.Path(), func() error {
				if got := inode(t, "/proc/thread-self/ns/net"); got != target {
					t.Errorf("fn ran in namespace %d, want %d", got, target)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("list threads: %v", err)
	}
	for _, task := range tasks {
		var st unix.Stat_t
		if unix.Stat(task, &st) != nil {
			continue // the thread ended meanwhile
		}
		if st.Ino != home {
			t.Errorf("%s is in namespace %d, not the process's own %d", task, st.Ino, home)
		}
	}
	if err := loader.InNetns(filepath.Join(t.TempDir(), "none"), func() error {
		t.Error("fn ran for a namespace that does not exist")
		return nil
	}); err == nil {
		t.Error("InNetns of a missing path did not fail")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}
