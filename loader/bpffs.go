package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultPinDir is where the agent pins its maps and links.
const DefaultPinDir = "/sys/fs/bpf/pontoon"

const bpffsRoot = "/sys/fs/bpf"

// PreparePinDir makes dir (DefaultPinDir when empty) ready to hold pins,
// as Load would, so an agent can lock it before loading anything.
func PreparePinDir(dir string) error {
	if dir == "" {
		dir = DefaultPinDir
	}
	return ensureBPFFS(dir)
}

// ensureBPFFS makes sure dir can hold pins: it must lie on a bpffs. The
// conventional /sys/fs/bpf is mounted when nothing is there yet (as systemd
// does on most distributions); any other place must be mounted by the user.
func ensureBPFFS(dir string) error {
	onBPFFS, err := isOnBPFFS(dir)
	if err != nil {
		return err
	}
	if !onBPFFS {
		if !isWithin(dir, bpffsRoot) {
			return fmt.Errorf("pin directory %s is not on a bpffs: mount one with 'mount -t bpf bpf %s' or choose a directory under %s", dir, filepath.Dir(dir), bpffsRoot)
		}
		if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, err)
		}
	}
	return os.MkdirAll(dir, 0o700)
}

// isOnBPFFS reports whether dir, or its closest existing ancestor, is on a
// bpffs.
func isOnBPFFS(dir string) (bool, error) {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return st.Type == unix.BPF_FS_MAGIC, nil
		}
		if !errors.Is(err, unix.ENOENT) || p == "/" {
			return false, fmt.Errorf("statfs %s: %w", p, err)
		}
	}
}

func isWithin(path, root string) bool {
	return strings.HasPrefix(filepath.Clean(path)+"/", root+"/")
}
