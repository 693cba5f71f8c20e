package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Cleanup detaches everything a datapath pinned under dir and removes the
// pins: links are detached, legacy tc filters (not links) deleted.
func Cleanup(dir string) error {
	if dir == "" {
		dir = DefaultPinDir
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	progs, err := os.ReadDir(filepath.Join(dir, progsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list program pins: %w", err)
	}
	for _, e := range progs {
		kind, dirName, ifindex, ok := parsePinName(e.Name())
		if !ok || kind != "tc" {
			continue
		}
		for _, dir := range allTCHooks {
			if dir.name == dirName {
				if err := deleteLegacyFilter(dir, ifindex); err != nil {
					return err
				}
			}
		}
	}
	links, err := os.ReadDir(filepath.Join(dir, linksDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list link pins: %w", err)
	}
	for _, e := range links {
		if _, err := unpinLink(filepath.Join(dir, linksDir, e.Name())); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pins under %s: %w", dir, err)
	}
	return nil
}
