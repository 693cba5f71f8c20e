package loader_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestInNetnsComesBack: fn runs inside the namespace, and afterwards the
// thread it ran on is alive and home, as is every other thread of the
// process, the first one included (which is what /proc/PID/ns/net names,
// and which Go never ends). A function that ends its goroutine (t.FailNow
// does) gets the same and an error.
func TestInNetnsComesBack(t *testing.T) {
	testenv.RequirePrivileges(t)
	ns := testenv.NewNetns(t, "pt-inns-"+testenv.UniqueID(t))
	target := inode(t, ns.Path())
	home := inode(t, "/proc/self/ns/net")

	var wg sync.WaitGroup
	tids := make(chan int, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := loader.InNetns(ns.Path(), func() error {
				var st unix.Stat_t
				if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil || st.Ino != target {
					t.Errorf("fn ran in namespace %d (%v), want %d", st.Ino, err, target)
				}
				tids <- unix.Gettid()
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(tids)
	for tid := range tids {
		var st unix.Stat_t
		task := fmt.Sprintf("/proc/self/task/%d/ns/net", tid)
		if err := unix.Stat(task, &st); err != nil {
			t.Errorf("thread %d that ran fn is gone: %v", tid, err)
		} else if st.Ino != home {
			t.Errorf("thread %d that ran fn is still in namespace %d", tid, st.Ino)
		}
	}

	var tid int
	err := loader.InNetns(ns.Path(), func() error {
		tid = unix.Gettid()
		runtime.Goexit()
		return nil
	})
	if err == nil {
		t.Error("InNetns of a function that ended its goroutine did not fail")
	}
	if got := inode(t, fmt.Sprintf("/proc/self/task/%d/ns/net", tid)); got != home {
		t.Errorf("after runtime.Goexit, thread %d is in namespace %d", tid, got)
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
