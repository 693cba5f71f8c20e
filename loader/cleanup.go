package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Cleanup detaches everything a datapath pinned under dir and removes its
// pins, leaving other pins there alone (see CleanupPins).
func Cleanup(dir string) error {
	_, err := CleanupPins(dir)
	return err
}

// CleanupPins detaches and removes the pins a datapath makes under dir, and
// only those: its maps and older builds' (retiredMaps), by pin and map
// name (isOwnMap), and the link and legacy program pins it names after a
// hook and an index (isOwnPin). Links are detached, legacy tc filters (not
// links) deleted. Any other entry is somebody else's: it is left, with
// dir, and returned relative to dir.
func CleanupPins(dir string) (foreign []string, err error) {
	if dir == "" {
		dir = DefaultPinDir
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	progs, err := os.ReadDir(filepath.Join(dir, progsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list program pins: %w", err)
	}
	for _, e := range progs {
		name := filepath.Join(progsDir, e.Name())
		if !isOwnPin(progsDir, e.Name()) {
			foreign = append(foreign, name)
			continue
		}
		_, hook, ifindex, _ := parsePinName(e.Name())
		for _, h := range allTCHooks {
			if h.name == hook {
				if err := deleteLegacyFilter(h, ifindex); err != nil {
					return nil, err
				}
			}
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove program pin: %w", err)
		}
	}
	links, err := os.ReadDir(filepath.Join(dir, linksDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list link pins: %w", err)
	}
	for _, e := range links {
		name := filepath.Join(linksDir, e.Name())
		if !isOwnPin(linksDir, e.Name()) {
			foreign = append(foreign, name)
			continue
		}
		if _, err := unpinLink(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list pins under %s: %w", dir, err)
	}
	maps := (&Maps{}).all()
	for _, e := range top {
		name := e.Name()
		if name == linksDir || name == progsDir {
			// Empty unless something foreign was left in it.
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
				return nil, fmt.Errorf("remove %s: %w", filepath.Join(dir, name), err)
			}
			continue
		}
		if _, ok := maps[name]; (!ok && !slices.Contains(retiredMaps, name)) || !isOwnMap(filepath.Join(dir, name), name) {
			foreign = append(foreign, name)
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove map pin %s: %w", name, err)
		}
	}
	if len(foreign) > 0 {
		sort.Strings(foreign)
		return foreign, nil
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove pin directory %s: %w", dir, err)
	}
	return nil, nil
}

// isOwnPin says whether name, under sub, is a pin a datapath makes:
// "tcx_HOOK_IFINDEX" and "cg_HOOK_CGROUPID" links, "tc_HOOK_IFINDEX"
// legacy programs, for hooks it has.
func isOwnPin(sub, name string) bool {
	kind, hook, id, ok := parsePinName(name)
	if !ok || id < 0 {
		return false
	}
	hasTC := func() bool {
		for _, h := range allTCHooks {
			if h.name == hook {
				return true
			}
		}
		return false
	}
	switch {
	case sub == progsDir && kind == "tc", sub == linksDir && kind == "tcx":
		return hasTC()
	case sub == linksDir && kind == "xdp":
		return hook == xdpHook
	case sub == linksDir && kind == "cg":
		for _, h := range sockHooks {
			if h.name == hook {
				return true
			}
		}
	}
	return false
}

// isOwnMap says whether the pin at path is a map the datapath made: one
// named as the pin is (the object's map name), so "config" pinned by
// another program in a shared directory is not taken for Pontoon's. The
// layout is not compared: pins of an older build are Pontoon's to remove.
func isOwnMap(path, name string) bool {
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return false
	}
	defer m.Close()
	info, err := m.Info()
	return err == nil && info.Name == name
}
