package vmtest

import "testing"

// TestCrashedBeforeCommand: only an oops before the command started is
// worth booting again; a panic without one, a command that had started
// or a time limit is not.
func TestCrashedBeforeCommand(t *testing.T) {
	const oops = "[   41.2] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[   41.2] RIP: 0010:sched_clock_cpu+0x10/0x1a0\n"
	for _, c := range []struct {
		name string
		be   BootError
		want bool
	}{
		{"an oops while booting", BootError{Console: oops}, true},
		{"a BUG while booting", BootError{Console: "BUG: unable to handle page fault for address: 0000\n"}, true},
		{"a kernel that cannot boot", BootError{Console: "Kernel panic - not syncing: No working init found.\n"}, false},
		{"an oops after the command started", BootError{Console: oops, Started: true}, false},
		{"an oops at the time limit", BootError{Console: oops, Timeout: true}, false},
	} {
		if got := c.be.CrashedBeforeCommand(); got != c.want {
			t.Errorf("%s: CrashedBeforeCommand %v, want %v", c.name, got, c.want)
		}
	}
}
