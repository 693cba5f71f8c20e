package loader

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestNetnsCookieFromBPF: the fallback for kernels without SO_NETNS_COOKIE
// (< 5.14) reads what the socket hooks will compare against: the same
// value for the same namespace, another for another namespace, and, where
// the kernel has the socket option, the value it gives.
func TestNetnsCookieFromBPF(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading and attaching BPF programs needs root")
	}
	if _, err := CgroupV2Root(); err != nil {
		t.Skipf("needs cgroup v2: %v", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	first, err := netnsCookieFromBPF()
	if err != nil {
		t.Fatal(err)
	}
	again, err := netnsCookieFromBPF()
	if err != nil {
		t.Fatal(err)
	}
	if first != again {
		t.Errorf("two reads in one namespace: %d, then %d", first, again)
	}
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		want, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		unix.Close(fd)
		if err == nil && want != first {
			t.Errorf("BPF read %d, SO_NETNS_COOKIE says %d", first, want)
		}
	}

	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	fresh, err := netns.New() // also enters it, on this locked thread only
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	other, err := netnsCookieFromBPF()
	if err := netns.Set(orig); err != nil {
		t.Fatalf("back to the original namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if other == first {
		t.Errorf("a new namespace has the same cookie %d", other)
	}
}
