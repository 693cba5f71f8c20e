package loader

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestRetryDumpAsksAgainWhileInterrupted(t *testing.T) {
	calls := 0
	got, err := RetryDump(func() (int, error) {
		calls++
		if calls < 3 {
			return -1, netlink.ErrDumpInterrupted
		}
		return calls, nil
	})
	if err != nil || got != 3 || calls != 3 {
		t.Errorf("got %d, %v after %d calls, want the third, whole dump", got, err, calls)
	}

	calls = 0
	_, err = RetryDump(func() (int, error) { calls++; return 0, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || calls != DumpAttempts {
		t.Errorf("always interrupted: %v after %d calls, want the interruption after %d", err, calls, DumpAttempts)
	}

	calls = 0
	other := errors.New("permission denied")
	if _, err := RetryDump(func() (int, error) { calls++; return 0, other }); err != other || calls != 1 {
		t.Errorf("another error: %v after %d calls, want it at once", err, calls)
	}
}
