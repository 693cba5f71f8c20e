package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
)

// netnsLockName is an abstract unix socket an agent listens on for as long
// as it runs. Abstract names belong to a network namespace and vanish with
// the process, so it marks "an agent runs here" with nothing to go stale:
// two agents in one namespace would prune each other's interfaces.
const netnsLockName = "@pontoon-agent"

// busyError says another process holds something an agent needs to itself.
type busyError struct {
	// pid is the holder, 0 when nothing tells.
	pid int
	// holds says what it holds: "holds the pin directory /sys/fs/bpf/x".
	holds string
	// flag is the agent flag that picks another one, "" for none.
	flag string
}

func (e *busyError) Error() string {
	who := "another agent"
	if e.pid > 0 {
		who += " (pid " + strconv.Itoa(e.pid) + ")"
	}
	msg := fmt.Sprintf("%s %s: stop it first (%s)", who, e.holds, stopHint(e.pid))
	if e.flag != "" {
		msg += ", or give this agent its own " + e.flag
	} else {
		msg += "; one agent serves a network namespace"
	}
	return msg
}

// forCleanup words the refusal for `pontoon cleanup`.
func (e *busyError) forCleanup() error {
	who := "an agent is running"
	if e.pid > 0 {
		who += " (pid " + strconv.Itoa(e.pid) + ")"
	}
	return fmt.Errorf("%s — stop it first (%s); it %s", who, stopHint(e.pid), e.holds)
}

func stopHint(pid int) string {
	if pid > 0 {
		return "'systemctl stop pontoon', or end that process"
	}
	return "'systemctl stop pontoon'"
}

// lockTarget is one thing an agent has to itself, flocked for as long as
// it runs: a directory itself (bpffs cannot hold a lock file) or a lock
// file.
type lockTarget struct {
	// what names it in messages: "the pin directory".
	what string
	// path is what is flocked; shown is the path messages name.
	path, shown string
	flag        string
	// create makes path when it is missing; nil means it must exist
	// already to be locked (a cgroup is never made here).
	create func() error
}

// lockSet is the flocks an agent (or cleanup) holds, and what it created
// to take them, so a refusal can leave nothing behind.
type lockSet struct {
	files   []*os.File
	netns   net.Listener
	created []string
}

// lockAgent makes sure no other agent serves cfg's socket or uses its
// state directory, pin directory, cgroup or network namespace, and holds
// them until release. It runs before anything is read or changed, and a
// refusal changes nothing: whatever it created is removed again.
func lockAgent(cfg Config) (*lockSet, error) {
	l := &lockSet{}
	// The namespace first: no flag can make room for a second agent in
	// it, so it is the one thing worth saying then.
	if err := l.lockNetns(); err != nil {
		return nil, err
	}
	if err := socketAnswers(cfg.Socket); err != nil {
		l.release()
		return nil, err
	}
	cgroup := cfg.Cgroup
	if cgroup == "" {
		root, err := loader.CgroupV2Root()
		if err != nil {
			l.release()
			return nil, err
		}
		cgroup = root
	}
	targets := append(ownedPaths(cfg.StateDir, cfg.PinDir, cfg.Socket),
		lockTarget{what: "the cgroup", path: cgroup, shown: cgroup, flag: "--cgroup"})
	// Everything that exists is locked first: a refusal then comes before
	// this agent has made any directory or file.
	for _, t := range targets {
		if err := l.lock(t, false); err != nil {
			l.abandon()
			return nil, err
		}
	}
	for _, t := range targets {
		if err := l.lock(t, true); err != nil {
			l.abandon()
			return nil, err
		}
	}
	return l, nil
}

// lockForCleanup refuses while any agent answers on socket, runs in this
// network namespace, or holds the state directory, the pin directory or
// the socket's lock, and holds them so none starts while cleanup runs. It
// creates nothing.
func lockForCleanup(stateDir, pinDir, socket string) (*lockSet, error) {
	refuse := func(err error) error {
		var busy *busyError
		if errors.As(err, &busy) {
			return busy.forCleanup()
		}
		return err
	}
	if err := socketAnswers(socket); err != nil {
		return nil, refuse(err)
	}
	l := &lockSet{}
	for _, t := range ownedPaths(stateDir, pinDir, socket) {
		if err := l.lock(t, false); err != nil {
			l.release()
			return nil, refuse(err)
		}
	}
	if err := l.lockNetns(); err != nil {
		l.release()
		return nil, refuse(err)
	}
	return l, nil
}

// ownedPaths are the state directory, the pin directory and the socket's
// lock file (a socket cannot be flocked; the lock file keeps two agents
// starting at once from both taking the path).
func ownedPaths(stateDir, pinDir, socket string) []lockTarget {
	pinDir = lockedPinDir(pinDir)
	return []lockTarget{
		{what: "the state directory", path: stateDir, shown: stateDir, flag: "--state-dir",
			create: func() error { return os.MkdirAll(stateDir, 0o700) }},
		{what: "the socket", path: socket + ".lock", shown: socket, flag: "--socket",
			create: func() error {
				if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
					return fmt.Errorf("create socket directory: %w", err)
				}
				f, err := os.OpenFile(socket+".lock", os.O_RDONLY|os.O_CREATE, 0o600)
				if err != nil {
					return fmt.Errorf("create socket lock: %w", err)
				}
				return f.Close()
			}},
		{what: "the pin directory", path: pinDir, shown: pinDir, flag: "--bpffs",
			create: func() error { return loader.PreparePinDir(pinDir) }},
	}
}

// lockedPinDir is the pin directory as locked: the flag's, or the default.
func lockedPinDir(flag string) string {
	if flag == "" {
		return loader.DefaultPinDir
	}
	return flag
}

// lock flocks t without waiting. Without create a missing path is left for
// the second pass; with it, t is created first, and what did not exist is
// remembered for abandon.
func (l *lockSet) lock(t lockTarget, create bool) error {
	for _, f := range l.files {
		if f.Name() == t.path {
			return nil
		}
	}
	f, err := os.Open(t.path)
	var missing []string
	if errors.Is(err, os.ErrNotExist) && create && t.create != nil {
		missing = missingPaths(t.path)
		createErr := t.create()
		l.created = append(l.created, missing...)
		if createErr != nil {
			return createErr
		}
		f, err = os.Open(t.path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s %s to lock it: %w", t.what, t.path, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		pid := 0
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil {
			pid = flockPid("/proc/locks", st)
		}
		f.Close()
		// The holder made what this call made, at the same moment: it
		// is the holder's, not abandon's to remove.
		l.created = l.created[:len(l.created)-len(missing)]
		return &busyError{pid: pid, holds: "holds " + t.what + " " + t.shown, flag: t.flag}
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("lock %s %s: %w", t.what, t.path, err)
	}
	l.files = append(l.files, f)
	return nil
}

// relock locks path again when it is no longer the directory or file
// locked: one removed and made again (heal recreates a pin directory
// removed with rm -rf) is a new inode, which the lock on the old one does
// not cover, so a second agent or a cleanup could take it. It reports
// whether it took the lock anew; a path this set does not hold is left
// alone.
func (l *lockSet) relock(path, what, flag string) (bool, error) {
	for i, f := range l.files {
		if f.Name() != path {
			continue
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			return false, fmt.Errorf("check the lock on %s %s: %w", what, path, err)
		}
		if err := unix.Stat(path, &now); err != nil {
			return false, fmt.Errorf("check the lock on %s %s: %w", what, path, err)
		}
		if held.Dev == now.Dev && held.Ino == now.Ino {
			return false, nil
		}
		fresh := &lockSet{}
		if err := fresh.lock(lockTarget{what: what, path: path, shown: path, flag: flag}, false); err != nil {
			return false, err
		}
		if len(fresh.files) == 0 {
			return false, fmt.Errorf("lock %s %s again: it is gone", what, path)
		}
		f.Close()
		l.files[i] = fresh.files[0]
		return true, nil
	}
	return false, nil
}

// lockNetns takes this network namespace's agent mark (netnsLockName).
func (l *lockSet) lockNetns() error {
	ln, err := net.Listen("unix", netnsLockName)
	if errors.Is(err, unix.EADDRINUSE) {
		pid := 0
		if c, err := net.DialTimeout("unix", netnsLockName, time.Second); err == nil {
			pid = peerPid(c)
			c.Close()
		}
		return &busyError{pid: pid, holds: "runs in this network namespace"}
	}
	if err != nil {
		return fmt.Errorf("mark this network namespace as the agent's: %w", err)
	}
	l.netns = ln
	return nil
}

// socketAnswers refuses when an agent answers on socket, naming its pid.
func socketAnswers(socket string) error {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	return &busyError{pid: peerPid(c), holds: "serves " + socket, flag: "--socket"}
}

// peerPid is the pid at the other end of a unix socket, 0 if unknown.
func peerPid(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// release drops every lock; what was created stays (it is the agent's).
func (l *lockSet) release() {
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
	if l.netns != nil {
		l.netns.Close()
		l.netns = nil
	}
}

// abandon drops every lock and removes what taking them created, deepest
// first, so a refused agent leaves no trace.
func (l *lockSet) abandon() {
	l.release()
	for i := len(l.created) - 1; i >= 0; i-- {
		os.Remove(l.created[i])
	}
	l.created = nil
}

// missingPaths lists path and its ancestors that do not exist yet,
// outermost first.
func missingPaths(path string) []string {
	var out []string
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || p == filepath.Dir(p) {
			break
		}
		out = append([]string{p}, out...)
	}
	return out
}
