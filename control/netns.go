package control

import (
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// nsID is a namespace's identity: the device and inode of its nsfs file.
// Paths are no identity: /run/netns/NAME, /proc/PID/ns/net and any bind
// mount of them name the same namespace.
type nsID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (id nsID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

func nsIDOf(st *unix.Stat_t) nsID { return nsID{Dev: uint64(st.Dev), Ino: st.Ino} }

// statNetns reads the identity of the namespace a path names.
func statNetns(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return nsIDOf(&st), nil
}

// ownNetns is the namespace this process runs in: the thread group
// leader's, which no goroutine ever moves (only locked threads that die
// with their goroutine enter other namespaces). Read it at start anyway,
// before any of those exist.
func ownNetns() (nsID, error) { return statNetns("/proc/self/ns/net") }

// nsTypes names the namespace kinds NS_GET_NSTYPE reports.
var nsTypes = map[int]string{
	unix.CLONE_NEWNS: "mount", unix.CLONE_NEWUTS: "uts", unix.CLONE_NEWIPC: "ipc",
	unix.CLONE_NEWUSER: "user", unix.CLONE_NEWPID: "pid", unix.CLONE_NEWCGROUP: "cgroup",
	unix.CLONE_NEWTIME: "time",
}

// netnsArg says how a namespace was given, for messages.
func netnsArg(path string, pid int) string {
	if pid > 0 {
		return "the namespace of --pid " + strconv.Itoa(pid)
	}
	return path
}

// openNetns opens a network namespace and returns it with its identity.
// Anything else (a regular file, a directory, another kind of namespace)
// is refused: NS_GET_NSTYPE must say CLONE_NEWNET.
func openNetns(path string) (int, nsID, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nsID{}, kindf(ErrNotFound, "network namespace %s: %v; give an existing one (ip netns add, or --pid of a running process)", path, err)
	}
	if err := checkNetnsFD(fd, path); err != nil {
		unix.Close(fd)
		return -1, nsID{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, nsID{}, fmt.Errorf("stat network namespace %s: %w", path, err)
	}
	return fd, nsIDOf(&st), nil
}

func checkNetnsFD(fd int, path string) error {
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	switch {
	case err != nil:
		// ENOTTY: not a namespace file at all.
		return kindf(ErrInvalid, "%s is not a network namespace; give /run/netns/NAME or /proc/PID/ns/net", path)
	case typ != unix.CLONE_NEWNET:
		kind := nsTypes[typ]
		if kind == "" {
			kind = "0x" + strconv.FormatInt(int64(typ), 16)
		}
		return kindf(ErrInvalid, "%s is a %s namespace, not a network namespace; give /run/netns/NAME or /proc/PID/ns/net", path, kind)
	}
	return nil
}

// CheckNetnsFile refuses a path that exists but is no network namespace,
// with the message the agent gives. The CLI checks --netns with it before
// asking the agent; a path it cannot open is left to the agent, which may
// see another filesystem.
func CheckNetnsFile(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	return checkNetnsFD(fd, path)
}

// refuseHostNetns refuses the agent's own network namespace and the
// host's (that of PID 1): the peer would become eth0 there, with a default
// route via the bridge, and the host would be cut off.
func (a *Agent) refuseHostNetns(id nsID, what string) error {
	if id == a.netns {
		return kindf(ErrInvalid, "%s is the agent's own network namespace: attaching it would give the host an eth0 and a default route via the bridge; give a container's namespace (/run/netns/NAME, or --pid of a process inside it)", what)
	}
	if init, err := statNetns("/proc/1/ns/net"); err == nil && id == init {
		return kindf(ErrInvalid, "%s is the host's network namespace (that of PID 1): attaching it would give the host an eth0 and a default route via the bridge; give a container's namespace (/run/netns/NAME, or --pid of a process inside it)", what)
	}
	return nil
}

// netnsAlive reports whether the namespace the endpoint was attached to is
// still at its path.
func netnsAlive(e *Endpoint) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(e.Netns, &st); err != nil {
		return false
	}
	return st.Ino == e.NetnsInode
}
