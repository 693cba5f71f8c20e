package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader"
)

// cgroup is a child of the cgroup v2 root that only bench clients join:
// Pontoon's socket hooks attach there, never to the root.
type cgroup struct {
	path string
	dir  *os.File
}

func newCgroup(cl *cleanups, name string) (*cgroup, error) {
	root, err := loader.CgroupV2Root()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(root, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	dir, err := os.Open(path)
	if err != nil {
		unix.Rmdir(path)
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	cg := &cgroup{path: path, dir: dir}
	cl.add("cgroup "+path, cg.remove)
	return cg, nil
}

// remove deletes the cgroup once its last client has gone; its BPF links
// detach with it.
func (cg *cgroup) remove() error {
	cg.dir.Close()
	var err error
	// A client killed a moment ago may still be leaving the cgroup.
	for range 50 {
		err = unix.Rmdir(cg.path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", cg.path, err)
}
