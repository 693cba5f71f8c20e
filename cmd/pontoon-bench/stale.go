package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
)

// A bench killed outright (SIGKILL, a crash) takes its processes along
// (they die with it) but leaves namespaces, pins and its cgroup. Each run
// holds a lock while it lives; whatever carries the id of a run whose lock
// is free is left over and removed by the next run, or "pontoon-bench
// cleanup". A run in progress is never touched.

const runLockDir = "/run/pontoon-bench"

func pinDirOf(id string) string { return fmt.Sprintf("%s-bench-%s", loader.DefaultPinDir, id) }

func cgroupNameOf(id string) string { return "pontoon-bench-" + id }

// pontoonDatapaths are the Pontoon variants, each in a world of its own.
var pontoonDatapaths = []string{"pontoon", "pontoon-stack", "pontoon-xdp"}

// pontoonSuffix tells the pins and cgroup of a Pontoon variant's world
// from the default one's: the run's id, then "-stack" or "-xdp".
func pontoonSuffix(datapath string) string {
	return strings.TrimPrefix(datapath, "pontoon")
}

// runIDOf is the id in a name that follows a run's prefix: up to the
// first dash, which a suffix such as pontoonSuffix's starts with.
func runIDOf(rest string) string {
	id, _, _ := strings.Cut(rest, "-")
	return id
}

func worldPrefixOf(id string) string { return "pbench-" + id }

// lockRun marks run id as alive until the returned function runs (or the
// process dies, which frees the lock too).
func lockRun(id string) (func(), error) {
	if err := os.MkdirAll(runLockDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", runLockDir, err)
	}
	path := filepath.Join(runLockDir, id+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create run lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock run %s: %w", id, err)
	}
	return func() {
		os.Remove(path)
		f.Close()
	}, nil
}

// staleIDs are the ids of runs that left something behind and no longer
// hold their lock.
func staleIDs() ([]string, error) {
	var ids []string
	add := func(id string) {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if names, err := os.ReadDir("/run/netns"); err == nil {
		for _, n := range names {
			if rest, ok := strings.CutPrefix(n.Name(), "pbench-"); ok {
				add(runIDOf(rest))
			}
		}
	}
	pins, _ := filepath.Glob(pinDirOf("*"))
	for _, p := range pins {
		add(runIDOf(strings.TrimPrefix(p, pinDirOf(""))))
	}
	if root, err := loader.CgroupV2Root(); err == nil {
		cgs, _ := filepath.Glob(filepath.Join(root, cgroupNameOf("*")))
		for _, c := range cgs {
			add(runIDOf(strings.TrimPrefix(filepath.Base(c), cgroupNameOf(""))))
		}
	}
	var stale []string
	for _, id := range ids {
		unlock, err := lockRun(id)
		if err != nil {
			continue // alive
		}
		unlock()
		stale = append(stale, id)
	}
	return stale, nil
}

// cleanStale removes what dead runs left behind, and says what it did.
func cleanStale(ctx context.Context) error {
	ids, err := staleIDs()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		unlock, err := lockRun(id) // keep a concurrent cleanup out
		if err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "pontoon-bench: removing what run %s left behind\n", id)
		errs = append(errs, removeRun(ctx, id))
		unlock()
	}
	return errors.Join(errs...)
}

func removeRun(ctx context.Context, id string) error {
	var errs []error
	for _, dp := range pontoonDatapaths {
		pins := pinDirOf(id) + pontoonSuffix(dp)
		if _, err := os.Stat(pins); err != nil {
			continue
		}
		// Detach where the interfaces live while that namespace exists.
		host := netns(worldPrefixOf(id) + "-" + dp + "-host")
		if _, err := os.Stat(host.path()); err != nil ||
			helper(ctx, host, nil, 30*time.Second, nil, "detach", "--pin-dir", pins) != nil {
			if err := os.RemoveAll(pins); err != nil {
				errs = append(errs, fmt.Errorf("remove pins %s: %w", pins, err))
			}
		}
	}
	names, _ := filepath.Glob(filepath.Join("/run/netns", worldPrefixOf(id)+"-*"))
	for _, n := range names {
		if err := run(ctx, "ip", "netns", "del", filepath.Base(n)); err != nil {
			errs = append(errs, err)
		}
	}
	if root, err := loader.CgroupV2Root(); err == nil {
		for _, dp := range pontoonDatapaths {
			cg := filepath.Join(root, cgroupNameOf(id)+pontoonSuffix(dp))
			if err := unix.Rmdir(cg); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, err))
			}
		}
	}
	return errors.Join(errs...)
}
