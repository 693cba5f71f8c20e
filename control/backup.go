package control

import (
	"context"
	"sync"
	"time"
)

// lastGoodSuffix names the copy of the state file taken after each
// successful reconcile and, a second at most after, each change: what to
// restore when the file breaks.
const lastGoodSuffix = ".last-good"

// LastGoodPath is where the last good copy of the state file at path is.
func LastGoodPath(path string) string { return path + lastGoodSuffix }

// lastGood remembers which transaction the last copy holds, so an
// unchanged file is not copied again.
type lastGood struct {
	mu     sync.Mutex
	txid   int
	logged bool
	// kick asks backupLoop for a copy; nil (an agent Run did not start)
	// copies at once.
	kick chan struct{}
}

// saveLastGoodSoon asks for a copy without making the request that changed
// the file wait for it (a copy of a big file takes tens of milliseconds);
// requests in a burst share one copy.
func (a *Agent) saveLastGoodSoon() {
	if a.backup.kick == nil {
		a.saveLastGood()
		return
	}
	select {
	case a.backup.kick <- struct{}{}:
	default:
	}
}

// backupLoop takes the copies saveLastGoodSoon asks for, and a last one
// when the agent stops, so a stopped agent's copy holds every change.
func (a *Agent) backupLoop(ctx context.Context) {
	for {
		select {
		case <-a.backup.kick:
			a.saveLastGood()
		case <-ctx.Done():
			a.saveLastGood()
			return
		}
		// A kick meanwhile waits in the channel, and one copy then
		// covers every change since.
		select {
		case <-time.After(backupEvery):
		case <-ctx.Done():
			a.saveLastGood()
			return
		}
	}
}

// backupEvery spaces the copies: at 60,000 mappings one copy of the file
// cost the agent more than the publish that asked for it, and a stream of
// publishes had the file copied after each.
const backupEvery = time.Second

// saveLastGood copies the state file, when it changed since the last copy
// and the agent is healthy. A failure is logged, never fatal: the agent
// works without a backup, it only loses a way back.
func (a *Agent) saveLastGood() {
	if a.healthErr() != nil {
		return
	}
	a.backup.mu.Lock()
	defer a.backup.mu.Unlock()
	txid, err := a.store.TxID()
	if err != nil || (a.backup.logged && txid == a.backup.txid) {
		return
	}
	path := LastGoodPath(a.store.Path())
	if a.backup.txid, err = a.store.Backup(path); err != nil {
		a.log.Warn("save the last good copy of the state file", "err", err)
		return
	}
	if !a.backup.logged {
		a.log.Info("saved the last good copy of the state file; it is kept after every change", "path", path)
		a.backup.logged = true
	}
}
