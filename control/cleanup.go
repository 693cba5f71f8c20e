package control

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
)

// CleanupReport says what Cleanup did to the namespace it ran in.
type CleanupReport struct {
	// Deleted are the interfaces it deleted.
	Deleted []string
	// Kept are labelled interfaces it left because nothing proves Pontoon
	// made them, each with why.
	Kept []string
	// IPForward is the net.ipv4.ip_forward value put back, "" if none.
	IPForward string
	// IPv6Forward is the net.ipv6.conf.all.forwarding value put back.
	IPv6Forward string
	// ForeignPins are entries of the pin directory that are not pins a
	// datapath makes (relative to it), left with the directory.
	ForeignPins []string
	// Notes are anything else worth saying, one line each.
	Notes []string
}

// Cleanup removes everything an agent put in the kernel: the interfaces
// it provably made (madeByPontoon), gateway addresses it added to adopted
// bridges, the pins a datapath makes and their attachments (other pins in
// pinDir are left and listed), and it puts back the net.ipv4.ip_forward
// the first agent found. With purge the state file goes too; without it a
// later agent rebuilds the same networks from it. It runs in the agent's
// network namespace and refuses, changing nothing, while any agent answers
// on socket, runs in this namespace, or holds the state directory, the pin
// directory or the state file, whatever stateDir says.
func Cleanup(stateDir, pinDir, socket string, purge bool) (*CleanupReport, error) {
	locks, err := lockForCleanup(stateDir, pinDir, socket)
	if err != nil {
		return nil, err
	}
	defer locks.release()
	rep := &CleanupReport{}
	path := StatePath(stateDir)
	// bbolt's own flock: an agent of a build without the directory locks.
	held, pid, err := lockHolder(path)
	if err != nil {
		return nil, err
	}
	if held {
		return nil, (&busyError{pid: pid, holds: "holds the state file " + path}).forCleanup()
	}

	var (
		store *ipam.BoltStore
		st    *state
	)
	if _, err := os.Stat(path); err == nil {
		if store, err = ipam.OpenBolt(path); err != nil {
			return nil, err
		}
		defer func() {
			if store != nil {
				store.Close()
			}
		}()
		if st, err = loadState(store); err != nil {
			// Interfaces are still told apart by their labels and names.
			rep.Notes = append(rep.Notes, fmt.Sprintf("%v: gateway addresses on adopted bridges left as they are", err))
			st = nil
		}
		for _, n := range networksOf(st) {
			if n.Adopted {
				if err := removeBridge(n); err != nil {
					return nil, err
				}
			}
		}
	}

	links, err := loader.RetryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	// Veths first: deleting a bridge leaves its ports, deleting a veth
	// takes its peer in the container away too.
	var veths, bridges []netlink.Link
	for _, l := range links {
		at := l.Attrs()
		if !strings.HasPrefix(at.Alias, aliasPrefix) {
			continue
		}
		if lbl, _ := parseLabel(at.Alias); lbl.adopted {
			// Another tool's bridge or veth: only the label is ours.
			if err := netlink.LinkSetAlias(l, ""); err != nil {
				return nil, fmt.Errorf("unlabel %s: %w", at.Name, err)
			}
			continue
		}
		ok, why := madeByPontoon(l, st)
		switch {
		case !ok:
			rep.Kept = append(rep.Kept, fmt.Sprintf("%s (alias %q: %s)", at.Name, at.Alias, why))
		case l.Type() == "veth":
			veths = append(veths, l)
		default:
			bridges = append(bridges, l)
		}
	}
	for _, l := range append(veths, bridges...) {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("delete %s: %w", l.Attrs().Name, err)
		}
		rep.Deleted = append(rep.Deleted, l.Attrs().Name)
	}
	if rep.ForeignPins, err = loader.CleanupPins(pinDir); err != nil {
		return nil, err
	}

	if store != nil {
		if rep.IPForward, err = restoreForwarding(store, ipForward, purge, rep); err != nil {
			return nil, err
		}
		if rep.IPv6Forward, err = restoreForwarding(store, ipv6Forward, purge, rep); err != nil {
			return nil, err
		}
		if err := store.Close(); err != nil {
			return nil, err
		}
		store = nil
	}
	if purge {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove state file: %w", err)
		}
	}
	return rep, nil
}

// restoreForwarding puts back the forwarding value an agent found, when
// cleanup runs in the namespace that agent ran in, and forgets it so the
// next agent records afresh. It returns the value put back, "" if none.
func restoreForwarding(store *ipam.BoltStore, fs forwardSysctl, purge bool, rep *CleanupReport) (string, error) {
	rec, ok, err := getForwardRecord(store, fs.key)
	if err != nil || !ok {
		return "", err
	}
	here, err := ownNetns()
	if err != nil {
		return "", err
	}
	if rec.Netns != here {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s left as it is: the agent ran in another network namespace (%s, this is %s); run cleanup there", fs.name, rec.Netns, here))
		return "", nil
	}
	if rec.Value != "0" && rec.Value != "1" {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s left as it is: the recorded value %q is neither 0 nor 1", fs.name, rec.Value))
		return "", nil
	}
	if err := os.WriteFile(fs.path, []byte(rec.Value), 0o644); err != nil {
		return "", fmt.Errorf("restore %s to %s: %w", fs.name, rec.Value, err)
	}
	if purge {
		return rec.Value, nil
	}
	return rec.Value, store.Update(func(tx ipam.Tx) error { return tx.Delete(bucketMeta, fs.key) })
}

// lockHolder reports whether a process holds the state file's lock (bbolt
// takes an exclusive flock for as long as the file is open) and, when
// /proc/locks tells, its pid. It never waits.
func lockHolder(path string) (held bool, pid int, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("open state file %s: %w", path, err)
	}
	// Closing the descriptor drops this probe's own lock, if it got one,
	// and never anybody else's.
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return false, 0, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return false, 0, fmt.Errorf("probe the lock on %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return true, 0, nil
	}
	return true, flockPid("/proc/locks", st), nil
}

// flockPid finds the process holding a flock on the file st describes in
// a /proc/locks listing ("1: FLOCK ADVISORY WRITE 1234 fd:01:5678 0 EOF",
// device numbers in hex); 0 when none is listed.
func flockPid(locks string, st unix.Stat_t) int {
	f, err := os.Open(locks)
	if err != nil {
		return 0
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 1 && fields[1] == "->" {
			continue // a waiter, not the holder
		}
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

func networksOf(st *state) map[string]*Network {
	if st == nil {
		return nil
	}
	return st.networks
}
