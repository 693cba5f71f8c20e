package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

type sockHook struct {
	name   string
	attach ebpf.AttachType
	prog   func(d *Datapath) *ebpf.Program
}

var sockHooks = []sockHook{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(d *Datapath) *ebpf.Program { return d.sock.SockConnect4 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(d *Datapath) *ebpf.Program { return d.sock.SockSendmsg4 }},
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(d *Datapath) *ebpf.Program { return d.sock.SockRecvmsg4 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(d *Datapath) *ebpf.Program { return d.sock.SockGetpeername4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(d *Datapath) *ebpf.Program { return d.sock.SockConnect6 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(d *Datapath) *ebpf.Program { return d.sock.SockSendmsg6 }},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(d *Datapath) *ebpf.Program { return d.sock.SockRecvmsg6 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(d *Datapath) *ebpf.Program { return d.sock.SockGetpeername6 }},
	{"bind4", ebpf.AttachCGroupInet4Bind, func(d *Datapath) *ebpf.Program { return d.sock.SockBind4 }},
	{"bind6", ebpf.AttachCGroupInet6Bind, func(d *Datapath) *ebpf.Program { return d.sock.SockBind6 }},
}

// cgroupID is the inode number of a cgroup v2 directory, which is the id
// the kernel reports for it.
func cgroupID(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("open cgroup %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.IsDir() {
		return 0, fmt.Errorf("cgroup %s is not a cgroup v2 directory", path)
	}
	return st.Ino, nil
}

func (d *Datapath) cgroupLinkPin(hook sockHook, id uint64) string {
	return filepath.Join(d.pinDir, linksDir, fmt.Sprintf("cg_%s_%d", hook.name, id))
}

// AttachCgroup attaches the socket hooks to a cgroup v2 directory (the
// hierarchy root in production, so every process on the host and in its
// containers is covered), or swaps in this load's programs.
func (d *Datapath) AttachCgroup(path string) error {
	id, err := cgroupID(path)
	if err != nil {
		return err
	}
	for _, hook := range sockHooks {
		pin := d.cgroupLinkPin(hook, id)
		prog := hook.prog(d)
		if prog == nil {
			// Not loaded on this kernel (Features says why); a link
			// left by an earlier load on a newer kernel cannot be, as
			// pins do not survive a reboot.
			continue
		}
		adopted, err := d.updatePinnedLink(pin, prog)
		if err != nil {
			return err
		}
		if adopted {
			continue
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: hook.attach, Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", hook.name, path, err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin %s link (needs kernel >= 5.7 for cgroup BPF links): %w", hook.name, err)
		}
		d.holdLink(pin, l)
	}
	return nil
}

// DetachCgroup removes the socket hooks from a cgroup.
func (d *Datapath) DetachCgroup(path string) error {
	id, err := cgroupID(path)
	if err != nil {
		return err
	}
	for _, hook := range sockHooks {
		if _, err := d.unpinLink(d.cgroupLinkPin(hook, id)); err != nil {
			return err
		}
	}
	return nil
}
